//! Many threads at once on one address space: CPUs writing and reading their pages,
//! migrations to both devices and back, evictions and snapshots, for a bounded number
//! of rounds. Every page ends with the last value its owner wrote: zero bytes lost or
//! duplicated, every folio and frame accounted for.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use devpriv_migrate::*;
use devpriv_pte::arch::x86_64::X86_64;

const PAGES: u64 = 1024;
const WRITERS: u64 = 3;
/// Rounds per writer: bounded so that CI stays quick.
const ROUNDS: u64 = 3000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
// Its world has 32 MiB of simulated RAM and 16 MiB of device memory, which Miri takes
// far too long to set up and check; the races are in the Miri run of tests/fault.rs
// (many CPUs on the same pages) and in the loom models.
#[cfg_attr(miri, ignore)]
fn threads_migrate_fault_snapshot_and_evict_at_once() {
    let w = world::<X86_64>(4096, 8192);
    let spaces: &'static AddressSpaces<'static, P<X86_64>, 2> =
        Box::leak(Box::new(AddressSpaces::new()));
    spaces.register(w.space).unwrap();
    w.populate(BASE, 2 * MIB2, true);
    // Each writer owns every WRITERS-th page and remembers what it last wrote.
    let last: Vec<AtomicU64> = (0..PAGES).map(|p| AtomicU64::new(pattern(p, 0))).collect();
    let done = AtomicBool::new(false);
    let writers_done = AtomicU64::new(0);
    let counts: [AtomicU64; 6] = Default::default();
    std::thread::scope(|s| {
        for t in 0..WRITERS {
            let (w, last, counts, writers_done) = (&w, &last, &counts, &writers_done);
            s.spawn(move || {
                let cpu = w.cpu();
                let mut rng = Rng(0x9e37_79b9 + t);
                for round in 0..ROUNDS {
                    let page = (rng.next() % (PAGES / WRITERS)) * WRITERS + t;
                    let va = BASE + page * KIB4;
                    let expect = last[page as usize].load(Ordering::Relaxed);
                    assert_eq!(cpu.read(va).unwrap(), expect, "page {page}");
                    if rng.next().is_multiple_of(2) {
                        let value = (t << 56) | (round << 16) | page;
                        cpu.write(va, value).unwrap();
                        last[page as usize].store(value, Ordering::Relaxed);
                        counts[0].fetch_add(1, Ordering::Relaxed);
                    }
                }
                writers_done.fetch_add(1, Ordering::Release);
            });
        }
        // Migrations to either device and back.
        let (wr, counts_r, done_r) = (&w, &counts, &done);
        s.spawn(move || {
            let mut rng = Rng(77);
            while !done_r.load(Ordering::Relaxed) {
                let first = rng.next() % PAGES;
                let pages = 1 + rng.next() % 64.min(PAGES - first);
                let device = if rng.next().is_multiple_of(2) {
                    wr.device
                } else {
                    wr.other
                };
                let compound = rng.next().is_multiple_of(4);
                let s = wr.to_device(device, BASE + first * KIB4, pages * KIB4, compound);
                counts_r[1].fetch_add(s.migrated, Ordering::Relaxed);
            }
        });
        // Evictions of either pagemap.
        let (we, counts_e, done_e) = (&w, &counts, &done);
        s.spawn(move || {
            let mut n = 0u64;
            while !done_e.load(Ordering::Relaxed) {
                let device = if n.is_multiple_of(2) {
                    we.device
                } else {
                    we.other
                };
                n += 1;
                let pm = device.pagemap();
                let pages = pm.pages() as usize;
                let mut src = vec![MigratePfn::EMPTY; pages];
                let mut dst = vec![MigratePfn::EMPTY; pages];
                let mut m = Migration::evict(
                    we.devices,
                    spaces,
                    we.ram,
                    Evict::pagemap(pm),
                    &mut src,
                    &mut dst,
                )
                .unwrap();
                device.fill_system_destinations(&mut m);
                let s = m.pages().finalize();
                counts_e[2].fetch_add(s.migrated, Ordering::Relaxed);
                counts_e[3].fetch_add(1, Ordering::Relaxed);
            }
        });
        // Snapshots: a device page of the first device is reported as such, a present
        // page with its frame, nothing else.
        let (ws, counts_s, done_s) = (&w, &counts, &done);
        s.spawn(move || {
            let mut pfns: Vec<HmmPfn> = vec![HmmPfn::none(); 64];
            let mut rng = Rng(5);
            while !done_s.load(Ordering::Relaxed) {
                let first = (rng.next() % (PAGES / 64)) * 64;
                let mut range = HmmRange {
                    start: BASE + first * KIB4,
                    end: BASE + (first + 64) * KIB4,
                    pfns: &mut pfns,
                    default_flags: HmmPfn::none(),
                    pfn_flags_mask: HmmPfn::none(),
                    owner: Some(ws.device.owner),
                };
                let mut never = |_: u64, _: bool| false;
                match snapshot(ws.space, &mut range, &mut never) {
                    Ok(()) => {
                        for word in range.pfns.iter() {
                            assert!(!word.is_error());
                        }
                        counts_s[4].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(SnapshotError::Busy(_)) => {
                        counts_s[5].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
        });
        // When the writers are done and every other thread has run, stop the others.
        while writers_done.load(Ordering::Acquire) < WRITERS
            || counts[3].load(Ordering::Relaxed) == 0
            || counts[4].load(Ordering::Relaxed) == 0
            || counts[1].load(Ordering::Relaxed) == 0
        {
            std::thread::yield_now();
        }
        done.store(true, Ordering::Relaxed);
    });
    // Every page holds the last value its owner wrote, wherever it is now.
    w.check_values(&last);
    for device in [w.device, w.other] {
        let pm = device.pagemap();
        let pages = pm.pages() as usize;
        let mut src = vec![MigratePfn::EMPTY; pages];
        let mut dst = vec![MigratePfn::EMPTY; pages];
        let mut m = Migration::evict(
            w.devices,
            spaces,
            w.ram,
            Evict::pagemap(pm),
            &mut src,
            &mut dst,
        )
        .unwrap();
        device.fill_system_destinations(&mut m);
        m.pages().finalize();
        assert_eq!(pm.allocated_pages(), 0);
    }
    w.check_values(&last);
    w.assert_quiescent();
    let c: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    eprintln!(
        "stress: {} writes, {} pages migrated to devices, {} evicted in {} evictions, {} snapshots ({} busy), {} faults",
        c[0],
        c[1],
        c[2],
        c[3],
        c[4],
        c[5],
        w.device.faults.load(Ordering::Relaxed) + w.other.faults.load(Ordering::Relaxed)
    );
    assert!(c[1] > 0 && c[3] > 0 && c[4] > 0, "every kind of thread ran");
}

impl World<X86_64> {
    fn check_values(&self, last: &[AtomicU64]) {
        let cpu = self.cpu();
        for (p, v) in last.iter().enumerate() {
            assert_eq!(
                cpu.read(BASE + p as u64 * KIB4).unwrap(),
                v.load(Ordering::Relaxed),
                "page {p}"
            );
        }
    }
}
