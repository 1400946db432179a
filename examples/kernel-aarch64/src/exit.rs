//! Leaving QEMU with a status through Arm semihosting (`SYS_EXIT`).
//!
//! QEMU must run with `-semihosting-config enable=on,target=native`; without it the
//! `hlt` never returns, so always run QEMU under a timeout.

/// `SYS_EXIT`.
const SYS_EXIT: u32 = 0x18;
/// `ADP_Stopped_ApplicationExit`: the exit carries a status code.
const APPLICATION_EXIT: u64 = 0x2_0026;

/// Exits QEMU with status 0 (`success`) or 1.
pub fn exit(success: bool) -> ! {
    let block: [u64; 2] = [APPLICATION_EXIT, if success { 0 } else { 1 }];
    loop {
        // SAFETY: the semihosting call reads the two-word parameter block and ends the
        // emulation; it touches no other memory.
        unsafe {
            core::arch::asm!(
                "hlt #0xf000",
                in("w0") SYS_EXIT,
                in("x1") block.as_ptr(),
                options(nostack, readonly)
            );
        }
    }
}
