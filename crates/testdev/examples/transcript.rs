//! A readable run of the simulated device: one scenario told step by step (map, fill,
//! device read, migrate, CPU fault, 2 MiB folio, exclusive access, eviction, exit),
//! then the migration throughput sweep with a progress bar.
//!
//! `cargo xtask testdev` runs it (`--full` sweeps up to 256 MiB instead of 16 MiB).

use std::io::Write as _;
use std::sync::atomic::Ordering;

use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{Entry, Level, PageSize, SoftwareEntry, SoftwareKind};
use devpriv_testdev::throughput::{SIZES, configurations, sweep, table};
use devpriv_testdev::*;

type F = X86_64;

const PAGE: u64 = 4096;
const LEN: u64 = 4 << 20;
const HUGE: u64 = 2 << 20;

fn describe(process: &Process<F>, va: u64) -> String {
    let (level, entry) = process.entry(va);
    let size = if level == Level::L2 { "2 MiB" } else { "4 KiB" };
    match entry {
        Entry::Absent => "no entry".into(),
        Entry::Leaf { pfn, .. } => format!("{size} present entry, frame {:#x}", pfn.number()),
        Entry::Software(SoftwareEntry {
            kind: SoftwareKind::DevicePrivate { index, .. },
            ..
        }) => format!(
            "{size} device-private entry, device index {:#x}",
            index.number()
        ),
        Entry::Software(SoftwareEntry {
            kind: SoftwareKind::DeviceExclusive { pfn },
            ..
        }) => format!("{size} device-exclusive entry, frame {:#x}", pfn.number()),
        other => format!("{other:?}"),
    }
}

fn kinds(bytes: &[u8]) -> String {
    let mut runs: Vec<(u8, usize)> = Vec::new();
    for &b in bytes {
        match runs.last_mut() {
            Some((last, n)) if *last == b => *n += 1,
            _ => runs.push((b, 1)),
        }
    }
    runs.iter()
        .map(|(b, n)| format!("{n} x {b:#04x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn scenario() {
    let machine = Machine::<F>::new();
    machine.ram.make_zero_page();
    let process = machine.process();
    let device = machine.device(DeviceConfig {
        owner: 1,
        ..DeviceConfig::default()
    });
    let other = machine.device(DeviceConfig {
        owner: 2,
        ..DeviceConfig::default()
    });
    let mirror = device.open(process);
    println!(
        "machine: {} MiB of RAM, two devices of {} MiB each (owners 1 and 2), x86_64 entries",
        (MachineConfig::default().ram_frames as u64 * PAGE) >> 20,
        (device.pagemap().pages() * PAGE) >> 20
    );

    step(
        1,
        "mmap 4 MiB and populate it with a pattern (1024 pages of RAM)",
    );
    let va = process.mmap(LEN, Prot::ReadWrite);
    process
        .populate(va, LEN, PageSize::Size4KiB, |i| i ^ 0xfeed)
        .then_some(())
        .expect("RAM");
    println!("    buffer at {va:#x}; page 0: {}", describe(process, va));
    println!("    RAM frames in use: {}", machine.ram.live_frames());

    step(
        2,
        "device 1 reads the buffer through its mirror (HMM_DMIRROR_READ)",
    );
    let mut out = vec![0u64; (LEN / 8) as usize];
    let r = mirror.read(va, &mut out).expect("device read");
    let good = out.iter().enumerate().all(|(i, &w)| w == i as u64 ^ 0xfeed);
    println!(
        "    {} pages read, {} fault(s); bytes match: {good}; mirror entries: {}",
        r.cpages,
        r.faults,
        mirror.len()
    );

    step(
        3,
        "migrate the buffer to device 1 (HMM_DMIRROR_MIGRATE_TO_DEV)",
    );
    let r = mirror.migrate_to_device(va, LEN).expect("migration");
    println!(
        "    {} pages moved; device pages in use: {}; RAM frames in use: {}",
        r.cpages,
        device.pagemap().allocated_pages(),
        machine.ram.live_frames()
    );
    println!("    page 0: {}", describe(process, va));
    let snap = mirror.snapshot(va, LEN).expect("snapshot");
    println!("    snapshot: {}", kinds(&snap));

    step(
        4,
        "the CPU reads page 17: a fault, and the driver brings that page back",
    );
    let value = process.read(va + 17 * PAGE).expect("CPU read");
    println!(
        "    read {value:#x} (expected {:#x}); device faults: {}; page 17: {}",
        (17 * 512) ^ 0xfeed,
        device.counters.faults.load(Ordering::Relaxed),
        describe(process, va + 17 * PAGE)
    );

    step(
        5,
        "a 2 MiB page moves as one 2 MiB folio and comes back whole",
    );
    let huge = process.mmap(HUGE, Prot::ReadWrite);
    assert!(process.map_huge(huge, |i| i));
    mirror.migrate_to_device(huge, HUGE).expect("migration");
    println!("    after the migration: {}", describe(process, huge));
    process.read(huge + 300 * PAGE).expect("CPU read");
    println!(
        "    after a CPU touch of page 300: {}",
        describe(process, huge)
    );

    step(
        6,
        "device 2 takes page 0 for atomic access (HMM_DMIRROR_EXCLUSIVE)",
    );
    let other_mirror = other.open(process);
    process.read(va).expect("CPU read");
    other_mirror.exclusive(va, PAGE).expect("exclusive");
    println!("    page 0: {}", describe(process, va));
    process.write(va, 42).expect("CPU write");
    println!(
        "    the CPU writes it: {}; device 2 still exclusive: {}",
        describe(process, va),
        other_mirror.check_exclusive(va, PAGE).is_err()
    );

    step(7, "device 1 evicts its whole pagemap (driver unbind)");
    let moved = device.evict().expect("eviction");
    println!(
        "    {moved} pages back in RAM; device pages in use: {}; mirror entries: {}",
        device.pagemap().allocated_pages(),
        mirror.len()
    );

    step(8, "the process exits");
    process.exit();
    println!(
        "    RAM frames in use: {} (the zero page); device pages in use: {} and {}; MMU \
         violations: {}",
        machine.ram.live_frames(),
        device.pagemap().allocated_pages(),
        other.pagemap().allocated_pages(),
        process.mmu().violations().len()
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--full");
    println!("devpriv-testdev: a simulated dmirror device on devpriv-migrate");
    scenario();
    let sizes: &[u64] = if full { &SIZES } else { &SIZES[..5] };
    let total = configurations(sizes).len();
    println!(
        "\nmigration throughput, {total} configurations (buffers up to {} MiB{})",
        sizes.last().copied().unwrap_or(0) >> 20,
        if full { "" } else { "; --full for 256 MiB" }
    );
    let rows = sweep::<F>(sizes, 3, |done, total| {
        let width = 40;
        let filled = done * width / total;
        eprint!(
            "\r[{}{}] {done}/{total}",
            "#".repeat(filled),
            ".".repeat(width - filled)
        );
        let _ = std::io::stderr().flush();
    });
    eprintln!();
    println!("{}", table(&rows));
}
