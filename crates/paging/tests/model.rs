//! Random sequences of map / map-range / unmap / protect / split / collapse / install and
//! cursor rewrites against a `BTreeMap` model, on both formats, with the tracking
//! allocator (a leak or double free fails) and the software MMU (translation through the
//! TLB, once flushes are applied, always agrees with the model; no break-before-make
//! violation). After every unmap, no table the range lay in is left linked and empty.

use std::collections::BTreeMap;

use devpriv_paging::FlushBatch;
use devpriv_paging::model::{Access, Memory, Mmu, MmuError};
use devpriv_paging::{PageTable, PagingError, PagingFormat, ReplaceError};
use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{
    Entry, LeafAttributes, Level, MemoryType, MigrationAccess, PageProperty, PageSize, Pfn,
    SoftwareEntry, SoftwareKind,
};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The window the operations work in: 16 MiB across a 1 GiB boundary.
const BASE: u64 = GIB - 8 * MIB;
const PAGES: u64 = 4096;
/// Physical addresses are window offsets plus this (aligned to 1 GiB).
const PA_BASE: u64 = 0x40_0000_0000;

#[derive(Clone, Copy, Debug)]
enum Op {
    Map {
        page: u64,
        size: u8,
        attrs: u8,
    },
    MapRange {
        page: u64,
        pages: u64,
        shift: u64,
        attrs: u8,
    },
    Unmap {
        page: u64,
        pages: u64,
    },
    /// One 4 KiB page: `unmap`'s fast path, which may go by a table's live-entry count.
    UnmapPage {
        page: u64,
    },
    /// A 4 KiB leaf (or, `leaf == false`, only the tables down to its slot) written
    /// through `install`, a `&self` path.
    Install {
        page: u64,
        leaf: bool,
    },
    /// Clear every entry wholly inside the range through a cursor (a `&self` path),
    /// which the tables' live-entry counts do not follow.
    Clear {
        page: u64,
        pages: u64,
    },
    Protect {
        page: u64,
        pages: u64,
        attrs: u8,
    },
    Split {
        page: u64,
    },
    Collapse {
        page: u64,
    },
    Access {
        page: u64,
    },
    Budget {
        frames: u64,
    },
    /// Replace present leaves by migration entries through a cursor (splitting blocks
    /// the range cuts).
    Collect {
        page: u64,
        pages: u64,
    },
    /// Replace migration entries by present leaves through a cursor (splitting 2 MiB
    /// migration entries the range cuts).
    Restore {
        page: u64,
        pages: u64,
        attrs: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let page = 0..PAGES;
    prop_oneof![
        3 => (page.clone(), 0..2u8, 0..4u8).prop_map(|(page, size, attrs)| Op::Map { page, size, attrs }),
        3 => (page.clone(), 1..1200u64, prop_oneof![Just(0u64), Just(1), 0..PAGES], 0..4u8)
            .prop_map(|(page, pages, shift, attrs)| Op::MapRange { page, pages, shift, attrs }),
        2 => (page.clone(), 1..1200u64).prop_map(|(page, pages)| Op::Unmap { page, pages }),
        4 => page.clone().prop_map(|page| Op::UnmapPage { page }),
        1 => (page.clone(), any::<bool>()).prop_map(|(page, leaf)| Op::Install { page, leaf }),
        1 => (page.clone(), 1..1200u64).prop_map(|(page, pages)| Op::Clear { page, pages }),
        2 => (page.clone(), 1..1200u64, 0..4u8).prop_map(|(page, pages, attrs)| Op::Protect { page, pages, attrs }),
        2 => page.clone().prop_map(|page| Op::Split { page }),
        2 => page.clone().prop_map(|page| Op::Collapse { page }),
        2 => page.clone().prop_map(|page| Op::Access { page }),
        1 => (0..4u64).prop_map(|frames| Op::Budget { frames }),
        2 => (page.clone(), 1..1200u64).prop_map(|(page, pages)| Op::Collect { page, pages }),
        2 => (page.clone(), 1..1200u64, 0..4u8).prop_map(|(page, pages, attrs)| Op::Restore { page, pages, attrs }),
    ]
}

fn attrs<F: PagingFormat>(choice: u8) -> F::LeafAttributes {
    let p = |writable, executable, memory| PageProperty {
        writable,
        executable,
        accessed: true,
        memory,
        ..PageProperty::default()
    };
    F::LeafAttributes::from_property(match choice {
        0 => p(false, false, MemoryType::WriteBack),
        1 => p(true, false, MemoryType::WriteBack),
        2 => p(false, true, MemoryType::WriteBack),
        _ => p(true, false, MemoryType::Device),
    })
}

/// What each 4 KiB page of the window holds: a present page (pa, attributes), or a
/// migration entry for the frame at pa (attributes `None`).
type Model<A> = BTreeMap<u64, (u64, Option<A>)>;

fn migration<F: PagingFormat>(pfn: Pfn) -> Entry<F> {
    Entry::Software(SoftwareEntry::new(SoftwareKind::Migration {
        access: MigrationAccess::Write,
        pfn,
        young: false,
        dirty: false,
    }))
}

struct Harness<'m, F: PagingFormat> {
    memory: &'m Memory,
    table: PageTable<F, &'m Memory>,
    mmu: Mmu<'m, F>,
    model: Model<F::LeafAttributes>,
}

impl<'m, F: PagingFormat> Harness<'m, F> {
    fn new(memory: &'m Memory, root: Level) -> Self {
        let mut alloc = memory;
        let table = PageTable::new(root, memory, &mut alloc).unwrap();
        let mmu = Mmu::new(memory, table.root(), root);
        Self {
            memory,
            table,
            mmu,
            model: BTreeMap::new(),
        }
    }

    fn clip(page: u64, pages: u64) -> (u64, u64) {
        (page, pages.min(PAGES - page))
    }

    fn apply(&mut self, op: Op) -> Result<(u64, u64), PagingError> {
        let mut alloc = self.memory;
        let va = |page: u64| BASE + page * 4096;
        let touched;
        match op {
            Op::Map {
                page,
                size,
                attrs: a,
            } => {
                let size = if size == 0 {
                    PageSize::Size4KiB
                } else {
                    PageSize::Size2MiB
                };
                let page = page & !(size.frames() - 1);
                let pa = PA_BASE + page * 4096;
                let r = self.table.map(
                    va(page),
                    Pfn::containing(pa),
                    size,
                    attrs::<F>(a),
                    &mut alloc,
                );
                touched = (page, size.frames());
                r?.flush(&self.mmu);
                for i in 0..size.frames() {
                    self.model
                        .insert(page + i, (pa + i * 4096, Some(attrs::<F>(a))));
                }
            }
            Op::MapRange {
                page,
                pages,
                shift,
                attrs: a,
            } => {
                let (page, pages) = Self::clip(page, pages);
                let pa = PA_BASE + ((page + shift) % PAGES) * 4096;
                touched = (page, pages);
                self.table
                    .map_range(va(page), pa, pages * 4096, attrs::<F>(a), &mut alloc)?
                    .flush(&self.mmu);
                for i in 0..pages {
                    self.model
                        .insert(page + i, (pa + i * 4096, Some(attrs::<F>(a))));
                }
            }
            Op::Unmap { page, pages } => {
                let (page, pages) = Self::clip(page, pages);
                touched = (page, pages);
                self.table
                    .unmap(va(page), pages * 4096, &mut alloc, &self.mmu)?
                    .flush(&self.mmu);
                for i in 0..pages {
                    self.model.remove(&(page + i));
                }
            }
            Op::UnmapPage { page } => {
                touched = (page, 1);
                self.table
                    .unmap(va(page), 4096, &mut alloc, &self.mmu)?
                    .flush(&self.mmu);
                self.model.remove(&page);
            }
            Op::Install { page, leaf } => {
                touched = (page, 1);
                let pa = PA_BASE + page * 4096;
                let entry = if leaf {
                    Entry::Leaf {
                        pfn: Pfn::containing(pa),
                        size: PageSize::Size4KiB,
                        attrs: attrs::<F>(1),
                    }
                } else {
                    Entry::Absent
                };
                self.table
                    .install(va(page), Level::L1, &entry, &mut alloc)?
                    .flush(&self.mmu);
                if leaf {
                    self.model.insert(page, (pa, Some(attrs::<F>(1))));
                }
            }
            Op::Clear { page, pages } => {
                let (page, pages) = Self::clip(page, pages);
                touched = (page, pages);
                self.clear(page, pages);
            }
            Op::Protect {
                page,
                pages,
                attrs: a,
            } => {
                let (page, pages) = Self::clip(page, pages);
                touched = (page, pages);
                self.table
                    .protect(va(page), pages * 4096, |_| attrs::<F>(a), &self.mmu)?
                    .flush(&self.mmu);
                for i in 0..pages {
                    if let Some((_, Some(old))) = self.model.get_mut(&(page + i)) {
                        *old = attrs::<F>(a);
                    }
                }
            }
            Op::Split { page } => {
                let start = page & !511;
                touched = (start, 512.min(PAGES - start));
                self.table
                    .split(va(page), &mut alloc, &self.mmu)?
                    .flush(&self.mmu);
            }
            Op::Collapse { page } => {
                let start = page & !511;
                touched = (start, 512.min(PAGES - start));
                self.table
                    .collapse(va(page), Level::L2, &mut alloc, &self.mmu)?
                    .flush(&self.mmu);
            }
            Op::Access { page } => {
                touched = (page, 1);
            }
            Op::Budget { frames } => {
                self.memory.set_budget(Some(frames));
                touched = (0, 0);
            }
            Op::Collect { page, pages } => {
                let (page, pages) = Self::clip(page, pages);
                touched = (page & !511, pages + 1024);
                self.rewrite(page, pages, None);
            }
            Op::Restore {
                page,
                pages,
                attrs: a,
            } => {
                let (page, pages) = Self::clip(page, pages);
                touched = (page & !511, pages + 1024);
                self.rewrite(page, pages, Some(attrs::<F>(a)));
            }
        }
        Ok(touched)
    }

    /// Walks `[page, page + pages)` with a cursor: `to == None` replaces present leaves
    /// by migration entries, `Some(attrs)` replaces migration entries by leaves. Entries
    /// the range only partly covers are split first (a failed split skips the entry).
    fn rewrite(&mut self, page: u64, pages: u64, to: Option<F::LeafAttributes>) {
        let mut alloc = self.memory;
        let start = BASE + page * 4096;
        let end = start + pages * 4096;
        let mut batch = FlushBatch::new();
        let mut cursor = self.table.cursor(start, pages * 4096).unwrap();
        while let Some(mut slot) = cursor.next_slot() {
            let new = match (slot.entry().unwrap(), to) {
                (Entry::Leaf { pfn, .. }, None) => migration::<F>(pfn),
                (
                    Entry::Software(SoftwareEntry {
                        kind: SoftwareKind::Migration { pfn, .. },
                        ..
                    }),
                    Some(attrs),
                ) => Entry::Leaf {
                    pfn,
                    size: slot.level().leaf_size().unwrap(),
                    attrs,
                },
                _ => continue,
            };
            if slot.va() < start || slot.va() + slot.span() > end {
                if let Ok(flush) = cursor.split(&slot, &mut alloc, &self.mmu) {
                    batch.add(flush);
                }
                continue;
            }
            batch.add(slot.replace(&new).unwrap());
            let first = (slot.va() - BASE) / 4096;
            for p in first..first + slot.span() / 4096 {
                let (pa, _) = self.model[&p];
                self.model.insert(p, (pa, to));
            }
        }
        batch.finish(&self.mmu);
    }

    /// Clears, through a cursor, every entry that lies wholly inside `[page, page + pages)`.
    fn clear(&mut self, page: u64, pages: u64) {
        let start = BASE + page * 4096;
        let end = start + pages * 4096;
        let mut batch = FlushBatch::new();
        let mut cursor = self.table.cursor(start, pages * 4096).unwrap();
        while let Some(mut slot) = cursor.next_slot() {
            if slot.raw() == 0 || slot.va() < start || slot.va() + slot.span() > end {
                continue;
            }
            let flush = match slot.replace(&Entry::Absent) {
                Ok(flush) => flush,
                Err(ReplaceError::NeedsBreakBeforeMake) => slot
                    .replace_break_before_make(&Entry::Absent, &self.mmu)
                    .unwrap(),
                Err(e) => panic!("clear {:#x}: {e:?}", slot.va()),
            };
            batch.add(flush);
            let first = (slot.va() - BASE) / 4096;
            for p in first..first + slot.span() / 4096 {
                self.model.remove(&p);
            }
        }
        batch.finish(&self.mmu);
    }

    /// After an unmap of `[page, page + pages)`: every level-1 table the range lay in is
    /// linked only while it maps a page of the model, and every level-2 table only
    /// while it maps a page or links a table (an empty one may stay where `install` or
    /// a cursor left it and no unmap went).
    fn check_freed(&self, page: u64, pages: u64) {
        let last = (page + pages).min(PAGES) - 1;
        for region in page / 512..=last / 512 {
            let va = BASE + region * 512 * 4096;
            let mapped = self
                .model
                .range(region * 512..(region + 1) * 512)
                .next()
                .is_some();
            if matches!(self.table.entry_at(va, Level::L2), Ok(Entry::Table { .. })) {
                assert!(mapped, "empty level-1 table left at {va:#x}");
            }
        }
        for gib in [0, GIB] {
            let (first, end) = if gib == 0 {
                (0, (GIB - BASE) / 4096)
            } else {
                ((GIB - BASE) / 4096, PAGES)
            };
            if last < first || page >= end {
                // The unmap did not reach this level-2 table.
                continue;
            }
            let mapped = self.model.range(first..end).next().is_some()
                || (first / 512..end / 512).any(|region| {
                    let va = BASE + region * 512 * 4096;
                    matches!(self.table.entry_at(va, Level::L2), Ok(Entry::Table { .. }))
                });
            let va = BASE + first * 4096;
            if matches!(self.table.entry_at(va, Level::L3), Ok(Entry::Table { .. })) {
                assert!(
                    mapped,
                    "level-2 table left at {va:#x} with nothing below it"
                );
            }
        }
    }

    /// The table and the MMU agree with the model on `pages` pages from `page`.
    fn check(&self, page: u64, pages: u64) {
        for p in page..(page + pages).min(PAGES) {
            let va = BASE + p * 4096 + 0x123;
            let state = self.model.get(&p).copied();
            if let Some((pa, None)) = state {
                let (level, entry) = self.table.lookup(va).unwrap();
                let first = Pfn::containing(pa & !(level.entry_span() - 1));
                assert_eq!(entry, migration::<F>(first), "lookup {va:#x}");
            }
            let expected = state.and_then(|(pa, a)| Some((pa, a?)));
            let t = self.table.translate(va);
            assert_eq!(
                t.map(|t| (t.pa, t.attrs)),
                expected.map(|(pa, a)| (pa + 0x123, a)),
                "translate {va:#x}"
            );
            match (self.mmu.access(va, Access::Read), expected) {
                (Ok(pa), Some((e, _))) => assert_eq!(pa, e + 0x123, "mmu {va:#x}"),
                (Err(MmuError::NotMapped { .. }), None) => {}
                (got, want) => panic!("mmu {va:#x}: {got:x?}, model {want:x?}"),
            }
        }
        self.mmu.assert_clean();
    }

    fn finish(mut self) {
        self.memory.set_budget(None);
        self.check(0, PAGES);
        let mut alloc = self.memory;
        self.table
            .unmap(BASE, PAGES * 4096, &mut alloc, &self.mmu)
            .unwrap()
            .flush(&self.mmu);
        assert_eq!(self.memory.live_frames(), 1, "tables left after unmap");
        self.model.clear();
        self.check(0, PAGES);
        self.table.destroy(&mut alloc);
        assert_eq!(self.memory.live_frames(), 0, "leaked frames");
    }
}

fn run<F: PagingFormat>(root: Level, ops: &[Op]) {
    let memory = Memory::new(256);
    let mut h = Harness::<F>::new(&memory, root);
    for &op in ops {
        let live = memory.live_frames();
        let result = h.apply(op);
        if !matches!(op, Op::Budget { .. }) {
            memory.set_budget(None);
        }
        match result {
            Ok((page, pages)) => {
                h.check(page.saturating_sub(1), pages + 2);
                if matches!(op, Op::Unmap { .. } | Op::UnmapPage { .. }) {
                    h.check_freed(page, pages);
                }
            }
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        PagingError::Occupied { .. }
                            | PagingError::PartialBlock { .. }
                            | PagingError::NotSplittable { .. }
                            | PagingError::NotCollapsible { .. }
                            | PagingError::OutOfFrames
                    ),
                    "{op:?}: unexpected {e:?}"
                );
                assert_eq!(memory.live_frames(), live, "{op:?} failed and leaked");
                // Nothing changed: the whole window still agrees with the model.
                h.check(0, PAGES);
            }
        }
    }
    h.finish();
}

/// Longest operation sequence (half of it for the 5-level and 3-level roots): Miri,
/// which checks the whole window after every operation slowly, runs short ones.
const MAX_OPS: usize = if cfg!(miri) { 4 } else { 32 };

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn x86_64_agrees_with_model(ops in prop::collection::vec(op(), 1..MAX_OPS)) {
        run::<X86_64>(Level::L4, &ops);
    }

    #[test]
    fn x86_64_5_level_agrees_with_model(ops in prop::collection::vec(op(), 1..MAX_OPS / 2)) {
        run::<X86_64>(Level::L5, &ops);
    }

    #[test]
    fn aarch64_agrees_with_model(ops in prop::collection::vec(op(), 1..MAX_OPS)) {
        run::<Aarch64>(Level::L4, &ops);
    }

    #[test]
    fn aarch64_3_level_agrees_with_model(ops in prop::collection::vec(op(), 1..MAX_OPS / 2)) {
        run::<Aarch64>(Level::L3, &ops);
    }
}

/// `PROPTEST_CASES` if set (Miri runs a handful), else 48.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}
