//! The entry point. QEMU's `-M virt` loads the ELF and starts `_start` at EL1 with the
//! MMU off (`x0` = 0 for an ELF boot; the device tree is at the start of RAM).
//!
//! Before any Rust runs: FP/SIMD access is enabled (the compiler uses SIMD registers
//! even for plain copies), `.bss` is zeroed, the stack is set and `VBAR_EL1` points at
//! the exception vectors (`traps.rs`). Rust then builds the devpriv page tables and
//! turns the MMU on (`mmu.rs`).

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    mov x1, #(3 << 20)              /* CPACR_EL1.FPEN = 0b11: no FP/SIMD traps */
    msr cpacr_el1, x1
    isb

    adrp x1, __bss_start            /* zero .bss, 16 bytes at a time */
    add x1, x1, :lo12:__bss_start
    adrp x2, __bss_end
    add x2, x2, :lo12:__bss_end
1:  cmp x1, x2
    b.hs 2f
    stp xzr, xzr, [x1], #16
    b 1b
2:
    adrp x1, boot_stack_top
    add x1, x1, :lo12:boot_stack_top
    mov sp, x1

    adrp x1, exception_vectors
    add x1, x1, :lo12:exception_vectors
    msr vbar_el1, x1
    isb

    bl kernel_main                  /* x0: device-tree address from the loader */
3:  wfe
    b 3b

    .section .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_stack_guard
boot_stack_guard:                   /* left unmapped: a stack overflow faults here */
    .skip 4096
boot_stack:
    .skip 128 * 1024
    .global boot_stack_top
boot_stack_top:
    "#
);
