//! Threads racing compare-exchange on the same entries through cursors, while another
//! thread splits blocks and another changes permissions: every page is collected exactly
//! once and ends up as the migration entry of its own frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use devpriv_paging::model::Memory;
use devpriv_paging::{NoInvalidate, PageTable, PagingFormat, ReplaceError};
use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{
    Entry, LeafAttributes, Level, MigrationAccess, PageProperty, PageSize, Pfn, SoftwareEntry,
    SoftwareKind,
};

const MIB: u64 = 1 << 20;
/// 4 MiB of 4 KiB pages, then 4 MiB of 2 MiB blocks.
const LEN: u64 = 8 * MIB;
const PA: u64 = 0x1_0000_0000;
/// Rounds of each race: one under Miri, which checks the one round for data races and
/// interleaves it by its own scheduler (a round takes minutes there).
const ROUNDS: u64 = if cfg!(miri) { 1 } else { 8 };

fn migration<F: PagingFormat>(pfn: Pfn) -> Entry<F> {
    Entry::Software(SoftwareEntry::new(SoftwareKind::Migration {
        access: MigrationAccess::Write,
        pfn,
        young: false,
        dirty: false,
    }))
}

fn stress<F: PagingFormat>(root: Level)
where
    F::LeafAttributes: Sync,
{
    for round in 0..ROUNDS {
        let memory = Memory::new(64);
        let mut alloc = &memory;
        let mut table = PageTable::<F, _>::new(root, &memory, &mut alloc).unwrap();
        let rw = F::LeafAttributes::from_property(PageProperty {
            writable: true,
            ..PageProperty::default()
        });
        let ro = F::LeafAttributes::from_property(PageProperty::default());
        table
            .map_range_with_max(0, PA, 4 * MIB, rw, PageSize::Size4KiB, &mut alloc)
            .unwrap()
            .ignore();
        table
            .map_range(4 * MIB, PA + 4 * MIB, 4 * MIB, rw, &mut alloc)
            .unwrap()
            .ignore();
        let collected = AtomicU64::new(0);
        thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let mut cursor = table.cursor(0, LEN).unwrap();
                    while let Some(mut slot) = cursor.next_slot() {
                        let Ok(Entry::Leaf { pfn, .. }) = slot.entry() else {
                            continue;
                        };
                        loop {
                            match slot.replace(&migration::<F>(pfn)) {
                                Ok(flush) => {
                                    flush.ignore();
                                    collected.fetch_add(slot.span() >> 12, Ordering::Relaxed);
                                    break;
                                }
                                // protect changed it: collect if still this page.
                                Err(ReplaceError::Raced { current }) => {
                                    match F::decode(current, slot.level()) {
                                        Ok(Entry::Leaf { pfn: now, .. }) if now == pfn => {}
                                        // Split under us: visit the new pages.
                                        Ok(Entry::Table { .. }) => {
                                            cursor.rewind(&slot);
                                            break;
                                        }
                                        _ => break,
                                    }
                                }
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                    }
                });
            }
            s.spawn(|| {
                let mut alloc = &memory;
                for block in [4 * MIB, 6 * MIB] {
                    // May find the block already collected (then it splits the
                    // migration entry) or lose a race: both are fine.
                    let _ = table.split(block + round * 0x1000, &mut alloc, &NoInvalidate);
                }
            });
            s.spawn(|| {
                table
                    .protect(0, 4 * MIB, |_| ro, &NoInvalidate)
                    .map(|f| f.ignore())
                    .ok();
            });
        });
        assert_eq!(
            collected.load(Ordering::Relaxed),
            LEN >> 12,
            "round {round}"
        );
        for page in 0..(LEN >> 12) {
            let va = page << 12;
            let (level, entry) = table.lookup(va).unwrap();
            let span_pages = level.entry_span() >> 12;
            let first = Pfn::containing(PA + (va & !(level.entry_span() - 1)));
            assert_eq!(entry, migration::<F>(first), "page {page:#x}");
            assert!(span_pages == 1 || span_pages == 512);
        }
        table
            .unmap(0, LEN, &mut alloc, &NoInvalidate)
            .unwrap()
            .ignore();
        table.destroy(&mut alloc);
        assert_eq!(memory.live_frames(), 0);
    }
}

#[test]
fn racing_cursors_x86_64() {
    stress::<X86_64>(Level::L4);
}

#[test]
fn racing_cursors_aarch64() {
    stress::<Aarch64>(Level::L3);
}

/// protect's compare-exchange keeps the dirty bits the "hardware" sets meanwhile.
#[test]
fn protect_keeps_hardware_dirty_bits() {
    use devpriv_paging::model::Mmu;
    use devpriv_pte::arch::x86_64::PageAttributes;
    for _ in 0..ROUNDS {
        let memory = Memory::new(16);
        let mut alloc = &memory;
        let mut table = PageTable::<X86_64, _>::new(Level::L4, &memory, &mut alloc).unwrap();
        let rw = PageAttributes::from_property(PageProperty {
            writable: true,
            ..PageProperty::default()
        });
        table
            .map_range_with_max(0, PA, 2 * MIB, rw, PageSize::Size4KiB, &mut alloc)
            .unwrap()
            .ignore();
        let mmu = Mmu::<X86_64>::new(&memory, table.root(), Level::L4);
        let slots: Vec<_> = (0..512u64)
            .map(|p| mmu.walk(p << 12).unwrap().slot)
            .collect();
        let dirtied = thread::scope(|s| {
            let hardware = s.spawn(|| {
                // Hardware: set D on every present writable leaf.
                slots
                    .iter()
                    .map(|&(frame, index)| {
                        memory
                            .update(frame, index, |raw| {
                                (raw & 0b11 == 0b11).then_some(raw | 0x40)
                            })
                            .is_some()
                    })
                    .collect::<Vec<bool>>()
            });
            s.spawn(|| {
                table
                    .protect(0, 2 * MIB, |a| a.with_writable(false), &NoInvalidate)
                    .unwrap()
                    .ignore();
            });
            hardware.join().unwrap()
        });
        for (page, &(frame, index)) in slots.iter().enumerate() {
            let raw = memory.read(frame, index).unwrap();
            assert_eq!(raw & 0x2, 0, "page {page} still writable");
            if dirtied[page] {
                assert_ne!(raw & 0x40, 0, "page {page} lost its dirty bit");
            }
        }
        table.destroy(&mut alloc);
    }
}

/// Threads install entries through a path that has no tables yet: on each slot exactly
/// one thread wins, the others see the slot taken (`Occupied` or `Raced`), the tables
/// they race to create exist once, and every frame a loser took is given back.
fn racing_installs<F: PagingFormat>(root: Level) {
    use devpriv_paging::PagingError;
    use devpriv_pte::{DeviceAccess, DeviceIndex};
    let device_private = |index: u64| -> Entry<F> {
        Entry::Software(SoftwareEntry::new(SoftwareKind::DevicePrivate {
            access: DeviceAccess::Write,
            index: DeviceIndex::new(index),
        }))
    };
    const THREADS: u64 = 4;
    const VA: u64 = 0x40_0000_3000;
    for round in 0..ROUNDS * 8 {
        let memory = Memory::new(64);
        let mut alloc = &memory;
        let table = PageTable::<F, _>::new(root, &memory, &mut alloc).unwrap();
        let start = std::sync::Barrier::new(THREADS as usize);
        // (thread, its install at the shared slot, its install at its own slot)
        type Outcome = (u64, Result<(), PagingError>, Result<(), PagingError>);
        let results: Vec<Outcome> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|i| {
                    let table = &table;
                    let memory = &memory;
                    let start = &start;
                    s.spawn(move || {
                        let mut alloc = memory;
                        start.wait();
                        // Everyone wants the same slot; each also has its own
                        // neighbour in the same (new) level-1 table.
                        let shared = table
                            .install(VA, Level::L1, &device_private(i), &mut alloc)
                            .map(|f| f.ignore());
                        let own = table
                            .install(
                                VA + (i + 1) * 0x1000,
                                Level::L1,
                                &device_private(100 + i),
                                &mut alloc,
                            )
                            .map(|f| f.ignore());
                        (i, shared, own)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<u64> = results
            .iter()
            .filter(|(_, shared, _)| shared.is_ok())
            .map(|&(i, _, _)| i)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for (i, shared, own) in &results {
            assert_eq!(*own, Ok(()), "round {round}: thread {i}");
            if let Err(e) = shared {
                assert!(
                    matches!(
                        e,
                        PagingError::Occupied {
                            level: Level::L1,
                            ..
                        } | PagingError::Raced { .. }
                    ),
                    "round {round}: thread {i}: {e:?}"
                );
            }
            assert_eq!(
                table.lookup(VA + (i + 1) * 0x1000),
                Ok((Level::L1, device_private(100 + i)))
            );
        }
        assert_eq!(
            table.lookup(VA),
            Ok((Level::L1, device_private(winners[0])))
        );
        // The root and one table per level below it: the losers' frames went back.
        assert_eq!(
            memory.live_frames(),
            root.number() as usize,
            "round {round}"
        );
        table.destroy(&mut alloc);
        assert_eq!(memory.live_frames(), 0);
    }
}

#[test]
fn racing_installs_x86_64() {
    racing_installs::<X86_64>(Level::L4);
}

#[test]
fn racing_installs_aarch64() {
    racing_installs::<Aarch64>(Level::L3);
}

/// While an aarch64 split replaces a 2 MiB block break-before-make (held here in the
/// middle by a slow invalidator), another CPU's `translate` and `lookup` of the block
/// wait for the new table instead of reporting the block absent.
#[test]
fn the_break_before_make_window_is_busy_not_absent() {
    use std::sync::Barrier;
    use std::time::Duration;
    struct Slow<'b>(&'b Barrier);
    impl devpriv_paging::TlbInvalidate for Slow<'_> {
        fn invalidate_page(&self, _va: u64) {
            // The entry is being changed now: let the reader look, and take our time.
            self.0.wait();
            thread::sleep(Duration::from_millis(50));
        }
        fn invalidate_all(&self) {}
    }
    let memory = Memory::new(16);
    let mut alloc = &memory;
    let mut table = PageTable::<Aarch64, _>::new(Level::L3, &memory, &mut alloc).unwrap();
    let rw = devpriv_pte::arch::aarch64::PageAttributes::from_property(PageProperty {
        writable: true,
        accessed: true,
        ..PageProperty::default()
    });
    table
        .map(2 * MIB, Pfn::new(0x400), PageSize::Size2MiB, rw, &mut alloc)
        .unwrap()
        .ignore();
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            let mut frames = &memory;
            table
                .split(2 * MIB, &mut frames, &Slow(&barrier))
                .unwrap()
                .ignore();
        });
        barrier.wait();
        let seen = table.translate(2 * MIB + 0x5000).map(|t| (t.pa, t.size));
        assert_eq!(
            seen,
            Some((0x40_5000, PageSize::Size4KiB)),
            "a walker saw the block absent (or the old block) mid-split"
        );
        assert!(matches!(
            table.lookup(2 * MIB),
            Ok((Level::L1, devpriv_pte::Entry::Leaf { .. }))
        ));
    });
    let mut alloc = &memory;
    table.destroy(&mut alloc);
}
