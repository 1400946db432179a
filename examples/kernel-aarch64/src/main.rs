//! The devpriv example kernel for aarch64, QEMU `-M virt` at EL1.
//!
//! `boot.rs` enables FP, zeroes `.bss`, sets the stack and the vector base; `traps.rs`
//! holds the exception vectors; `mmu.rs` builds the kernel's own page table with devpriv
//! and turns the MMU on; `fault.rs` turns data and instruction aborts into calls to the
//! demo's fault handler. Everything else is the architecture-neutral demo in
//! `examples/demo`.
#![no_std]
#![no_main]
#![deny(
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

mod boot;
mod console;
mod exit;
mod fault;
mod mmu;
mod platform;
mod traps;

use core::fmt::Write;
use core::panic::PanicInfo;

use aarch64_cpu::registers::{CurrentEL, Readable};
use devpriv_demo::stack::StackStorage;
use devpriv_demo::{BumpFrames, Demo, DeviceResolver, TryCell};

use console::Pl011;
use platform::Aarch64Platform;

/// The demo state, shared between `kernel_main` and the abort handler.
type KernelDemo = Demo<Aarch64Platform, BumpFrames, DeviceResolver<'static>>;

/// Where QEMU `-M virt` puts the device tree for an ELF linked at 0x4020_0000.
const DTB_ADDRESS: u64 = 0x4000_0000;

/// The demo state the abort handler borrows.
static DEMO: TryCell<KernelDemo> = TryCell::new();

/// The devpriv stack: device pagemap, workload address space, registry.
static STACK: StackStorage<Aarch64Platform> = StackStorage::new();

/// The Rust entry point, called by `_start` with the MMU off, FP enabled and the
/// vectors installed; `dtb` is what the loader left in `x0`.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(dtb: u64) -> ! {
    let el = CurrentEL.get() >> 2;
    let _ = writeln!(
        Pl011,
        "devpriv-kernel aarch64: running at EL{el} (x0={dtb:#x}), vectors installed"
    );
    // SAFETY: with the MMU off, RAM is reachable at its physical address; QEMU put the
    // device tree at the start of RAM (we are linked 2 MiB above it), and the kernel
    // image does not overlap it.
    let dtb_magic = unsafe { (DTB_ADDRESS as *const u32).read_volatile() };
    let _ = writeln!(
        Pl011,
        "devpriv-kernel aarch64: device tree at {DTB_ADDRESS:#x} (magic {:#x}{})",
        u32::from_be(dtb_magic),
        if u32::from_be(dtb_magic) == 0xd00d_feed {
            ", valid"
        } else {
            ", not found"
        }
    );
    let mut frames = devpriv_demo::kernel::frame_pool();
    let tables = mmu::init(&mut frames);
    let passed = devpriv_demo::kernel::start(&DEMO, &STACK, Aarch64Platform, tables, frames);
    #[cfg(feature = "unexpected-fault-selftest")]
    {
        let _ = writeln!(Pl011, "selftest: reading an unmapped address");
        // SAFETY: nothing is mapped there; the read faults and the handler, finding no
        // expectation armed, reports it and exits with the failure status.
        let _ = unsafe { (0x40_1000_0000 as *const u64).read_volatile() };
    }
    exit::exit(passed)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let _ = writeln!(Pl011, "devpriv-kernel: panic: {info}");
    exit::exit(false)
}
