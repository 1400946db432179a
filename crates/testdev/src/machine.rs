//! The simulated computer: page-table memory, system RAM, device memory and the
//! registry of address spaces, shared by every process and device of a test.

use std::sync::atomic::{AtomicU32, Ordering};

use devpriv_migrate::model::{ModelPlatform, SystemRam};
use devpriv_migrate::{AddressSpaces, DeviceMemory};
use devpriv_paging::PagingFormat;
use devpriv_paging::model::Memory;

use crate::device::{DeviceConfig, Dmirror};
use crate::leak;
use crate::process::Process;

/// The platform every test address space runs on: the software MMU of devpriv-paging
/// and [`SystemRam`].
pub type Platform<F> = ModelPlatform<'static, F>;

/// How many address spaces a machine holds at most.
pub const MAX_PROCESSES: usize = 64;

/// How big a machine is.
#[derive(Clone, Copy, Debug)]
pub struct MachineConfig {
    /// 4 KiB frames of system RAM.
    pub ram_frames: usize,
    /// 4 KiB frames for page tables.
    pub table_frames: usize,
}

impl Default for MachineConfig {
    /// 64 MiB of RAM and 2048 table frames: room for every scenario.
    fn default() -> Self {
        Self {
            ram_frames: 16384,
            table_frames: 2048,
        }
    }
}

/// One simulated computer. Everything in it lives for the rest of the test (`'static`),
/// as a kernel's memory does; tests check at the end that every page, frame and folio
/// came back.
pub struct Machine<F: PagingFormat + 'static> {
    /// Page-table frames (the software MMU's memory).
    pub memory: &'static Memory,
    /// System RAM.
    pub ram: &'static SystemRam,
    /// Device memory: the device-private space and the drivers of its pagemaps.
    pub devices: &'static DeviceMemory<'static, Platform<F>>,
    /// The address spaces, by identifier (what eviction finds pages through).
    pub spaces: &'static AddressSpaces<'static, Platform<F>, MAX_PROCESSES>,
    next_id: AtomicU32,
}

impl<F: PagingFormat> Machine<F> {
    /// A machine of the default size.
    pub fn new() -> &'static Self {
        Self::with(MachineConfig::default())
    }

    /// A machine of `config`'s size.
    pub fn with(config: MachineConfig) -> &'static Self {
        leak(Self {
            memory: leak(Memory::new(config.table_frames)),
            ram: leak(SystemRam::new(config.ram_frames)),
            devices: leak(DeviceMemory::new()),
            spaces: leak(AddressSpaces::new()),
            next_id: AtomicU32::new(1),
        })
    }

    /// A new process (an empty address space).
    pub fn process(&'static self) -> &'static Process<F> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Process::new(self, id)
    }

    /// A new device with its own memory and owner (Linux's `dmirror` device).
    pub fn device(&'static self, config: DeviceConfig) -> &'static Dmirror<F> {
        Dmirror::new(self, config)
    }

    /// RAM frames in use.
    pub fn ram_in_use(&self) -> usize {
        self.ram.live_frames()
    }
}
