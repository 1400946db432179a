//! The console: the 16550 UART COM1 at I/O port 0x3f8.

use core::fmt;

use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

/// The COM1 serial port. Stateless: every value drives the same UART.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl Serial {
    /// Programs 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init() {
        let setup: [(u16, u8); 7] = [
            (1, 0x00), // no interrupts
            (3, 0x80), // DLAB on
            (0, 0x01), // divisor 1: 115200 baud
            (1, 0x00),
            (3, 0x03), // 8 bits, no parity, one stop bit, DLAB off
            (2, 0xc7), // FIFOs on and cleared
            (4, 0x03), // DTR, RTS
        ];
        for (offset, value) in setup {
            // SAFETY: COM1's registers are I/O ports with no memory side effects.
            unsafe { Port::new(COM1 + offset).write(value) };
        }
    }

    fn write_byte(self, byte: u8) {
        let mut line_status: Port<u8> = Port::new(COM1 + 5);
        let mut data: Port<u8> = Port::new(COM1);
        // SAFETY: reading COM1's line status and writing its data register only moves
        // bytes out of the UART.
        unsafe {
            while line_status.read() & 0x20 == 0 {}
            data.write(byte);
        }
    }
}

impl fmt::Write for Serial {
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
