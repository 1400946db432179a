//! Exception entry: the vector table, a common path that saves every register into a
//! [`TrapFrame`] and calls [`trap_dispatch`], and the decoding of synchronous aborts.
//!
//! Each of the 16 vector slots saves `x0`/`x1`, puts its slot number in `x0` and
//! branches to `trap_common`, which saves the rest with `ELR_EL1` and `SPSR_EL1` — and
//! the SIMD registers, which compiled Rust uses for plain copies — calls
//! Rust, restores them (the handler may change `elr` to skip an instruction) and `eret`s
//! — for an abort that re-executes the faulting instruction.

use core::arch::global_asm;
use core::fmt::Write;

use aarch64_cpu::registers::{ESR_EL1, FAR_EL1, Readable};

use crate::console::Pl011;

/// The registers saved on exception entry.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    /// x0 to x30.
    pub x: [u64; 31],
    /// The return address (`ELR_EL1`): the faulting instruction for an abort.
    pub elr: u64,
    /// The saved processor state (`SPSR_EL1`).
    pub spsr: u64,
    /// Padding that keeps the SIMD registers 16-byte aligned.
    pub pad: u64,
    /// q0 to q31: the compiler uses SIMD registers in ordinary code (copies,
    /// comparisons), so a handler written in Rust clobbers them; they are part of the
    /// interrupted context.
    pub q: [u128; 32],
    /// The floating-point control register.
    pub fpcr: u64,
    /// The floating-point status register.
    pub fpsr: u64,
}

global_asm!(
    r#"
    .macro VECTOR slot
    .balign 0x80
    sub sp, sp, #800
    stp x0, x1, [sp, #0]
    mov x0, #\slot
    b trap_common
    .endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global exception_vectors
exception_vectors:
    .irp slot, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    VECTOR \slot
    .endr

trap_common:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    mrs x2, elr_el1
    mrs x3, spsr_el1
    stp x30, x2, [sp, #240]
    str x3, [sp, #256]
    add x4, sp, #272
    stp q0, q1, [x4, #0]
    stp q2, q3, [x4, #32]
    stp q4, q5, [x4, #64]
    stp q6, q7, [x4, #96]
    stp q8, q9, [x4, #128]
    stp q10, q11, [x4, #160]
    stp q12, q13, [x4, #192]
    stp q14, q15, [x4, #224]
    stp q16, q17, [x4, #256]
    stp q18, q19, [x4, #288]
    stp q20, q21, [x4, #320]
    stp q22, q23, [x4, #352]
    stp q24, q25, [x4, #384]
    stp q26, q27, [x4, #416]
    stp q28, q29, [x4, #448]
    stp q30, q31, [x4, #480]
    mrs x5, fpcr
    mrs x6, fpsr
    str x5, [x4, #512]
    str x6, [x4, #520]
    mov x1, sp
    bl trap_dispatch
    add x4, sp, #272
    ldr x5, [x4, #512]
    ldr x6, [x4, #520]
    msr fpcr, x5
    msr fpsr, x6
    ldp q0, q1, [x4, #0]
    ldp q2, q3, [x4, #32]
    ldp q4, q5, [x4, #64]
    ldp q6, q7, [x4, #96]
    ldp q8, q9, [x4, #128]
    ldp q10, q11, [x4, #160]
    ldp q12, q13, [x4, #192]
    ldp q14, q15, [x4, #224]
    ldp q16, q17, [x4, #256]
    ldp q18, q19, [x4, #288]
    ldp q20, q21, [x4, #320]
    ldp q22, q23, [x4, #352]
    ldp q24, q25, [x4, #384]
    ldp q26, q27, [x4, #416]
    ldp q28, q29, [x4, #448]
    ldp q30, q31, [x4, #480]
    ldr x3, [sp, #256]
    ldp x30, x2, [sp, #240]
    msr elr_el1, x2
    msr spsr_el1, x3
    ldp x28, x29, [sp, #224]
    ldp x26, x27, [sp, #208]
    ldp x24, x25, [sp, #192]
    ldp x22, x23, [sp, #176]
    ldp x20, x21, [sp, #160]
    ldp x18, x19, [sp, #144]
    ldp x16, x17, [sp, #128]
    ldp x14, x15, [sp, #112]
    ldp x12, x13, [sp, #96]
    ldp x10, x11, [sp, #80]
    ldp x8, x9, [sp, #64]
    ldp x6, x7, [sp, #48]
    ldp x4, x5, [sp, #32]
    ldp x2, x3, [sp, #16]
    ldp x0, x1, [sp, #0]
    add sp, sp, #800
    eret
    "#
);

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 800);
const _: () = assert!(core::mem::offset_of!(TrapFrame, q) == 272);

/// Vector slot of a synchronous exception from the current EL using `SP_ELx`.
const SYNC_CURRENT_EL_SPX: u64 = 4;

/// Exception class: instruction abort without a change of exception level.
pub const EC_INSTRUCTION_ABORT: u64 = 0x21;
/// Exception class: data abort without a change of exception level.
pub const EC_DATA_ABORT: u64 = 0x25;

/// Called by `trap_common` with the vector slot and the saved registers; returning
/// resumes at `frame.elr`.
#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(slot: u64, frame: &mut TrapFrame) {
    let esr = ESR_EL1.get();
    let far = FAR_EL1.get();
    let class = (esr >> 26) & 0x3f;
    if slot == SYNC_CURRENT_EL_SPX && (class == EC_DATA_ABORT || class == EC_INSTRUCTION_ABORT) {
        crate::fault::abort(frame, esr, far);
        return;
    }
    let _ = writeln!(
        Pl011,
        "devpriv-kernel: unexpected exception: vector slot {slot}, ESR_EL1={esr:#x} \
         (class {class:#x}), FAR_EL1={far:#x}, ELR_EL1={:#x}",
        frame.elr
    );
    crate::exit::exit(false);
}
