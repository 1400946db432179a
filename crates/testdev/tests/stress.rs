//! Several threads migrate, fault, snapshot, read and evict at random over one buffer
//! (4 KiB and 2 MiB pages, two devices) while a CPU thread rewrites pages and checks
//! them: no byte may be lost or duplicated.
//!
//! It runs for `STRESS_SECS` seconds (default 2, so that CI stays bounded) and prints
//! what each thread did.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use devpriv_paging::PagingFormat;
use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_testdev::*;

/// 4 MiB of 4 KiB pages, then two 2 MiB pages.
const SMALL: u64 = 1024;
const PAGES: u64 = SMALL + 1024;

fn value(page: u64, version: u64, w: u64) -> u64 {
    (page << 40) ^ (version << 12) ^ w ^ 0x0123_0000_0000_0000
}

/// A small xorshift generator per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A random range of 1 to 64 pages, or a whole 2 MiB page.
    fn range(&mut self, va: u64) -> (u64, u64) {
        if self.below(4) == 0 {
            let chunk = self.below(PAGES / 512);
            return (va + chunk * HUGE, HUGE);
        }
        let first = self.below(PAGES);
        let n = (1 + self.below(64)).min(PAGES - first);
        (va + first * PAGE, n * PAGE)
    }
}

#[derive(Default)]
struct Counts {
    writes: AtomicU64,
    checked: AtomicU64,
    to_device: AtomicU64,
    to_system: AtomicU64,
    snapshots: AtomicU64,
    device_reads: AtomicU64,
    exclusive: AtomicU64,
    evictions: AtomicU64,
    evicted_pages: AtomicU64,
}

fn stress<F: PagingFormat>() {
    let seconds: u64 = std::env::var("STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let f = fixture::<F>();
    f.other.set_fault_policy(FaultPolicy::Page);
    let va = f.process.mmap(PAGES * PAGE, Prot::ReadWrite);
    let versions: Vec<AtomicU64> = (0..PAGES).map(|_| AtomicU64::new(0)).collect();
    f.process
        .populate(va, SMALL * PAGE, devpriv_pte::PageSize::Size4KiB, |i| {
            value(i / 512, 0, i % 512)
        });
    for chunk in 0..2 {
        let at = va + SMALL * PAGE + chunk * HUGE;
        let first = SMALL + chunk * 512;
        assert!(
            f.process
                .map_huge(at, |i| value(first + i / 512, 0, i % 512))
        );
    }
    let stop = AtomicBool::new(false);
    let counts = Counts::default();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    std::thread::scope(|s| {
        // The CPU: checks a page against its version, then writes the next version.
        s.spawn(|| {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let cpu = f.process.cpu();
            while !stop.load(Ordering::Relaxed) {
                let p = rng.below(PAGES);
                let v = versions[p as usize].load(Ordering::Relaxed);
                let at = va + p * PAGE;
                for w in [0, 1, 255, 511] {
                    assert_eq!(
                        cpu.read(at + w * 8).unwrap(),
                        value(p, v, w),
                        "page {p} word {w} version {v}"
                    );
                }
                for w in 0..512 {
                    cpu.write(at + w * 8, value(p, v + 1, w)).unwrap();
                }
                versions[p as usize].store(v + 1, Ordering::Relaxed);
                counts.checked.fetch_add(1, Ordering::Relaxed);
                counts.writes.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Each device migrates random ranges to itself and back.
        for (seed, mirror) in [(1u64, f.mirror), (2, f.other_mirror)] {
            let (stop, counts) = (&stop, &counts);
            s.spawn(move || {
                let mut rng = Rng(0x1234_5678 * seed);
                while !stop.load(Ordering::Relaxed) {
                    let (at, len) = rng.range(va);
                    if rng.below(3) == 0 {
                        mirror.migrate_to_system(at, len).unwrap();
                        counts.to_system.fetch_add(1, Ordering::Relaxed);
                    } else {
                        // Pages on the other device, or busy, stay: -ENOENT is fine.
                        let _ = mirror.migrate_to_device(at, len);
                        counts.to_device.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // Snapshots and device reads: every page of the buffer is accessible.
        s.spawn(|| {
            let mut rng = Rng(0xdead_beef);
            while !stop.load(Ordering::Relaxed) {
                let (at, len) = rng.range(va);
                let snap = f.mirror.snapshot(at, len).unwrap();
                assert!(snap.iter().all(|&b| b != PROT_ERROR));
                counts.snapshots.fetch_add(1, Ordering::Relaxed);
                let mut out = vec![0; (len / 8) as usize];
                match f.other_mirror.read(at, &mut out) {
                    Ok(_) | Err(DeviceError::Busy) => {}
                    Err(e) => panic!("device read: {e:?}"),
                }
                counts.device_reads.fetch_add(1, Ordering::Relaxed);
                // Atomic access to a few pages; a CPU touch or a migration ends it.
                if f.mirror.exclusive(at, len.min(4 * PAGE)).is_ok() {
                    counts.exclusive.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // Now and then the first device evicts everything.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if let Ok(n) = f.device.evict() {
                    counts.evicted_pages.fetch_add(n, Ordering::Relaxed);
                }
                counts.evictions.fetch_add(1, Ordering::Relaxed);
            }
        });
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
    });
    // Every page is in exactly one place — RAM or one device — and holds its latest
    // version in every word.
    let mut in_ram = 0;
    let mut on_device = 0;
    for p in 0..PAGES {
        match kind(f.process, va + p * PAGE).1 {
            "leaf" | "exclusive" => in_ram += 1,
            "device" => on_device += 1,
            other => panic!("page {p}: {other}"),
        }
    }
    let (a, b) = f.on_devices();
    assert_eq!(a + b, on_device, "device pages without an entry, or shared");
    let ram_pages = f.machine.ram.live_frames() as u64 - 1; // the zero page
    assert_eq!(ram_pages, in_ram, "RAM frames without an entry, or shared");
    let cpu = f.process.cpu();
    let mut words_checked = 0u64;
    for p in 0..PAGES {
        let v = versions[p as usize].load(Ordering::Relaxed);
        for w in 0..512 {
            assert_eq!(
                cpu.read(va + p * PAGE + w * 8).unwrap(),
                value(p, v, w),
                "page {p} word {w}"
            );
            words_checked += 1;
        }
    }
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "stress ({seconds} s): {} CPU page rewrites checked, {} migrations to devices, {} back, \
         {} snapshots, {} device reads, {} exclusive grants, {} evictions ({} pages), {} device faults; \
         at the end {in_ram} pages in RAM + {on_device} on devices = {} pages, each in one \
         place; {} bytes checked, all holding their page's last version",
        c(&counts.writes),
        c(&counts.to_device),
        c(&counts.to_system),
        c(&counts.snapshots),
        c(&counts.device_reads),
        c(&counts.exclusive),
        c(&counts.evictions),
        c(&counts.evicted_pages),
        c(&f.device.counters.faults) + c(&f.other.counters.faults),
        in_ram + on_device,
        words_checked * 8,
    );
    assert!(c(&counts.checked) > 0 && c(&counts.to_device) > 0);
    f.finish();
}

#[test]
// Runs for STRESS_SECS of wall time over 8 MiB of pages: far beyond Miri.
#[cfg_attr(miri, ignore)]
fn stress_x86_64() {
    stress::<X86_64>();
}

#[test]
// As stress_x86_64.
#[cfg_attr(miri, ignore)]
fn stress_aarch64() {
    stress::<Aarch64>();
}
