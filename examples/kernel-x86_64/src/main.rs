//! The devpriv example kernel for x86_64, booted by PVH.
//!
//! `boot.rs` takes the CPU from the PVH entry (32-bit protected mode) to 64-bit Rust;
//! `traps.rs` installs the exception entry; `mmu.rs` builds the kernel's own page table
//! with devpriv and switches to it; `fault.rs` turns page faults into calls to the
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
mod exit;
mod fault;
mod gdt;
mod mmu;
mod platform;
mod serial;
mod traps;

use core::fmt::Write;
use core::panic::PanicInfo;

use devpriv_demo::stack::StackStorage;
use devpriv_demo::{BumpFrames, Demo, DeviceResolver, TryCell};

use platform::X86Platform;
use serial::Serial;

/// The demo state, shared between `kernel_main` and the page-fault handler.
type KernelDemo = Demo<X86Platform, BumpFrames, DeviceResolver<'static>>;

/// The demo state the page-fault handler borrows.
static DEMO: TryCell<KernelDemo> = TryCell::new();

/// The devpriv stack: device pagemap, workload address space, registry.
static STACK: StackStorage<X86Platform> = StackStorage::new();

/// The Rust entry point, called by the boot trampoline in 64-bit mode on the boot
/// page table, with the physical address of the PVH start-info block.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(start_info: u64) -> ! {
    Serial::init();
    // SAFETY: the loader passes the start-info block's physical address, identity
    // mapped by the boot page table; it is read once, before the switch to our table.
    let info = unsafe { (start_info as *const boot::HvmStartInfo).read() };
    let _ = writeln!(
        Serial,
        "devpriv-kernel x86_64: booted by PVH, start info at {start_info:#x} (magic {:#x}{})",
        info.magic,
        if info.magic == boot::HVM_START_MAGIC {
            ", valid"
        } else {
            ", INVALID"
        }
    );
    gdt::init();
    traps::init();
    let _ = writeln!(
        Serial,
        "traps: GDT+TSS loaded (double faults on their own stack), IDT with 32 exception vectors"
    );
    let mut frames = devpriv_demo::kernel::frame_pool();
    let tables = mmu::init(&mut frames);
    let passed = devpriv_demo::kernel::start(&DEMO, &STACK, X86Platform, tables, frames);
    #[cfg(feature = "unexpected-fault-selftest")]
    {
        let _ = writeln!(Serial, "selftest: reading an unmapped address");
        // SAFETY: nothing is mapped there; the read faults and the handler, finding no
        // expectation armed, reports it and exits with the failure status.
        let _ = unsafe { (0x40_1000_0000 as *const u64).read_volatile() };
    }
    exit::exit(passed)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let _ = writeln!(Serial, "devpriv-kernel: panic: {info}");
    exit::exit(false)
}
