//! The PVH entry: a Xen `PHYS32_ENTRY` ELF note tells QEMU (and Firecracker, Cloud
//! Hypervisor) where to start us in 32-bit protected mode with paging off and `ebx`
//! pointing at the `hvm_start_info`. The trampoline below zeroes `.bss`, builds a boot
//! page table that identity-maps the first 1 GiB with 2 MiB pages, enables PAE, long
//! mode, no-execute and paging, loads a 64-bit GDT and jumps to 64-bit code, which calls
//! [`crate::kernel_main`] with the start-info address.
//!
//! Rust then replaces the boot page table with one built by devpriv (see `mmu.rs`).

use core::arch::global_asm;

/// `hvm_start_info.magic`: the value PVH loaders put in the start-info block.
pub const HVM_START_MAGIC: u32 = 0x336e_c578;

/// The first fields of the PVH `hvm_start_info` block.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HvmStartInfo {
    /// [`HVM_START_MAGIC`].
    pub magic: u32,
    /// Version of the structure.
    pub version: u32,
    /// Flags.
    pub flags: u32,
    /// Number of modules.
    pub nr_modules: u32,
    /// Physical address of the module list.
    pub modlist_paddr: u64,
    /// Physical address of the command line.
    pub cmdline_paddr: u64,
    /// Physical address of the RSDP.
    pub rsdp_paddr: u64,
    /// Physical address of the memory map (version 1 and later).
    pub memmap_paddr: u64,
    /// Entries in the memory map.
    pub memmap_entries: u32,
}

global_asm!(
    r#"
    /* Xen ELF note: name "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY), 32-bit entry. */
    .section .note.Xen, "a"
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .balign 4

    .section .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    mov %ebx, %esi                  /* hvm_start_info, kept in esi */

    mov $__bss_start, %edi          /* zero .bss (boot tables, stacks, statics) */
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    mov $boot_stack_top, %esp

    mov $boot_pdpt, %eax            /* PML4[0] -> PDPT, present + writable */
    or $0x3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax              /* PDPT[0] -> PD */
    or $0x3, %eax
    mov %eax, boot_pdpt
    xor %ecx, %ecx                  /* PD[i] = i * 2 MiB, present + writable + PS */
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, boot_pd(,%ecx,8)
    inc %ecx
    cmp $512, %ecx
    jne 1b

    mov %cr4, %eax                  /* CR4.PAE */
    or $(1 << 5), %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx           /* EFER.LME | EFER.NXE */
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax
    wrmsr
    mov %cr0, %eax                  /* CR0.PG | CR0.PE */
    or $0x80000001, %eax
    mov %eax, %cr0

    lgdt boot_gdt_pointer
    ljmp $0x08, $long_mode_start

    .code64
long_mode_start:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    mov %esi, %edi                  /* zero-extended start-info address: first argument */
    call kernel_main
2:  cli
    hlt
    jmp 2b

    .section .rodata.boot, "a"
    .balign 8
boot_gdt:
    .quad 0                         /* null */
    .quad 0x00af9b000000ffff        /* 0x08: 64-bit code, ring 0, accessed */
    .quad 0x00cf93000000ffff        /* 0x10: data, ring 0, accessed */
boot_gdt_end:
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096
    .balign 4096
    .global boot_stack_guard
boot_stack_guard:                   /* left unmapped: a stack overflow faults here */
    .skip 4096
boot_stack:
    .skip 128 * 1024
    .global boot_stack_top
boot_stack_top:
    "#,
    options(att_syntax)
);
