//! The migration throughput sweep (Linux's `benchmark_thp_migration` in hmm-tests):
//! buffers of several sizes moved to the device and back, with 4 KiB and with 2 MiB
//! folios, with the copy engine copying (memcpy) and with it doing nothing (the
//! migration bookkeeping alone), all in one run on one machine.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use devpriv_migrate::model::RAM_FIRST_PFN;

use devpriv_paging::PagingFormat;
use devpriv_pte::{DeviceIndex, PageSize, Pfn};

use crate::device::{CopyEngine, DeviceConfig};
use crate::machine::{Machine, MachineConfig};
use crate::process::Prot;

/// The buffer sizes of the sweep: 512 KiB to 256 MiB.
pub const SIZES: [u64; 7] = [
    512 << 10,
    1 << 20,
    2 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
    256 << 20,
];

/// One measured configuration.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// Buffer size in bytes.
    pub bytes: u64,
    /// The folio size the buffer moves in.
    pub folio: PageSize,
    /// Whether the copy engine copied.
    pub copy: CopyEngine,
    /// Mean time of one migration to the device.
    pub to_device: Duration,
    /// Mean time of one migration back to system memory.
    pub to_system: Duration,
}

impl Row {
    fn gib_per_s(bytes: u64, t: Duration) -> f64 {
        bytes as f64 / (1u64 << 30) as f64 / t.as_secs_f64()
    }

    /// Throughput to the device, GiB/s.
    pub fn to_device_gib_s(&self) -> f64 {
        Self::gib_per_s(self.bytes, self.to_device)
    }

    /// Throughput back to system memory, GiB/s.
    pub fn to_system_gib_s(&self) -> f64 {
        Self::gib_per_s(self.bytes, self.to_system)
    }
}

/// The configurations `sweep` measures for `sizes`, in order: per size, 4 KiB then
/// 2 MiB folios (2 MiB only for buffers of at least 2 MiB), each with memcpy then
/// with the bookkeeping alone.
pub fn configurations(sizes: &[u64]) -> Vec<(u64, PageSize, CopyEngine)> {
    let mut all = Vec::new();
    for &bytes in sizes {
        for folio in [PageSize::Size4KiB, PageSize::Size2MiB] {
            if bytes < folio.bytes() {
                continue;
            }
            for copy in [CopyEngine::Memcpy, CopyEngine::Skip] {
                all.push((bytes, folio, copy));
            }
        }
    }
    all
}

/// Measures every configuration of `sizes`: one warm-up round trip, then `iterations`
/// timed ones (each direction timed alone, as hmm-tests does). `progress(done, total)`
/// is called after each configuration.
pub fn sweep<F: PagingFormat>(
    sizes: &[u64],
    iterations: u32,
    mut progress: impl FnMut(usize, usize),
) -> Vec<Row> {
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let pages = largest / 4096;
    let machine = Machine::<F>::with(MachineConfig {
        ram_frames: pages as usize + 2048,
        table_frames: 1024,
    });
    // A kernel's page allocator does not scribble over the pages it hands out.
    machine.ram.set_poisoning(false);
    let process = machine.process();
    let copying = machine.device(DeviceConfig {
        owner: 1,
        pages,
        copy: CopyEngine::Memcpy,
    });
    let bookkeeping = machine.device(DeviceConfig {
        owner: 2,
        pages,
        copy: CopyEngine::Skip,
    });
    // Touch all simulated memory once, so that no measurement pays for the host
    // mapping it in on first use.
    for frame in 0..pages + 2048 {
        for word in machine.ram.words(Pfn::new(RAM_FIRST_PFN + frame)) {
            word.store(0, Ordering::Relaxed);
        }
    }
    for device in [copying, bookkeeping] {
        let base = device.pagemap().base().expect("registered").number();
        for page in 0..pages {
            for word in device.page_words(DeviceIndex::new(base + page)) {
                word.store(0, Ordering::Relaxed);
            }
        }
    }
    let (copying, bookkeeping) = (copying.open(process), bookkeeping.open(process));
    let configurations = configurations(sizes);
    let mut rows = Vec::new();
    for (done, &(bytes, folio, copy)) in configurations.iter().enumerate() {
        let mirror = match copy {
            CopyEngine::Memcpy => copying,
            CopyEngine::Skip => bookkeeping,
        };
        let va = process.mmap(bytes, Prot::ReadWrite);
        assert!(
            process.populate(va, bytes, folio, |i| i),
            "RAM for the buffer"
        );
        let mut to_device = Duration::ZERO;
        let mut to_system = Duration::ZERO;
        for round in 0..=iterations {
            let start = Instant::now();
            mirror
                .migrate_to_device(va, bytes)
                .expect("the buffer moves to the device");
            let moved = Instant::now();
            mirror
                .migrate_to_system(va, bytes)
                .expect("the buffer comes back");
            if round > 0 {
                to_device += moved - start;
                to_system += moved.elapsed();
            }
        }
        process.munmap(va, bytes);
        rows.push(Row {
            bytes,
            folio,
            copy,
            to_device: to_device / iterations.max(1),
            to_system: to_system / iterations.max(1),
        });
        progress(done + 1, configurations.len());
    }
    process.exit();
    rows
}

fn size_name(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

fn cell(t: Duration, gib_s: f64) -> String {
    let us = t.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms ({gib_s:.2} GiB/s)", us / 1000.0)
    } else {
        format!("{us:.1} µs ({gib_s:.2} GiB/s)")
    }
}

/// The rows as a Markdown table: one line per buffer size and folio size, the memcpy
/// and bookkeeping-only times side by side.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| buffer | folios | to device, memcpy | back, memcpy | to device, bookkeeping | back, bookkeeping |\n\
         |---|---|---|---|---|---|\n",
    );
    for pair in rows.chunks(2) {
        let [copy, skip] = pair else { continue };
        let folio = match copy.folio {
            PageSize::Size2MiB => "2 MiB",
            _ => "4 KiB",
        };
        out.push_str(&format!(
            "| {} | {folio} | {} | {} | {} | {} |\n",
            size_name(copy.bytes),
            cell(copy.to_device, copy.to_device_gib_s()),
            cell(copy.to_system, copy.to_system_gib_s()),
            cell(skip.to_device, skip.to_device_gib_s()),
            cell(skip.to_system, skip.to_system_gib_s()),
        ));
    }
    out
}
