//! Exception entry: assembly stubs that save every register into a [`TrapFrame`] and
//! call [`trap_dispatch`], an IDT built with the `x86_64` crate's structures, and the
//! dispatch of page faults into the demo.
//!
//! Stable Rust has no `x86-interrupt` ABI, so each of the 32 exception vectors gets a
//! small stub (`global_asm!`) that pushes a dummy error code where the CPU pushes none,
//! then the vector number, then jumps to a common path that pushes the general-purpose
//! registers and calls Rust with a pointer to them. On return it pops everything and
//! `iretq`s, re-executing the faulting instruction.

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::fmt::Write;

use x86_64::VirtAddr;
use x86_64::structures::idt::{Entry, EntryOptions, InterruptDescriptorTable};

use crate::serial::Serial;

/// The registers saved on exception entry, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    /// General-purpose registers, in the reverse of the order the stub pushes them.
    pub r15: u64,
    /// r14.
    pub r14: u64,
    /// r13.
    pub r13: u64,
    /// r12.
    pub r12: u64,
    /// r11.
    pub r11: u64,
    /// r10.
    pub r10: u64,
    /// r9.
    pub r9: u64,
    /// r8.
    pub r8: u64,
    /// rbp.
    pub rbp: u64,
    /// rdi.
    pub rdi: u64,
    /// rsi.
    pub rsi: u64,
    /// rdx.
    pub rdx: u64,
    /// rcx.
    pub rcx: u64,
    /// rbx.
    pub rbx: u64,
    /// rax.
    pub rax: u64,
    /// The exception vector (pushed by the stub).
    pub vector: u64,
    /// The error code (pushed by the CPU, or 0 by the stub).
    pub error_code: u64,
    /// Where the faulting instruction is (`iretq` returns there).
    pub rip: u64,
    /// Code segment.
    pub cs: u64,
    /// Flags.
    pub rflags: u64,
    /// Stack pointer at the time of the exception.
    pub rsp: u64,
    /// Stack segment.
    pub ss: u64,
}

global_asm!(
    r#"
    .macro TRAP_NO_ERROR vector
    .balign 16
trap_stub_\vector:
    push $0
    push $\vector
    jmp trap_common
    .endm

    .macro TRAP_ERROR vector
    .balign 16
trap_stub_\vector:
    push $\vector
    jmp trap_common
    .endm

    .section .text.traps, "ax"
    TRAP_NO_ERROR 0
    TRAP_NO_ERROR 1
    TRAP_NO_ERROR 2
    TRAP_NO_ERROR 3
    TRAP_NO_ERROR 4
    TRAP_NO_ERROR 5
    TRAP_NO_ERROR 6
    TRAP_NO_ERROR 7
    TRAP_ERROR 8
    TRAP_NO_ERROR 9
    TRAP_ERROR 10
    TRAP_ERROR 11
    TRAP_ERROR 12
    TRAP_ERROR 13
    TRAP_ERROR 14
    TRAP_NO_ERROR 15
    TRAP_NO_ERROR 16
    TRAP_ERROR 17
    TRAP_NO_ERROR 18
    TRAP_NO_ERROR 19
    TRAP_NO_ERROR 20
    TRAP_ERROR 21
    TRAP_NO_ERROR 22
    TRAP_NO_ERROR 23
    TRAP_NO_ERROR 24
    TRAP_NO_ERROR 25
    TRAP_NO_ERROR 26
    TRAP_NO_ERROR 27
    TRAP_NO_ERROR 28
    TRAP_ERROR 29
    TRAP_ERROR 30
    TRAP_NO_ERROR 31

    /* The CPU aligned rsp to 16 and pushed 5 words; with the error code and vector
       that is 7 words, plus 15 registers: 22 words, so rsp is 16-byte aligned at the
       call as the ABI wants. */
trap_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call trap_dispatch
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq

    .section .rodata.traps, "a"
    .balign 8
    .global trap_stub_table
trap_stub_table:
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad trap_stub_\vector
    .endr
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    /// The addresses of the 32 exception stubs, by vector.
    static trap_stub_table: [u64; 32];
}

/// The vector of a page fault.
pub const PAGE_FAULT: u64 = 14;

/// The IDT: written once by [`init`] on the boot CPU, then only read by the CPU.
struct Idt(UnsafeCell<InterruptDescriptorTable>);

// SAFETY: the table is written only by `init`, once, before interrupts or exceptions use
// it; afterwards nothing writes it.
unsafe impl Sync for Idt {}

impl Idt {
    fn get(&self) -> *mut InterruptDescriptorTable {
        self.0.get()
    }
}

static IDT: Idt = Idt(UnsafeCell::new(InterruptDescriptorTable::new()));

/// Points every exception vector at its stub and loads the IDT.
pub fn init() {
    // SAFETY: `trap_stub_table` is immutable data emitted by the assembly above.
    let stubs = unsafe { trap_stub_table };
    // SAFETY: called once on the boot CPU before any other code uses the IDT, so this
    // is the only reference to it.
    let idt = unsafe { &mut *IDT.get() };
    macro_rules! install {
        ($($field:ident = $vector:literal),* $(,)?) => {$(
            install(&mut idt.$field, stubs[$vector]);
        )*};
    }
    install!(
        divide_error = 0,
        debug = 1,
        non_maskable_interrupt = 2,
        breakpoint = 3,
        overflow = 4,
        bound_range_exceeded = 5,
        invalid_opcode = 6,
        device_not_available = 7,
        double_fault = 8,
        invalid_tss = 10,
        segment_not_present = 11,
        stack_segment_fault = 12,
        general_protection_fault = 13,
        page_fault = 14,
        x87_floating_point = 16,
        alignment_check = 17,
        machine_check = 18,
        simd_floating_point = 19,
        virtualization = 20,
        cp_protection_exception = 21,
        hv_injection_exception = 28,
        vmm_communication_exception = 29,
        security_exception = 30,
    );
    // SAFETY: IST slot 0 of the TSS `gdt::init` loaded holds a dedicated stack.
    unsafe {
        install(&mut idt.double_fault, stubs[8])
            .set_stack_index(crate::gdt::DOUBLE_FAULT_IST_INDEX);
    }
    // SAFETY: the IDT is a static that lives for the whole run and is not changed
    // after this point.
    unsafe { (*IDT.get()).load_unsafe() };
}

fn install<F>(entry: &mut Entry<F>, stub: u64) -> &mut EntryOptions {
    // SAFETY: `stub` is the address of the assembly stub for this vector, which handles
    // the CPU's frame (with or without error code) for exactly this vector.
    unsafe { entry.set_handler_addr(VirtAddr::new(stub)) }
}

/// Called by `trap_common` with the saved registers; returning resumes at `frame.rip`.
#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    if frame.vector == PAGE_FAULT {
        crate::fault::page_fault(frame);
        return;
    }
    let _ = writeln!(
        Serial,
        "devpriv-kernel: unexpected exception {} ({}) error={:#x} rip={:#x} rsp={:#x}",
        frame.vector,
        exception_name(frame.vector),
        frame.error_code,
        frame.rip,
        frame.rsp
    );
    crate::exit::exit(false);
}

/// The mnemonic of an exception vector.
pub fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        6 => "#UD invalid opcode",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack-segment fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        _ => "exception",
    }
}
