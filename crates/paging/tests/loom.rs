//! Loom models of compare-exchange races on page-table entries.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p devpriv-paging --release --test loom`.
#![cfg(loom)]

use std::ptr::NonNull;
use std::sync::Arc;

use devpriv_paging::{Flush, NoInvalidate, PageTable, PhysMapper, ReplaceError, TableEntries};
use devpriv_pte::arch::aarch64::{Aarch64, PageAttributes};
use devpriv_pte::{
    Entry, LeafAttributes, Level, MigrationAccess, PageProperty, PageSize, Pfn, SoftwareEntry,
    SoftwareKind,
};
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;

/// Two table frames of loom atomics: a level-2 root and one level-1 table.
struct Frames {
    tables: Vec<Box<TableEntries>>,
}

struct Mapper(Arc<Frames>);

// SAFETY: each frame number 1..=2 names its own boxed array, which lives as long as the
// `Arc`; the page table only makes shared references to the atomics.
unsafe impl PhysMapper for Mapper {
    fn table(&self, frame: Pfn) -> NonNull<TableEntries> {
        NonNull::from(&*self.0.tables[frame.number() as usize - 1])
    }
}

fn table() -> Arc<PageTable<Aarch64, Mapper>> {
    use devpriv_pte::PteFormat;
    // Built with the values in place: zeroing 1024 loom atomics would exceed loom's
    // branch budget.
    let root_entry = Aarch64::encode(
        &Entry::Table {
            next: Pfn::new(2),
            attrs: Default::default(),
        },
        Level::L2,
    )
    .unwrap();
    let leaf = Aarch64::encode(
        &Entry::Leaf {
            pfn: Pfn::new(0x10),
            size: PageSize::Size4KiB,
            attrs: rw(),
        },
        Level::L1,
    )
    .unwrap();
    let frame = |first: u64| -> Box<TableEntries> {
        Box::new(core::array::from_fn(|i| {
            AtomicU64::new(if i == 0 { first } else { 0 })
        }))
    };
    let frames = Arc::new(Frames {
        tables: vec![frame(root_entry), frame(leaf)],
    });
    // SAFETY: frame 1 is a level-2 table whose only table entry points to frame 2, both
    // reachable through the mapper for as long as the page table lives.
    let t = unsafe { PageTable::from_root(Pfn::new(1), Level::L2, Mapper(frames)) }.unwrap();
    Arc::new(t)
}

fn rw() -> PageAttributes {
    PageAttributes::from_property(PageProperty {
        writable: true,
        ..PageProperty::default()
    })
}

fn migration(pfn: u64) -> Entry<Aarch64> {
    Entry::Software(SoftwareEntry::new(SoftwareKind::Migration {
        access: MigrationAccess::Write,
        pfn: Pfn::new(pfn),
        young: false,
        dirty: false,
    }))
}

/// Two threads replace the same present entry: exactly one wins, the loser sees the
/// winner's entry.
#[test]
fn racing_replacements_have_one_winner() {
    loom::model(|| {
        let t = table();
        let handles: Vec<_> = (0..2u64)
            .map(|i| {
                let t = t.clone();
                thread::spawn(move || {
                    let mut slot = t.cursor(0, 0x1000).unwrap().next().unwrap();
                    // Only a present page is collected; a migration entry means the
                    // other thread got there first.
                    if !matches!(slot.entry(), Ok(Entry::Leaf { .. })) {
                        return false;
                    }
                    match slot.replace(&migration(0x10 + i)) {
                        Ok(flush) => {
                            flush.ignore();
                            true
                        }
                        Err(ReplaceError::Raced { current }) => {
                            assert!(matches!(Aarch64::decode_raw(current), Entry::Software(_)));
                            false
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&w| w)
            .count();
        assert_eq!(wins, 1);
    });
}

/// protect races with a replacement by a migration entry: protect never resurrects the
/// replaced leaf, and the replacement never loses protect's change silently.
#[test]
fn protect_races_with_replacement() {
    loom::model(|| {
        let t = table();
        let t2 = t.clone();
        let replacer = thread::spawn(move || {
            let mut slot = t2.cursor(0, 0x1000).unwrap().next().unwrap();
            // Retry against whatever protect wrote.
            loop {
                match slot.replace(&migration(0x10)) {
                    Ok(flush) => break flush.ignore(),
                    Err(ReplaceError::Raced { .. }) => continue,
                    Err(e) => panic!("{e:?}"),
                }
            }
        });
        let ro = PageAttributes::from_property(PageProperty::default());
        let flush: Flush = t.protect(0, 0x1000, |_| ro, &NoInvalidate).unwrap();
        flush.ignore();
        replacer.join().unwrap();
        assert_eq!(t.lookup(0).unwrap(), (Level::L1, migration(0x10)));
    });
}

trait DecodeRaw {
    fn decode_raw(raw: u64) -> Entry<Aarch64>;
}

impl DecodeRaw for Aarch64 {
    fn decode_raw(raw: u64) -> Entry<Aarch64> {
        <Aarch64 as devpriv_pte::PteFormat>::decode(raw, Level::L1).unwrap()
    }
}

/// The hardware sets the access flag while protect makes the page read-only: protect's
/// compare-exchange never drops it.
#[test]
fn protect_keeps_the_hardware_access_flag() {
    loom::model(|| {
        let t = table();
        let t2 = t.clone();
        let hardware = thread::spawn(move || {
            let leaf = &t2.mapper().0.tables[1][0];
            let mut raw = leaf.load(Ordering::Acquire);
            loop {
                match leaf.compare_exchange(raw, raw | 1 << 10, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => break,
                    Err(now) => raw = now,
                }
            }
        });
        t.protect(0, 0x1000, |a| a.with_read_only(true), &NoInvalidate)
            .unwrap()
            .ignore();
        hardware.join().unwrap();
        let attrs = t.translate(0).unwrap().attrs;
        assert!(attrs.read_only());
        assert!(attrs.accessed(), "protect lost the access flag");
    });
}
