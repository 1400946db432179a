//! The console: QEMU virt's PL011 UART, data register at 0x0900_0000.

use core::fmt;

/// Physical (and, after the MMU is on, identity-mapped virtual) address of the PL011.
pub const PL011_BASE: u64 = 0x0900_0000;
const DATA: u64 = 0x00;
const FLAGS: u64 = 0x18;
const TX_FULL: u32 = 1 << 5;

/// The PL011 UART. Stateless: every value drives the same device.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pl011;

impl Pl011 {
    fn write_byte(self, byte: u8) {
        let flags = (PL011_BASE + FLAGS) as *const u32;
        let data = (PL011_BASE + DATA) as *mut u32;
        // SAFETY: the PL011's registers are MMIO at a fixed address, mapped as device
        // memory (or reached with the MMU off); volatile accesses only move bytes out.
        unsafe {
            while flags.read_volatile() & TX_FULL != 0 {}
            data.write_volatile(u32::from(byte));
        }
    }
}

impl fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(byte);
        }
        Ok(())
    }
}
