//! Operations one by one, on both formats, through the software MMU; bad input gets a
//! typed error and leaves the table unchanged.

use devpriv_paging::model::{Access, Memory, Mmu, MmuError};
use devpriv_paging::{
    Flush, FlushBatch, FrameAllocator, NoInvalidate, PageTable, PagingError, PagingFormat,
    PhysMapper, ReplaceError, TlbInvalidate, needs_break_before_make,
};
use devpriv_pte::arch::aarch64::{self, Aarch64};
use devpriv_pte::arch::x86_64::{self, X86_64};
use devpriv_pte::{
    DeviceAccess, DeviceIndex, EncodeError, Entry, LeafAttributes, Level, MemoryType,
    MigrationAccess, PageProperty, PageSize, Pfn, SoftwareEntry, SoftwareKind,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn rw<F: PagingFormat>() -> F::LeafAttributes {
    F::LeafAttributes::from_property(PageProperty {
        writable: true,
        accessed: true,
        ..PageProperty::default()
    })
}

fn ro<F: PagingFormat>() -> F::LeafAttributes {
    F::LeafAttributes::from_property(PageProperty {
        accessed: true,
        ..PageProperty::default()
    })
}

fn root_level<F: PagingFormat>() -> Level {
    if F::is_root_level(Level::L5) {
        Level::L4
    } else {
        Level::L3
    }
}

struct World<'m, F: PagingFormat> {
    memory: &'m Memory,
    table: PageTable<F, &'m Memory>,
    mmu: Mmu<'m, F>,
}

fn world<F: PagingFormat>(memory: &Memory) -> World<'_, F> {
    let mut alloc = memory;
    let table = PageTable::<F, _>::new(root_level::<F>(), memory, &mut alloc).unwrap();
    let mmu = Mmu::new(memory, table.root(), table.root_level());
    World { memory, table, mmu }
}

impl<F: PagingFormat> World<'_, F> {
    /// Unmaps `[va, va + len)`, which must succeed, and applies its flush to the MMU.
    fn unmap(&mut self, va: u64, len: u64) {
        let mut alloc = self.memory;
        self.table
            .unmap(va, len, &mut alloc, &self.mmu)
            .unwrap()
            .flush(&self.mmu);
    }

    fn finish(self) {
        self.mmu.assert_clean();
        let mut alloc = self.memory;
        self.table.destroy(&mut alloc);
        assert_eq!(self.memory.live_frames(), 0, "leaked table frames");
    }
}

fn map_translate_unmap<F: PagingFormat>() {
    let memory = Memory::new(64);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    // 4 KiB, 2 MiB and 1 GiB leaves.
    w.table
        .map(
            0x1000,
            Pfn::new(0x42),
            PageSize::Size4KiB,
            rw::<F>(),
            &mut alloc,
        )
        .unwrap()
        .flush(&w.mmu);
    w.table
        .map(
            2 * MIB,
            Pfn::new(0x200),
            PageSize::Size2MiB,
            ro::<F>(),
            &mut alloc,
        )
        .unwrap()
        .flush(&w.mmu);
    w.table
        .map(
            GIB,
            Pfn::new(0x40000),
            PageSize::Size1GiB,
            rw::<F>(),
            &mut alloc,
        )
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(w.mmu.access(0x1abc, Access::Write), Ok(0x42abc));
    assert_eq!(w.mmu.access(2 * MIB + 0x1234, Access::Read), Ok(0x20_1234));
    assert_eq!(
        w.mmu.access(2 * MIB, Access::Write),
        Err(MmuError::ReadOnly)
    );
    assert_eq!(w.mmu.access(GIB + 5, Access::Read), Ok(0x4000_0005));
    let t = w.table.translate(2 * MIB + 0x10).unwrap();
    assert_eq!((t.pa, t.size), (0x20_0010, PageSize::Size2MiB));
    assert_eq!(
        w.table.entry_at(2 * MIB, Level::L2).unwrap(),
        Entry::Leaf {
            pfn: Pfn::new(0x200),
            size: PageSize::Size2MiB,
            attrs: ro::<F>()
        }
    );
    assert!(matches!(
        w.table.entry_at(2 * MIB, Level::L1),
        Err(PagingError::PartialBlock {
            level: Level::L2,
            ..
        })
    ));
    assert!(w.table.translate(0x3000).is_none());
    // Unmap everything, which frees every table but the root.
    let before = memory.live_frames();
    assert!(before > 1);
    w.table
        .unmap(0, 2 * GIB, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(memory.live_frames(), 1);
    assert!(w.mmu.access(0x1abc, Access::Read).is_err());
    assert!(w.mmu.access(GIB, Access::Read).is_err());
    w.finish();
}

#[test]
fn map_translate_unmap_x86_64() {
    map_translate_unmap::<X86_64>();
}

#[test]
fn map_translate_unmap_aarch64() {
    map_translate_unmap::<Aarch64>();
}

fn map_range_uses_largest_sizes<F: PagingFormat>() {
    let memory = Memory::new(64);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    // 4 KiB head, 2 MiB blocks, a 1 GiB block, 2 MiB, 4 KiB tail.
    let va = GIB - 2 * MIB - 0x3000;
    let len = 0x3000 + 2 * MIB + GIB + 2 * MIB + 0x1000;
    let pa = 0x80_0000_0000 + va;
    w.table
        .map_range(va, pa, len, rw::<F>(), &mut alloc)
        .unwrap()
        .flush(&w.mmu);
    let size = |v: u64| w.table.translate(v).unwrap().size;
    assert_eq!(size(va), PageSize::Size4KiB);
    assert_eq!(size(GIB - 2 * MIB), PageSize::Size2MiB);
    assert_eq!(size(GIB + 12345), PageSize::Size1GiB);
    assert_eq!(size(2 * GIB + 5), PageSize::Size2MiB);
    assert_eq!(size(2 * GIB + 2 * MIB), PageSize::Size4KiB);
    assert!(w.table.translate(2 * GIB + 2 * MIB + 0x1000).is_none());
    for v in (va..va + len).step_by(0x7_3000) {
        assert_eq!(w.mmu.access(v, Access::Read), Ok(pa + (v - va)));
    }
    // Overlapping ranges are refused whole.
    let live = memory.live_frames();
    assert_eq!(
        w.table
            .map_range(va - 0x1000, 0x1000, 0x2000, rw::<F>(), &mut alloc),
        Err(PagingError::Occupied {
            va,
            level: Level::L1
        })
    );
    assert_eq!(memory.live_frames(), live);
    assert!(w.table.translate(va - 0x1000).is_none());
    // Misaligned physical vs virtual offsets within 2 MiB: 4 KiB pages only.
    w.table
        .map_range(8 * GIB + 0x1000, 0x20_0000, 4 * MIB, ro::<F>(), &mut alloc)
        .unwrap()
        .ignore();
    assert_eq!(
        w.table.translate(8 * GIB + 2 * MIB).unwrap().size,
        PageSize::Size4KiB
    );
    w.table
        .unmap(0, 16 * GIB, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(memory.live_frames(), 1);
    w.finish();
}

#[test]
fn map_range_uses_largest_sizes_x86_64() {
    map_range_uses_largest_sizes::<X86_64>();
}

#[test]
fn map_range_uses_largest_sizes_aarch64() {
    map_range_uses_largest_sizes::<Aarch64>();
}

fn bad_input<F: PagingFormat>() {
    let memory = Memory::new(64);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    let a = rw::<F>();
    assert_eq!(
        w.table
            .map(0x1001, Pfn::new(1), PageSize::Size4KiB, a, &mut alloc),
        Err(PagingError::Unaligned {
            value: 0x1001,
            required: 0x1000
        })
    );
    assert_eq!(
        w.table
            .map(0x1000, Pfn::new(1), PageSize::Size2MiB, a, &mut alloc),
        Err(PagingError::Unaligned {
            value: 0x1000,
            required: 2 * MIB
        })
    );
    assert_eq!(
        w.table
            .map(0, Pfn::new(0x201), PageSize::Size2MiB, a, &mut alloc),
        Err(PagingError::Unaligned {
            value: 0x201000,
            required: 2 * MIB
        })
    );
    assert_eq!(
        w.table.map_range(0, 0, 0, a, &mut alloc),
        Err(PagingError::EmptyRange)
    );
    assert_eq!(
        w.table.map_range(0, 0x10, 0x1000, a, &mut alloc),
        Err(PagingError::Unaligned {
            value: 0x10,
            required: 0x1000
        })
    );
    let beyond = 1u64 << w.table.va_bits();
    assert_eq!(
        w.table
            .map(beyond, Pfn::new(1), PageSize::Size4KiB, a, &mut alloc),
        Err(PagingError::OutOfRange { va: beyond })
    );
    assert!(matches!(
        w.table.map_range(beyond - 0x1000, 0, 0x2000, a, &mut alloc),
        Err(PagingError::OutOfRange { .. })
    ));
    assert!(matches!(
        w.table
            .map(0, Pfn::new(1 << 50), PageSize::Size4KiB, a, &mut alloc),
        Err(PagingError::Encode(_))
    ));
    // Overlap with a block, and with a table below a block-sized slot.
    w.table
        .map(2 * MIB, Pfn::new(0x400), PageSize::Size2MiB, a, &mut alloc)
        .unwrap()
        .ignore();
    assert_eq!(
        w.table.map(
            2 * MIB + 0x5000,
            Pfn::new(1),
            PageSize::Size4KiB,
            a,
            &mut alloc
        ),
        Err(PagingError::Occupied {
            va: 2 * MIB,
            level: Level::L2
        })
    );
    w.table
        .map(0x5000, Pfn::new(1), PageSize::Size4KiB, a, &mut alloc)
        .unwrap()
        .ignore();
    assert_eq!(
        w.table
            .map(0, Pfn::new(0x600), PageSize::Size2MiB, a, &mut alloc),
        Err(PagingError::Occupied {
            va: 0,
            level: Level::L2
        })
    );
    // Unmap / protect cutting a block.
    assert_eq!(
        w.table.unmap(2 * MIB + 0x1000, 0x1000, &mut alloc, &w.mmu),
        Err(PagingError::PartialBlock {
            va: 2 * MIB,
            level: Level::L2
        })
    );
    assert_eq!(
        w.table.protect(3 * MIB, MIB, |a| a, &w.mmu),
        Err(PagingError::PartialBlock {
            va: 2 * MIB,
            level: Level::L2
        })
    );
    assert!(w.table.translate(2 * MIB).is_some());
    assert_eq!(
        w.table.split(0x5000, &mut alloc, &w.mmu),
        Err(PagingError::NotSplittable {
            va: 0x5000,
            level: Level::L1
        })
    );
    assert_eq!(
        w.table.split(64 * MIB, &mut alloc, &w.mmu),
        Err(PagingError::NotSplittable {
            va: 64 * MIB,
            level: Level::L2
        })
    );
    assert_eq!(
        w.table.collapse(0, Level::L2, &mut alloc, &w.mmu),
        Err(PagingError::NotCollapsible { va: 0 })
    );
    assert_eq!(w.table.translate(0x5000).unwrap().pa, 0x1000);
    w.finish();
}

#[test]
fn bad_input_x86_64() {
    bad_input::<X86_64>();
}

#[test]
fn bad_input_aarch64() {
    bad_input::<Aarch64>();
}

#[test]
fn root_levels() {
    let memory = Memory::new(8);
    let mut alloc = &memory;
    assert_eq!(
        PageTable::<X86_64, _>::new(Level::L3, &memory, &mut alloc).unwrap_err(),
        PagingError::InvalidRootLevel(Level::L3)
    );
    assert_eq!(
        PageTable::<Aarch64, _>::new(Level::L5, &memory, &mut alloc).unwrap_err(),
        PagingError::InvalidRootLevel(Level::L5)
    );
    assert_eq!(devpriv_paging::aarch64_root_level(39), Some(Level::L3));
    assert_eq!(devpriv_paging::aarch64_root_level(48), Some(Level::L4));
    assert_eq!(devpriv_paging::x86_64_root_level(57), Some(Level::L5));
    // 5-level x86_64 reaches 57 bits, canonical upper half included.
    let mut t = PageTable::<X86_64, _>::new(Level::L5, &memory, &mut alloc).unwrap();
    let high = 0xff00_0000_0000_0000u64;
    t.map(
        high,
        Pfn::new(7),
        PageSize::Size4KiB,
        rw::<X86_64>(),
        &mut alloc,
    )
    .unwrap()
    .ignore();
    assert_eq!(t.translate(high + 3).unwrap().pa, 0x7003);
    assert_eq!(
        t.map(
            1 << 56,
            Pfn::new(7),
            PageSize::Size4KiB,
            rw::<X86_64>(),
            &mut alloc
        ),
        Err(PagingError::OutOfRange { va: 1 << 56 })
    );
    t.destroy(&mut alloc);
    // 39-bit aarch64 (3 levels) and its TTBR1 half.
    let mut t = PageTable::<Aarch64, _>::new(Level::L3, &memory, &mut alloc).unwrap();
    let high = 0xffff_ff80_0000_0000u64;
    t.map(
        high,
        Pfn::new(7),
        PageSize::Size4KiB,
        rw::<Aarch64>(),
        &mut alloc,
    )
    .unwrap()
    .ignore();
    assert_eq!(t.translate(high + 3).unwrap().pa, 0x7003);
    assert_eq!(
        t.map(
            1 << 39,
            Pfn::new(7),
            PageSize::Size4KiB,
            rw::<Aarch64>(),
            &mut alloc
        ),
        Err(PagingError::OutOfRange { va: 1 << 39 })
    );
    t.destroy(&mut alloc);
    assert_eq!(memory.live_frames(), 0);
}

fn allocator_runs_out<F: PagingFormat>() {
    let memory = Memory::new(64);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    w.table
        .map(
            0x1000,
            Pfn::new(1),
            PageSize::Size4KiB,
            rw::<F>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    let live = memory.live_frames();
    // The range needs three new tables (level 1 below 1 GiB, level 2 and 1 at 3 GiB).
    for budget in 0..3 {
        memory.set_budget(Some(budget));
        let r = w
            .table
            .map_range(GIB - 0x1000, 0, 2 * GIB + 0x2000, rw::<F>(), &mut alloc);
        assert_eq!(r, Err(PagingError::OutOfFrames), "budget {budget}");
        assert_eq!(memory.live_frames(), live, "leak at budget {budget}");
        assert!(w.table.translate(GIB).is_none());
        assert_eq!(w.table.translate(0x1000).unwrap().pa, 0x1000);
        memory.set_budget(Some(budget));
        let r = w.table.map(
            64 * GIB,
            Pfn::new(1),
            PageSize::Size4KiB,
            rw::<F>(),
            &mut alloc,
        );
        if budget < 2 {
            assert_eq!(r, Err(PagingError::OutOfFrames));
            assert_eq!(memory.live_frames(), live);
        } else {
            r.unwrap().ignore();
            w.table
                .unmap(64 * GIB, 0x1000, &mut alloc, &w.mmu)
                .unwrap()
                .ignore();
        }
        memory.set_budget(Some(0));
        assert_eq!(
            w.table.split(0x1000, &mut alloc, &w.mmu),
            Err(PagingError::NotSplittable {
                va: 0x1000,
                level: Level::L1
            })
        );
    }
    memory.set_budget(None);
    w.finish();
}

#[test]
fn allocator_runs_out_x86_64() {
    allocator_runs_out::<X86_64>();
}

#[test]
fn allocator_runs_out_aarch64() {
    allocator_runs_out::<Aarch64>();
}

fn split_and_collapse<F: PagingFormat>() {
    let memory = Memory::new(64);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    w.table
        .map(
            2 * MIB,
            Pfn::new(0x800),
            PageSize::Size2MiB,
            rw::<F>(),
            &mut alloc,
        )
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(w.mmu.access(2 * MIB + 0x5000, Access::Read), Ok(0x80_5000));
    w.table
        .split(2 * MIB + 0x5000, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    w.mmu.assert_clean();
    assert_eq!(
        w.table.translate(2 * MIB + 0x5000).unwrap().size,
        PageSize::Size4KiB
    );
    for page in 0..512 {
        let va = 2 * MIB + page * 0x1000;
        assert_eq!(
            w.mmu.access(va, Access::Write),
            Ok(0x80_0000 + page * 0x1000)
        );
    }
    w.table
        .collapse(2 * MIB, Level::L2, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    w.mmu.assert_clean();
    assert_eq!(
        w.table.translate(2 * MIB + 0x5000).unwrap().size,
        PageSize::Size2MiB
    );
    // 1 GiB -> 2 MiB -> back.
    w.table
        .map(
            GIB,
            Pfn::new(0x80000),
            PageSize::Size1GiB,
            ro::<F>(),
            &mut alloc,
        )
        .unwrap()
        .flush(&w.mmu);
    w.table
        .split(GIB, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(
        w.table.translate(GIB + 3 * MIB).unwrap().pa,
        0x8000_0000 + 3 * MIB
    );
    assert_eq!(w.table.translate(GIB).unwrap().size, PageSize::Size2MiB);
    // A page of the split block with other attributes: no longer collapsible.
    w.table
        .split(GIB, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    w.table
        .protect(GIB + 0x1000, 0x1000, |_| rw::<F>(), &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(
        w.table.collapse(GIB, Level::L2, &mut alloc, &w.mmu),
        Err(PagingError::NotCollapsible { va: GIB })
    );
    assert_eq!(w.mmu.access(GIB + 0x1000, Access::Write), Ok(0x8000_1000));
    w.table
        .protect(GIB + 0x1000, 0x1000, |_| ro::<F>(), &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    w.table
        .collapse(GIB, Level::L2, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    if w.table.root_level() > Level::L3 {
        w.table
            .collapse(GIB, Level::L3, &mut alloc, &w.mmu)
            .unwrap()
            .flush(&w.mmu);
        assert_eq!(w.table.translate(GIB).unwrap().size, PageSize::Size1GiB);
    } else {
        // The root's entries cannot collapse.
        assert_eq!(
            w.table.collapse(GIB, Level::L3, &mut alloc, &w.mmu),
            Err(PagingError::NotCollapsible { va: GIB })
        );
    }
    w.mmu.assert_clean();
    w.finish();
}

#[test]
fn split_and_collapse_x86_64() {
    split_and_collapse::<X86_64>();
}

#[test]
fn split_and_collapse_aarch64() {
    split_and_collapse::<Aarch64>();
}

fn software_entries_split<F: PagingFormat>() {
    let memory = Memory::new(64);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    // Make the level-2 slot exist, then write a 2 MiB device-private entry with the
    // cursor.
    w.table
        .map(0, Pfn::new(1), PageSize::Size4KiB, rw::<F>(), &mut alloc)
        .unwrap()
        .ignore();
    let sw = SoftwareEntry::new(SoftwareKind::DevicePrivate {
        access: DeviceAccess::Write,
        index: DeviceIndex::new(0x1000),
    });
    {
        let mut cursor = w.table.cursor(2 * MIB, 2 * MIB).unwrap();
        let mut slot = cursor.next().unwrap();
        assert_eq!((slot.va(), slot.level()), (2 * MIB, Level::L2));
        assert_eq!(slot.entry(), Ok(Entry::Absent));
        slot.replace(&Entry::Software(sw)).unwrap().flush(&w.mmu);
        assert!(cursor.next().is_none());
    }
    w.table
        .split(2 * MIB + 0x3000, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    let (level, entry) = w.table.lookup(2 * MIB + 0x3000).unwrap();
    assert_eq!(level, Level::L1);
    assert_eq!(
        entry,
        Entry::Software(SoftwareEntry::new(SoftwareKind::DevicePrivate {
            access: DeviceAccess::Write,
            index: DeviceIndex::new(0x1003),
        }))
    );
    assert!(matches!(
        w.mmu.access(2 * MIB + 0x3000, Access::Read),
        Err(MmuError::NotMapped { .. })
    ));
    w.table
        .collapse(2 * MIB, Level::L2, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(
        w.table.entry_at(2 * MIB, Level::L2).unwrap(),
        Entry::Software(sw)
    );
    // Unmap clears software entries too.
    w.table
        .unmap(0, 4 * MIB, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(memory.live_frames(), 1);
    w.finish();
}

#[test]
fn software_entries_split_x86_64() {
    software_entries_split::<X86_64>();
}

#[test]
fn software_entries_split_aarch64() {
    software_entries_split::<Aarch64>();
}

fn cursor_visits_and_replaces<F: PagingFormat>() {
    let memory = Memory::new(64);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    w.table
        .map_range(0, 0x10_0000, 0x4000, rw::<F>(), &mut alloc)
        .unwrap()
        .ignore();
    w.table
        .map(
            2 * MIB,
            Pfn::new(0x600),
            PageSize::Size2MiB,
            rw::<F>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    for va in [0, 0x1000, 0x2000, 0x3000, 2 * MIB] {
        w.mmu.access(va, Access::Read).unwrap();
    }
    // Range [0x2000, 3 MiB): two pages, 510 absent 4 KiB slots, one 2 MiB block.
    let slots: Vec<_> = w
        .table
        .cursor(0x2000, 3 * MIB - 0x2000)
        .unwrap()
        .map(|s| (s.va(), s.level(), s.entry().unwrap().kind_name()))
        .collect();
    assert_eq!(slots.len(), 510 + 1);
    assert_eq!(slots[0], (0x2000, Level::L1, "leaf"));
    assert_eq!(slots[2], (0x4000, Level::L1, "absent"));
    assert_eq!(slots[510], (2 * MIB, Level::L2, "leaf"));
    // Replace present pages with migration entries (the collect step of a migration).
    let mut batch = FlushBatch::new();
    let cursor = w.table.cursor(0, 2 * MIB).unwrap();
    for mut slot in cursor {
        if let Ok(Entry::Leaf { pfn, .. }) = slot.entry() {
            let migration = Entry::Software(SoftwareEntry::new(SoftwareKind::Migration {
                access: MigrationAccess::Write,
                pfn,
                young: true,
                dirty: false,
            }));
            batch.add(slot.replace(&migration).unwrap());
        }
    }
    assert_eq!(batch.pending(), 4);
    // Before the flush the TLB still translates: the model calls it stale.
    assert!(matches!(
        w.mmu.access(0x1000, Access::Read),
        Err(MmuError::Stale { .. })
    ));
    batch.finish(&w.mmu);
    assert!(w.mmu.access(0x1000, Access::Read).is_err());
    // Split the block through the cursor and visit its pages.
    let mut cursor = w.table.cursor(2 * MIB, 2 * MIB).unwrap();
    let slot = cursor.next().unwrap();
    assert_eq!(slot.level(), Level::L2);
    cursor
        .split(&slot, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    let rest: Vec<_> = cursor.collect();
    assert_eq!(rest.len(), 512);
    assert!(rest.iter().all(|s| s.level() == Level::L1));
    // A lost race is a typed outcome.
    let mut c1 = w.table.cursor(0x3000, 0x1000).unwrap();
    let mut c2 = w.table.cursor(0x3000, 0x1000).unwrap();
    let mut s1 = c1.next().unwrap();
    let mut s2 = c2.next().unwrap();
    s1.replace(&Entry::Absent).unwrap().flush(&w.mmu);
    assert_eq!(
        s2.replace(&Entry::Absent),
        Err(ReplaceError::Raced { current: 0 })
    );
    assert_eq!(
        s2.replace(&Entry::Table {
            next: Pfn::new(1),
            attrs: Default::default()
        }),
        Err(ReplaceError::TableNotAllowed)
    );
    w.table
        .unmap(0, 4 * MIB, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    w.finish();
}

#[test]
fn cursor_visits_and_replaces_x86_64() {
    cursor_visits_and_replaces::<X86_64>();
}

#[test]
fn cursor_visits_and_replaces_aarch64() {
    cursor_visits_and_replaces::<Aarch64>();
}

#[test]
fn break_before_make_rules() {
    let base = aarch64::PageAttributes::from_property(PageProperty {
        writable: true,
        ..PageProperty::default()
    });
    let leaf = |pfn: u64, attrs: aarch64::PageAttributes| Entry::<Aarch64>::Leaf {
        pfn: Pfn::new(pfn),
        size: PageSize::Size2MiB,
        attrs,
    };
    let table = Entry::<Aarch64>::Table {
        next: Pfn::new(5),
        attrs: Default::default(),
    };
    let bbm = needs_break_before_make::<Aarch64>;
    // Permission-only and access-flag changes: no.
    assert!(!bbm(
        &leaf(512, base),
        &leaf(512, base.with_read_only(true))
    ));
    assert!(!bbm(&leaf(512, base), &leaf(512, base.with_uxn(false))));
    assert!(!bbm(&leaf(512, base), &leaf(512, base.with_accessed(true))));
    assert!(!bbm(&leaf(512, base), &leaf(512, base.with_dbm(true))));
    // Output address, block <-> table, memory type, shareability, nG: yes.
    assert!(bbm(&leaf(512, base), &leaf(1024, base)));
    assert!(bbm(&leaf(512, base), &table));
    assert!(bbm(&table, &leaf(512, base)));
    let device = aarch64::PageAttributes::from_property(PageProperty {
        writable: true,
        memory: MemoryType::Device,
        ..PageProperty::default()
    });
    assert!(bbm(&leaf(512, base), &leaf(512, device)));
    assert!(bbm(
        &leaf(512, base),
        &leaf(
            512,
            base.with_shareability(aarch64::Shareability::OuterShareable)
        )
    ));
    assert!(bbm(
        &leaf(512, base),
        &leaf(512, base.with_not_global(false))
    ));
    // Invalid on either side: no.
    assert!(!bbm(&Entry::Absent, &leaf(512, base)));
    assert!(!bbm(&leaf(512, base), &Entry::Absent));
    // x86_64: never.
    let x = |pfn: u64| Entry::<X86_64>::Leaf {
        pfn: Pfn::new(pfn),
        size: PageSize::Size4KiB,
        attrs: x86_64::PageAttributes::default(),
    };
    assert!(!needs_break_before_make::<X86_64>(&x(1), &x(2)));
}

#[test]
fn aarch64_memory_type_change_is_break_before_make() {
    let memory = Memory::new(16);
    let mut w = world::<Aarch64>(&memory);
    let mut alloc = &memory;
    w.table
        .map(
            0,
            Pfn::new(1),
            PageSize::Size4KiB,
            rw::<Aarch64>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    w.mmu.access(0, Access::Read).unwrap();
    let device = aarch64::PageAttributes::from_property(PageProperty {
        writable: true,
        memory: MemoryType::Device,
        ..PageProperty::default()
    });
    w.table
        .protect(0, 0x1000, |_| device, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    w.mmu.assert_clean();
    // A cursor refuses to do it without break-before-make, and does it with.
    let mut cursor = w.table.cursor(0, 0x1000).unwrap();
    let mut slot = cursor.next().unwrap();
    let moved = Entry::Leaf {
        pfn: Pfn::new(2),
        size: PageSize::Size4KiB,
        attrs: device,
    };
    assert_eq!(
        slot.replace(&moved),
        Err(ReplaceError::NeedsBreakBeforeMake)
    );
    w.mmu.access(0, Access::Read).unwrap();
    slot.replace_break_before_make(&moved, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(w.mmu.access(0, Access::Read), Ok(0x2000));
    w.mmu.assert_clean();
    w.table
        .unmap(0, 0x1000, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    w.finish();
}

/// The model catches a valid -> valid change that skipped break-before-make.
#[test]
fn model_catches_missing_break_before_make() {
    let memory = Memory::new(16);
    let mut w = world::<Aarch64>(&memory);
    let mut alloc = &memory;
    w.table
        .map(
            0,
            Pfn::new(1),
            PageSize::Size4KiB,
            rw::<Aarch64>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    w.mmu.access(0, Access::Read).unwrap();
    // Use protect with a memory-type change but a no-op TLB: the model sees the stale
    // entry at the next real flush.
    let device = aarch64::PageAttributes::from_property(PageProperty {
        writable: true,
        memory: MemoryType::Device,
        ..PageProperty::default()
    });
    // NoInvalidate skips the break's invalidation, so the TLB still holds the old entry
    // when the new one is written.
    w.table
        .protect(0, 0x1000, |_| device, &NoInvalidate)
        .unwrap()
        .ignore();
    Flush::all().flush(&w.mmu);
    assert_eq!(w.mmu.violations().len(), 1);
    assert_eq!(
        w.mmu.violations()[0].kind,
        devpriv_paging::model::ViolationKind::BreakBeforeMake
    );
    w.table
        .unmap(0, 0x1000, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    let mut alloc = w.memory;
    w.table.destroy(&mut alloc);
    assert_eq!(memory.live_frames(), 0);
}

/// The model catches a missing flush: a stale translation is an error.
#[test]
fn model_catches_missing_flush() {
    let memory = Memory::new(16);
    let mut w = world::<X86_64>(&memory);
    let mut alloc = &memory;
    w.table
        .map(
            0,
            Pfn::new(1),
            PageSize::Size4KiB,
            rw::<X86_64>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    assert_eq!(w.mmu.access(0, Access::Write), Ok(0x1000));
    w.table
        .protect(0, 0x1000, |_| ro::<X86_64>(), &w.mmu)
        .unwrap()
        .ignore();
    assert!(matches!(
        w.mmu.access(0, Access::Write),
        Err(MmuError::Stale { .. })
    ));
    w.table
        .protect(0, 0x1000, |_| ro::<X86_64>(), &w.mmu)
        .unwrap()
        .ignore();
    Flush::entry(0, 12).flush(&w.mmu);
    assert_eq!(w.mmu.access(0, Access::Write), Err(MmuError::ReadOnly));
    w.finish();
}

#[test]
fn flush_batch_escalates_past_threshold() {
    let memory = Memory::new(4);
    let mmu = Mmu::<X86_64>::new(&memory, Pfn::new(0x100), Level::L4);
    let mut batch = FlushBatch::new();
    for i in 0..devpriv_paging::FULL_FLUSH_THRESHOLD {
        batch.add(Flush::entry(i << 12, 12));
    }
    batch.add(Flush::none());
    assert_eq!(batch.pending(), 32);
    assert!(!batch.is_all());
    batch.flush(&mmu);
    assert_eq!(mmu.invalidations(), (32, 0));
    for i in 0..=devpriv_paging::FULL_FLUSH_THRESHOLD {
        batch.add(Flush::entry(i << 12, 12));
    }
    assert!(batch.is_all());
    batch.finish(&mmu);
    assert_eq!(mmu.invalidations(), (32, 1));
    // One token for a range: one invalidation per entry of its smallest size.
    let mut token = Flush::entry(2 * MIB, 21);
    token.add_entry(0x3000, 12);
    assert_eq!(token.pages(), (4 * MIB - 0x3000) >> 12);
    assert!(token.pages() > 32);
    token.flush(&mmu);
    assert_eq!(mmu.invalidations(), (32, 2));
    Flush::entry(GIB, 30).flush(&mmu);
    assert_eq!(mmu.invalidations(), (33, 2));
}

/// Tokens for the last pages of the address space (whose end wraps to 0) merge like
/// any others, and a range that does not start on an entry boundary is covered whole.
#[test]
fn flush_tokens_at_the_top_and_unaligned() {
    let memory = Memory::new(4);
    let mmu = Mmu::<X86_64>::new(&memory, Pfn::new(0x100), Level::L4);
    let top: u64 = !0xfff;
    let mut token = Flush::entry(top - 0x1000, 12);
    token.add_entry(top, 12);
    assert_eq!(token.pages(), 2, "the top page is not lost in the merge");
    token.flush(&mmu);
    assert_eq!(mmu.invalidations(), (2, 0));
    let whole = Flush::range(top - 0x3000, 0, 12);
    assert_eq!(whole.pages(), 4, "a range to the top of the address space");
    let mut batch = FlushBatch::new();
    batch.add(Flush::range(0x1234, 0x5678, 12));
    assert_eq!(batch.pending(), 5, "0x1000..0x6000, five pages");
    batch.add(Flush::range(top - 0x1000, 0, 12));
    assert_eq!(batch.pending(), 7);
    batch.finish(&mmu);
    assert_eq!(mmu.invalidations(), (9, 0));
    assert!(Flush::range(0x5000, 0x5000, 12).is_empty());
}

/// Unmapping the last two pages of the x86_64 address space invalidates both.
#[test]
fn unmap_at_the_top_of_the_address_space() {
    let memory = Memory::new(16);
    let mut w = world::<X86_64>(&memory);
    let mut alloc = &memory;
    let top: u64 = !0xfff;
    // A third page keeps the level-1 table alive, so the unmap flushes by its token.
    for (i, va) in [top - 0x1000, top, top - 0x2000].into_iter().enumerate() {
        w.table
            .map(
                va,
                Pfn::new(0x42 + i as u64),
                PageSize::Size4KiB,
                rw::<X86_64>(),
                &mut alloc,
            )
            .unwrap()
            .ignore();
        assert_eq!(w.mmu.access(va, Access::Read), Ok((0x42 + i as u64) << 12));
    }
    w.table
        .unmap(top - 0x1000, 0x2000, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    for va in [top - 0x1000, top] {
        assert!(
            matches!(
                w.mmu.access(va, Access::Read),
                Err(MmuError::NotMapped { .. })
            ),
            "{va:#x} still cached after the unmap"
        );
    }
    w.table
        .unmap(top - 0x2000, 0x1000, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    w.finish();
}

fn unmap_frees_many_subtrees<F: PagingFormat>() {
    let memory = Memory::new(64);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    // 20 level-1 tables of 4 KiB pages.
    w.table
        .map_range_with_max(0, 0, 40 * MIB, rw::<F>(), PageSize::Size4KiB, &mut alloc)
        .unwrap()
        .ignore();
    for va in (0..40 * MIB).step_by(MIB as usize) {
        assert_eq!(w.mmu.access(va, Access::Read), Ok(va));
    }
    let tables = memory.live_frames();
    // 19 whole level-1 tables and part of the first: more subtrees than unmap keeps
    // inline, so the rest go through the frame chain.
    w.table
        .unmap(0x1000, 40 * MIB - 0x1000, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(memory.live_frames(), tables - 19);
    assert_eq!(w.mmu.access(0, Access::Read), Ok(0));
    for va in (0x1000..40 * MIB).step_by(0x3_1000) {
        assert!(w.mmu.access(va, Access::Read).is_err());
        assert!(w.table.translate(va).is_none());
    }
    w.table
        .unmap(0, 0x1000, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(memory.live_frames(), 1);
    w.finish();
}

#[test]
fn unmap_frees_many_subtrees_x86_64() {
    unmap_frees_many_subtrees::<X86_64>();
}

#[test]
fn unmap_frees_many_subtrees_aarch64() {
    unmap_frees_many_subtrees::<Aarch64>();
}

/// Unmapping page by page frees each table when its last entry goes, and not before:
/// in address order, in a shuffled order, with a software entry that `install` wrote
/// through `&self` meanwhile (it keeps the table), and with an absent entry that holds
/// only the accessed/dirty bits x86_64 hardware may leave (it does not).
fn unmap_page_by_page_frees_tables_when_empty<F: PagingFormat>() {
    let memory = Memory::new(64);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    // Level-1 tables A = [0, 2 MiB) and D = [4 MiB, 6 MiB) full of 4 KiB pages, B with
    // one page, all below one level-2 table; C with one page below another.
    let (a, d, b, c) = (0, 4 * MIB, 2 * MIB + 0x5000, GIB + 0x3000);
    for start in [a, d] {
        w.table
            .map_range_with_max(
                start,
                start,
                2 * MIB,
                rw::<F>(),
                PageSize::Size4KiB,
                &mut alloc,
            )
            .unwrap()
            .ignore();
    }
    for va in [b, c] {
        w.table
            .map(
                va,
                Pfn::containing(va),
                PageSize::Size4KiB,
                rw::<F>(),
                &mut alloc,
            )
            .unwrap()
            .ignore();
    }
    let full = memory.live_frames();
    let unmap_page = |w: &mut World<'_, F>, va: u64| {
        w.unmap(va, 0x1000);
        assert!(w.table.translate(va).is_none(), "{va:#x} still mapped");
        assert!(
            w.mmu.access(va, Access::Read).is_err(),
            "{va:#x} still cached"
        );
    };

    // A in address order: the table stays while any page is left.
    for i in 0..512 {
        unmap_page(&mut w, a + i * 0x1000);
        if i < 511 {
            assert_eq!(memory.live_frames(), full, "A freed early, at page {i}");
            let next = a + (i + 1) * 0x1000;
            assert_eq!(w.mmu.access(next, Access::Read), Ok(next));
        }
    }
    assert_eq!(memory.live_frames(), full - 1, "A kept after its last page");

    // D in a shuffled order.
    let mut order: Vec<u64> = (0..512).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let (sw_page, noise_page) = (order[10], order[20]);
    for (n, &i) in order.iter().enumerate() {
        unmap_page(&mut w, d + i * 0x1000);
        if n == 255 {
            // A device-private entry where a page was, written through `&self`.
            w.table
                .install(
                    d + sw_page * 0x1000,
                    Level::L1,
                    &device_private::<F>(7),
                    &mut alloc,
                )
                .unwrap()
                .ignore();
            if F::is_root_level(Level::L5) {
                // x86_64: accessed and dirty, present clear — absent.
                raw_entry(&memory, &w.table, d + noise_page * 0x1000, Level::L1)
                    .store(0x60, core::sync::atomic::Ordering::Release);
            }
        }
        assert_eq!(memory.live_frames(), full - 1, "D freed early");
    }
    assert_eq!(
        w.table.entry_at(d + sw_page * 0x1000, Level::L1),
        Ok(device_private::<F>(7))
    );
    unmap_page(&mut w, d + sw_page * 0x1000);
    assert_eq!(
        memory.live_frames(),
        full - 2,
        "D kept after its last entry"
    );

    // B's only page: B goes, and the level-2 table above A, B and D with it.
    unmap_page(&mut w, b);
    assert_eq!(memory.live_frames(), full - 4);
    // C's only page: every table but the root goes.
    unmap_page(&mut w, c);
    assert_eq!(memory.live_frames(), 1);
    w.finish();
}

#[test]
fn unmap_page_by_page_frees_tables_when_empty_x86_64() {
    unmap_page_by_page_frees_tables_when_empty::<X86_64>();
}

#[test]
fn unmap_page_by_page_frees_tables_when_empty_aarch64() {
    unmap_page_by_page_frees_tables_when_empty::<Aarch64>();
}

/// `map` and `unmap` remember the level-1 and level-2 tables their walks went through;
/// every call that frees tables forgets them, so a later call in the same gigabyte walks
/// the new tables instead of reading freed ones (the arena panics on a read of a freed
/// frame, and the translations below would be wrong). Three rounds free the tables by
/// unmapping (a range call, pages one by one, pages interleaved with a map elsewhere);
/// [`collapse_forgets_cached_tables`] covers `collapse`.
fn cached_tables_are_forgotten_when_freed<F: PagingFormat>() {
    let memory = Memory::new(64);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    let base = 3 * GIB;
    let mut map_page = |w: &mut World<'_, F>, va: u64| {
        w.table
            .map(
                va,
                Pfn::containing(va),
                PageSize::Size4KiB,
                rw::<F>(),
                &mut alloc,
            )
            .unwrap()
            .flush(&w.mmu);
    };
    let empty = memory.live_frames();
    // Two level-1 tables below one level-2 table, each page's neighbour mapped, so that
    // the unmaps below take the inlined path through the cached level-2 table.
    let pages = [base, base + 0x1000, base + 2 * MIB, base + 2 * MIB + 0x1000];
    for round in 0..3 {
        for va in pages {
            map_page(&mut w, va);
        }
        for va in pages {
            assert_eq!(w.mmu.access(va, Access::Read), Ok(va), "round {round}");
        }
        match round {
            // The whole gigabyte in one call: the general path frees both levels.
            0 => w.unmap(base, GIB),
            // Page by page, alternating tables: the last pages free the tables.
            1 => {
                for va in [pages[0], pages[2], pages[1], pages[3]] {
                    w.unmap(va, 0x1000);
                }
            }
            // One table's pages, then a page elsewhere in the gigabyte mapped and
            // unmapped before the other table's pages go.
            _ => {
                w.unmap(pages[0], 0x1000);
                w.unmap(pages[1], 0x1000);
                map_page(&mut w, base + 8 * MIB);
                w.unmap(base + 8 * MIB, 0x1000);
                w.unmap(pages[2], 0x1000);
                w.unmap(pages[3], 0x1000);
            }
        }
        for va in pages {
            assert!(w.table.translate(va).is_none(), "round {round}: {va:#x}");
        }
        assert_eq!(memory.live_frames(), empty, "round {round}: tables kept");
    }
    w.finish();
}

#[test]
fn cached_tables_are_forgotten_when_freed_x86_64() {
    cached_tables_are_forgotten_when_freed::<X86_64>();
}

#[test]
fn cached_tables_are_forgotten_when_freed_aarch64() {
    cached_tables_are_forgotten_when_freed::<Aarch64>();
}

/// `collapse` frees the table below the entry it merges, so it forgets the cached
/// tables: at level 2 a cached level-1 table, at level 3 (x86_64, whose root is level 4
/// here) a cached level-2 table. The next call in the range must walk to the block it
/// left, not read the freed table.
fn collapse_forgets_cached_tables<F: PagingFormat>() {
    let memory = Memory::new(64);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    let base = 3 * GIB;
    // A level-1 table of 512 consecutive pages, cached by an unmap and a map of its
    // first page.
    w.table
        .map_range_with_max(
            base,
            base,
            2 * MIB,
            rw::<F>(),
            PageSize::Size4KiB,
            &mut alloc,
        )
        .unwrap()
        .flush(&w.mmu);
    w.table
        .unmap(base, 0x1000, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    w.table
        .map(
            base,
            Pfn::containing(base),
            PageSize::Size4KiB,
            rw::<F>(),
            &mut alloc,
        )
        .unwrap()
        .flush(&w.mmu);
    w.table
        .collapse(base, Level::L2, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(
        w.table.unmap(base + 0x1000, 0x1000, &mut alloc, &w.mmu),
        Err(PagingError::PartialBlock {
            va: base,
            level: Level::L2
        })
    );
    assert_eq!(w.mmu.access(base + 0x1000, Access::Read), Ok(base + 0x1000));
    if root_level::<F>() > Level::L3 {
        // A level-2 table of 512 consecutive 2 MiB blocks, cached by a map that fails
        // inside one of them.
        let gib = 5 * GIB;
        w.table
            .map_range_with_max(gib, gib, GIB, rw::<F>(), PageSize::Size2MiB, &mut alloc)
            .unwrap()
            .flush(&w.mmu);
        assert!(matches!(
            w.table.map(
                gib + 0x1000,
                Pfn::new(1),
                PageSize::Size4KiB,
                rw::<F>(),
                &mut alloc
            ),
            Err(PagingError::Occupied { .. })
        ));
        w.table
            .collapse(gib, Level::L3, &mut alloc, &w.mmu)
            .unwrap()
            .flush(&w.mmu);
        assert_eq!(
            w.table.unmap(gib + 0x1000, 0x1000, &mut alloc, &w.mmu),
            Err(PagingError::PartialBlock {
                va: gib,
                level: Level::L3
            })
        );
        assert_eq!(w.mmu.access(gib + 0x5000, Access::Read), Ok(gib + 0x5000));
        w.table
            .unmap(gib, GIB, &mut alloc, &w.mmu)
            .unwrap()
            .flush(&w.mmu);
    }
    w.table
        .unmap(base, 2 * MIB, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    w.finish();
}

#[test]
fn collapse_forgets_cached_tables_x86_64() {
    collapse_forgets_cached_tables::<X86_64>();
}

#[test]
fn collapse_forgets_cached_tables_aarch64() {
    collapse_forgets_cached_tables::<Aarch64>();
}

/// A table emptied through the cursor stays; map_range maps below it.
#[test]
fn map_range_reuses_an_empty_table() {
    let memory = Memory::new(16);
    let mut w = world::<X86_64>(&memory);
    let mut alloc = &memory;
    w.table
        .map(
            2 * MIB,
            Pfn::new(9),
            PageSize::Size4KiB,
            rw::<X86_64>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    for mut slot in w.table.cursor(2 * MIB, 0x1000).unwrap() {
        slot.replace(&Entry::Absent).unwrap().flush(&w.mmu);
    }
    let live = memory.live_frames();
    w.table
        .map_range(2 * MIB, 4 * MIB, 2 * MIB, rw::<X86_64>(), &mut alloc)
        .unwrap()
        .ignore();
    assert_eq!(memory.live_frames(), live);
    let t = w.table.translate(3 * MIB).unwrap();
    assert_eq!((t.pa, t.size), (5 * MIB, PageSize::Size4KiB));
    // A single block map over an empty table is refused (the table stays).
    w.table
        .map(
            6 * MIB,
            Pfn::new(9),
            PageSize::Size4KiB,
            rw::<X86_64>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    for mut slot in w.table.cursor(6 * MIB, 0x1000).unwrap() {
        slot.replace(&Entry::Absent).unwrap().flush(&w.mmu);
    }
    assert_eq!(
        w.table.map(
            6 * MIB,
            Pfn::new(0x400),
            PageSize::Size2MiB,
            rw::<X86_64>(),
            &mut alloc
        ),
        Err(PagingError::Occupied {
            va: 6 * MIB,
            level: Level::L2
        })
    );
    w.finish();
}

fn split_without_frames<F: PagingFormat>() {
    let memory = Memory::new(16);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    w.table
        .map(
            2 * MIB,
            Pfn::new(0x200),
            PageSize::Size2MiB,
            rw::<F>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    w.mmu.access(2 * MIB, Access::Read).unwrap();
    let live = memory.live_frames();
    memory.set_budget(Some(0));
    assert_eq!(
        w.table.split(2 * MIB, &mut alloc, &w.mmu),
        Err(PagingError::OutOfFrames)
    );
    memory.set_budget(None);
    assert_eq!(memory.live_frames(), live);
    assert_eq!(
        w.table.translate(2 * MIB + 0x1000).unwrap().size,
        PageSize::Size2MiB
    );
    assert_eq!(w.mmu.access(2 * MIB + 0x1000, Access::Read), Ok(0x20_1000));
    w.finish();
}

#[test]
fn split_without_frames_x86_64() {
    split_without_frames::<X86_64>();
}

#[test]
fn split_without_frames_aarch64() {
    split_without_frames::<Aarch64>();
}

/// The model catches a table freed while the TLB still holds translations through it.
#[test]
fn model_catches_table_freed_before_invalidation() {
    use devpriv_paging::model::ViolationKind;
    let memory = Memory::new(16);
    let mut w = world::<X86_64>(&memory);
    let mut alloc = &memory;
    w.table
        .map(
            0x5000,
            Pfn::new(1),
            PageSize::Size4KiB,
            rw::<X86_64>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    w.mmu.access(0x5000, Access::Read).unwrap();
    // NoInvalidate: the level-1 table is freed while the TLB still caches its entry.
    w.table
        .unmap(0x5000, 0x1000, &mut alloc, &NoInvalidate)
        .unwrap()
        .ignore();
    Flush::all().flush(&w.mmu);
    let v = w.mmu.violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, ViolationKind::FreedBeforeInvalidate);
    let mut alloc = w.memory;
    w.table.destroy(&mut alloc);
    assert_eq!(memory.live_frames(), 0);
}

/// An entry that does not decode is reported, not trusted.
#[test]
fn corrupt_entries_are_typed_errors() {
    let memory = Memory::new(16);
    let mut w = world::<X86_64>(&memory);
    let mut alloc = &memory;
    w.table
        .map(
            0,
            Pfn::new(1),
            PageSize::Size4KiB,
            rw::<X86_64>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    // Find the level-2 table through the model and put a 2 MiB leaf with a reserved
    // address bit (bit 13) into slot 1.
    let walk = w.mmu.walk(0).unwrap();
    let l1 = walk.slot.0;
    let l2_table = (devpriv_paging::model::FIRST_PFN..devpriv_paging::model::FIRST_PFN + 16)
        .map(Pfn::new)
        .find(|&f| {
            memory.is_allocated(f)
                && memory
                    .read(f, 0)
                    .and_then(|raw| X86_64::table_pfn(raw, Level::L2))
                    == Some(l1)
        })
        .unwrap();
    assert!(memory.write(l2_table, 1, 0x2000 | 0x80 | 0x1 | 0x20_0000));
    assert!(matches!(
        w.table.entry_at(2 * MIB, Level::L2),
        Err(PagingError::Corrupt {
            level: Level::L2,
            ..
        })
    ));
    assert!(w.table.translate(2 * MIB).is_none());
    let slot = w.table.cursor(2 * MIB, 0x1000).unwrap().next().unwrap();
    assert!(slot.entry().is_err());
    assert!(matches!(
        w.table.split(2 * MIB, &mut alloc, &w.mmu),
        Err(PagingError::Corrupt { .. })
    ));
    assert!(memory.write(l2_table, 1, 0));
    w.finish();
}

fn device_private<F: PagingFormat>(index: u64) -> Entry<F> {
    Entry::Software(SoftwareEntry::new(SoftwareKind::DevicePrivate {
        access: DeviceAccess::Write,
        index: DeviceIndex::new(index),
    }))
}

/// `install` puts software entries, leaves and absent slots at their level, creating
/// the tables on the way, and refuses occupied or covered slots and bad arguments
/// without changing anything.
fn install_entries<F: PagingFormat>() {
    let memory = Memory::new(64);
    let w = world::<F>(&memory);
    let mut alloc = &memory;
    // Tables between the root and level 1 for a fresh address: one per level.
    let missing = root_level::<F>().number() as usize - 1;
    let va = 5 * GIB + 0x3000;
    let entry = device_private::<F>(0x42);
    let live = memory.live_frames();
    w.table
        .install(va, Level::L1, &entry, &mut alloc)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(memory.live_frames(), live + missing);
    assert_eq!(w.table.lookup(va), Ok((Level::L1, entry)));
    assert!(matches!(
        w.mmu.access(va, Access::Read),
        Err(MmuError::NotMapped { .. })
    ));
    // The neighbour uses the tables just made: no new frame.
    let next = device_private::<F>(0x43);
    w.table
        .install(va + 0x1000, Level::L1, &next, &mut alloc)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(memory.live_frames(), live + missing);
    assert_eq!(w.table.lookup(va + 0x1000), Ok((Level::L1, next)));

    // The slot is taken: nothing changes.
    assert_eq!(
        w.table.install(va, Level::L1, &next, &mut alloc),
        Err(PagingError::Occupied {
            va,
            level: Level::L1
        })
    );
    assert_eq!(w.table.lookup(va), Ok((Level::L1, entry)));
    // A level-2 slot holding the level-1 table is not empty either.
    assert_eq!(
        w.table
            .install(va & !(2 * MIB - 1), Level::L2, &Entry::Absent, &mut alloc),
        Err(PagingError::Occupied {
            va: va & !(2 * MIB - 1),
            level: Level::L2
        })
    );

    // A 2 MiB block at level 2 (a new level-2 table on the way, no level-1 table).
    let block_va = 7 * GIB;
    let block = Entry::Leaf {
        pfn: Pfn::new(0x200),
        size: PageSize::Size2MiB,
        attrs: rw::<F>(),
    };
    w.table
        .install(block_va, Level::L2, &block, &mut alloc)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(
        w.mmu.access(block_va + 0x1234, Access::Read),
        Ok(0x20_0000 + 0x1234)
    );
    let frames = memory.live_frames();
    // Below the block: covered by it.
    assert_eq!(
        w.table
            .install(block_va + 0x1000, Level::L1, &entry, &mut alloc),
        Err(PagingError::Occupied {
            va: block_va,
            level: Level::L2
        })
    );
    assert_eq!(memory.live_frames(), frames);

    // Bad arguments.
    assert_eq!(
        w.table
            .install(block_va + 0x1000, Level::L2, &Entry::Absent, &mut alloc),
        Err(PagingError::Unaligned {
            value: block_va + 0x1000,
            required: 2 * MIB
        })
    );
    assert_eq!(
        w.table.install(
            9 * GIB,
            Level::L2,
            &Entry::Table {
                next: Pfn::new(3),
                attrs: Default::default()
            },
            &mut alloc
        ),
        Err(PagingError::TableEntry)
    );
    let above_root = root_level::<F>().next_higher().unwrap();
    assert_eq!(
        w.table.install(0, above_root, &Entry::Absent, &mut alloc),
        Err(PagingError::OutOfRange { va: 0 })
    );
    // A 4 KiB leaf does not fit a level-2 slot.
    assert!(matches!(
        w.table.install(
            9 * GIB,
            Level::L2,
            &Entry::Leaf {
                pfn: Pfn::new(1),
                size: PageSize::Size4KiB,
                attrs: rw::<F>()
            },
            &mut alloc
        ),
        Err(PagingError::Encode(_))
    ));
    assert_eq!(memory.live_frames(), frames);

    // Absent only makes the slot exist; the cursor then finds it at level 1.
    let empty_va = 9 * GIB + 0x5000;
    w.table
        .install(empty_va, Level::L1, &Entry::Absent, &mut alloc)
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(w.table.lookup(empty_va), Ok((Level::L1, Entry::Absent)));
    let slot = w.table.cursor(empty_va, 0x1000).unwrap().next().unwrap();
    assert_eq!(slot.level(), Level::L1);
    w.finish();
}

#[test]
fn install_entries_x86_64() {
    install_entries::<X86_64>();
}

#[test]
fn install_entries_aarch64() {
    install_entries::<Aarch64>();
}

/// `install` that runs out of frames part way gives every frame back and leaves the
/// table as it was; with frames it then succeeds.
fn install_without_frames<F: PagingFormat>() {
    let memory = Memory::new(64);
    let w = world::<F>(&memory);
    let mut alloc = &memory;
    let missing = root_level::<F>().number() as u64 - 1;
    let va = 3 * GIB + 0x7000;
    let entry = device_private::<F>(7);
    let live = memory.live_frames();
    for budget in 0..missing {
        memory.set_budget(Some(budget));
        assert_eq!(
            w.table.install(va, Level::L1, &entry, &mut alloc),
            Err(PagingError::OutOfFrames),
            "budget {budget}"
        );
        assert_eq!(memory.live_frames(), live, "leak at budget {budget}");
        assert_eq!(
            w.table.lookup(va),
            Ok((root_level::<F>(), Entry::Absent)),
            "table changed at budget {budget}"
        );
    }
    memory.set_budget(Some(missing));
    w.table
        .install(va, Level::L1, &entry, &mut alloc)
        .unwrap()
        .flush(&w.mmu);
    memory.set_budget(None);
    assert_eq!(w.table.lookup(va), Ok((Level::L1, entry)));
    w.finish();
}

#[test]
fn install_without_frames_x86_64() {
    install_without_frames::<X86_64>();
}

#[test]
fn install_without_frames_aarch64() {
    install_without_frames::<Aarch64>();
}

/// A TLB that remembers what was invalidated, in front of the software MMU.
struct RecordingTlb<'a, 'm, F: PagingFormat> {
    mmu: &'a Mmu<'m, F>,
    pages: std::cell::RefCell<Vec<u64>>,
    full: std::cell::Cell<u32>,
}

impl<'a, 'm, F: PagingFormat> RecordingTlb<'a, 'm, F> {
    fn new(mmu: &'a Mmu<'m, F>) -> Self {
        Self {
            mmu,
            pages: Default::default(),
            full: Default::default(),
        }
    }

    /// Whether the page or block at `va` (of `span` bytes) was invalidated.
    fn invalidated(&self, va: u64, span: u64) -> bool {
        self.full.get() > 0
            || self
                .pages
                .borrow()
                .iter()
                .any(|&p| p.wrapping_sub(va) < span || va.wrapping_sub(p) < 4096)
    }
}

impl<F: PagingFormat> devpriv_paging::TlbInvalidate for RecordingTlb<'_, '_, F> {
    fn invalidate_page(&self, va: u64) {
        self.pages.borrow_mut().push(va);
        self.mmu.invalidate_page(va);
    }
    fn invalidate_all(&self) {
        self.full.set(self.full.get() + 1);
        self.mmu.invalidate_all();
    }
}

/// `unmap_with` hands back every leaf and software entry it removes — single entries,
/// whole subtrees beyond the eight kept inline, blocks — each after its translation was
/// invalidated, and frees every emptied table.
fn unmap_with_reports_every_removed_entry<F: PagingFormat>() {
    let memory = Memory::new(128);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    let mut expected = std::collections::BTreeMap::new();
    // 12 whole level-1 tables of 4 KiB pages (more subtrees than unmap keeps inline).
    w.table
        .map_range_with_max(0, 0, 24 * MIB, rw::<F>(), PageSize::Size4KiB, &mut alloc)
        .unwrap()
        .ignore();
    for va in (0..24 * MIB).step_by(4096) {
        let raw = F::encode(
            &Entry::Leaf {
                pfn: Pfn::containing(va),
                size: PageSize::Size4KiB,
                attrs: rw::<F>(),
            },
            Level::L1,
        )
        .unwrap();
        expected.insert(va, (Level::L1, raw));
    }
    // A 2 MiB block and a 2 MiB device-private entry.
    w.table
        .map(
            24 * MIB,
            Pfn::containing(64 * MIB),
            PageSize::Size2MiB,
            rw::<F>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    let block = w.table.entry_at(24 * MIB, Level::L2).unwrap();
    expected.insert(24 * MIB, (Level::L2, F::encode(&block, Level::L2).unwrap()));
    let dp = device_private::<F>(0x400);
    w.table
        .install(26 * MIB, Level::L2, &dp, &mut alloc)
        .unwrap()
        .ignore();
    expected.insert(26 * MIB, (Level::L2, F::encode(&dp, Level::L2).unwrap()));
    // 40 single device-private entries in a partly covered table (more than a batch).
    for i in 0..40u64 {
        let va = 28 * MIB + i * 4096;
        let e = device_private::<F>(0x1000 + i);
        w.table
            .install(va, Level::L1, &e, &mut alloc)
            .unwrap()
            .ignore();
        expected.insert(va, (Level::L1, F::encode(&e, Level::L1).unwrap()));
    }
    let keep = 28 * MIB + 40 * 4096;
    w.table
        .install(keep, Level::L1, &device_private::<F>(0x9999), &mut alloc)
        .unwrap()
        .ignore();
    // Fill the TLB with translations that must be gone before their entry is handed back.
    for va in (0..26 * MIB).step_by(MIB as usize / 2) {
        assert!(w.mmu.access(va, Access::Write).is_ok());
    }
    let tlb = RecordingTlb::new(&w.mmu);
    let mut reported = std::collections::BTreeMap::new();
    w.table
        .unmap_with(0, keep, &mut alloc, &tlb, |removed| {
            let span = removed.level().entry_span();
            if F::is_valid(removed.raw(), removed.level()) {
                assert!(
                    tlb.invalidated(removed.va(), span),
                    "{removed:?} handed back before its invalidation"
                );
            }
            assert!(removed.entry().is_ok());
            let old = reported.insert(removed.va(), (removed.level(), removed.raw()));
            assert!(old.is_none(), "{removed:?} handed back twice");
        })
        .unwrap()
        .flush(&w.mmu);
    assert_eq!(reported, expected);
    // The entry past the range stays, with the one table that holds it.
    assert!(matches!(
        w.table.lookup(keep),
        Ok((Level::L1, Entry::Software(_)))
    ));
    assert_eq!(memory.live_frames(), root_level::<F>().number() as usize);
    w.table
        .unmap(keep, 4096, &mut alloc, &w.mmu)
        .unwrap()
        .flush(&w.mmu);
    w.finish();
}

#[test]
fn unmap_with_reports_every_removed_entry_x86_64() {
    unmap_with_reports_every_removed_entry::<X86_64>();
}

#[test]
fn unmap_with_reports_every_removed_entry_aarch64() {
    unmap_with_reports_every_removed_entry::<Aarch64>();
}

/// `destroy_with` hands back every leaf and software entry, with canonical addresses.
fn destroy_with_reports_every_entry<F: PagingFormat>(high: u64) {
    let memory = Memory::new(32);
    let w = world::<F>(&memory);
    let mut alloc = &memory;
    let mut expected = std::collections::BTreeSet::new();
    for (va, level) in [
        (0x1000, Level::L1),
        (high, Level::L1),
        (high + 4 * MIB, Level::L2),
        (GIB, Level::L2),
    ] {
        let e = device_private::<F>((va >> 12) & 0xff_ffff);
        w.table.install(va, level, &e, &mut alloc).unwrap().ignore();
        expected.insert((va, level, F::encode(&e, level).unwrap()));
    }
    let mut seen = std::collections::BTreeSet::new();
    w.table.destroy_with(&mut alloc, |r| {
        assert!(seen.insert((r.va(), r.level(), r.raw())));
    });
    assert_eq!(seen, expected);
    assert_eq!(memory.live_frames(), 0);
}

#[test]
fn destroy_with_reports_every_entry_x86_64() {
    // The top of the canonical upper half.
    destroy_with_reports_every_entry::<X86_64>(0xffff_ffff_ff00_0000);
}

#[test]
fn destroy_with_reports_every_entry_aarch64() {
    destroy_with_reports_every_entry::<Aarch64>(0x7f_ff00_0000);
}

/// `slot` reads the one entry at a level and replaces it by compare-exchange.
fn slot_by_address<F: PagingFormat>() {
    let memory = Memory::new(16);
    let w = world::<F>(&memory);
    let mut alloc = &memory;
    let dp = device_private::<F>(7);
    w.table
        .install(0x20_3000, Level::L1, &dp, &mut alloc)
        .unwrap()
        .ignore();
    let mut slot = w.table.slot(0x20_3abc, Level::L1).unwrap();
    assert_eq!(slot.va(), 0x20_3000);
    assert_eq!(slot.level(), Level::L1);
    assert_eq!(slot.entry(), Ok(dp));
    let migration = Entry::Software(SoftwareEntry::new(SoftwareKind::DeviceMigration {
        access: MigrationAccess::Write,
        index: DeviceIndex::new(7),
        young: false,
        dirty: false,
    }));
    slot.replace(&migration).unwrap().flush(&w.mmu);
    assert_eq!(w.table.lookup(0x20_3000).unwrap().1, migration);
    // A stale slot loses the compare-exchange.
    let mut stale = w.table.slot(0x20_3000, Level::L1).unwrap();
    w.table
        .slot(0x20_3000, Level::L1)
        .unwrap()
        .replace(&Entry::Absent)
        .unwrap()
        .ignore();
    assert!(matches!(
        stale.replace(&dp),
        Err(ReplaceError::Raced { current: 0 })
    ));
    // An empty slot under an existing table is a slot; above it, it is not.
    assert_eq!(
        w.table.slot(0x20_4000, Level::L1).unwrap().entry(),
        Ok(Entry::Absent)
    );
    assert_eq!(
        w.table.slot(0x40_0000, Level::L1).err(),
        Some(PagingError::NotMapped { va: 0x40_0000 })
    );
    assert_eq!(
        w.table.slot(0x20_0000, Level::L2).err(),
        Some(PagingError::IsTable {
            va: 0x20_0000,
            level: Level::L2
        })
    );
    w.table
        .install(0x60_0000, Level::L2, &dp, &mut alloc)
        .unwrap()
        .ignore();
    assert_eq!(
        w.table.slot(0x60_1000, Level::L1).err(),
        Some(PagingError::PartialBlock {
            va: 0x60_0000,
            level: Level::L2
        })
    );
    assert!(matches!(
        w.table.slot(1 << 60, Level::L1),
        Err(PagingError::OutOfRange { .. })
    ));
    assert!(matches!(
        w.table.slot(0, Level::L5),
        Err(PagingError::OutOfRange { .. })
    ));
    let mut alloc = &memory;
    w.table.destroy(&mut alloc);
    assert_eq!(memory.live_frames(), 0);
}

#[test]
fn slot_by_address_x86_64() {
    slot_by_address::<X86_64>();
}

#[test]
fn slot_by_address_aarch64() {
    slot_by_address::<Aarch64>();
}

/// Frames whose numbers no table entry can hold (x86_64 has 40 bits of frame number):
/// the allocator hands out real frames of `memory` with bit 40 set, the mapper ignores
/// that bit.
struct UnencodableFrames<'m>(&'m Memory);

const TOO_BIG: u64 = 1 << 40;

impl FrameAllocator for UnencodableFrames<'_> {
    fn allocate(&mut self) -> Result<Pfn, devpriv_paging::OutOfFrames> {
        let mut inner = self.0;
        Ok(Pfn::new(inner.allocate()?.number() | TOO_BIG))
    }

    fn free(&mut self, frame: Pfn) {
        let mut inner = self.0;
        inner.free(Pfn::new(frame.number() & !TOO_BIG));
    }
}

#[derive(Clone, Copy)]
struct MaskingMapper<'m>(&'m Memory);

// SAFETY: every frame number is mapped to a frame of the model memory, which only page
// tables use.
unsafe impl devpriv_paging::PhysMapper for MaskingMapper<'_> {
    fn table(&self, frame: Pfn) -> core::ptr::NonNull<devpriv_paging::TableEntries> {
        self.0.table(Pfn::new(frame.number() & !TOO_BIG))
    }
}

/// A split whose new table cannot be put in an entry fails and gives the frame back.
#[test]
fn split_returns_its_frame_when_the_table_cannot_be_encoded() {
    let memory = Memory::new(16);
    let mut alloc = &memory;
    let mut table =
        PageTable::<X86_64, _>::new(Level::L4, MaskingMapper(&memory), &mut alloc).unwrap();
    table
        .map(
            2 * MIB,
            Pfn::new(0x200),
            PageSize::Size2MiB,
            rw::<X86_64>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    let before = memory.live_frames();
    let result = table.split(
        2 * MIB,
        &mut UnencodableFrames(&memory),
        &devpriv_paging::NoInvalidate,
    );
    assert!(
        matches!(result, Err(PagingError::Encode(EncodeError::FrameTooLarge))),
        "{result:?}"
    );
    assert_eq!(memory.live_frames(), before, "the new table's frame leaked");
    assert!(matches!(
        table.lookup(2 * MIB),
        Ok((Level::L2, Entry::Leaf { .. }))
    ));
    table.destroy(&mut alloc);
    assert_eq!(memory.live_frames(), 0);
}

/// The raw level-`level` entry for `va` in a table of model memory.
fn raw_entry<'m, F: PagingFormat>(
    memory: &'m Memory,
    table: &PageTable<F, &'m Memory>,
    va: u64,
    level: Level,
) -> &'m core::sync::atomic::AtomicU64 {
    let mut frame = table.root();
    let mut at = table.root_level();
    loop {
        // SAFETY: model table frames are arrays of atomic words that live as long as
        // the memory.
        let entries = unsafe { memory.table(frame).as_ref() };
        let entry = &entries[at.table_index(va)];
        if at == level {
            return entry;
        }
        frame = F::table_pfn(entry.load(core::sync::atomic::Ordering::Acquire), at)
            .expect("a table on the way");
        at = at.next_lower().unwrap();
    }
}

/// A hardware-valid entry that does not decode is reported by `protect`, not skipped;
/// the leaves changed before it are invalidated.
#[test]
fn protect_reports_a_leaf_it_cannot_read() {
    let memory = Memory::new(16);
    let mut w = world::<X86_64>(&memory);
    let mut alloc = &memory;
    w.table
        .map(
            0,
            Pfn::new(0x42),
            PageSize::Size4KiB,
            rw::<X86_64>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    w.table
        .map(
            2 * MIB,
            Pfn::new(0x400),
            PageSize::Size2MiB,
            rw::<X86_64>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    assert_eq!(w.mmu.access(0, Access::Write), Ok(0x42000));
    // Bit 13 of a 2 MiB leaf is reserved (the frame is 2 MiB aligned).
    let slot = raw_entry(&memory, &w.table, 2 * MIB, Level::L2);
    let good = slot.load(core::sync::atomic::Ordering::Relaxed);
    slot.store(good | 1 << 13, core::sync::atomic::Ordering::Relaxed);
    let result = w.table.protect(0, 4 * MIB, |_| ro::<X86_64>(), &w.mmu);
    assert!(
        matches!(result, Err(PagingError::Corrupt { va, level: Level::L2, .. }) if va == 2 * MIB),
        "{result:?}"
    );
    // The page before it was changed, and its old translation invalidated.
    assert_eq!(w.mmu.access(0, Access::Write), Err(MmuError::ReadOnly));
    slot.store(good, core::sync::atomic::Ordering::Relaxed);
    w.finish();
}

/// A full flush that keeps global translations, as an x86_64 CR3 reload does: what
/// `X86_64Tlb::invalidate_all` did before it toggled CR4.PGE (or used INVPCID).
struct KeepsGlobal<'a, 'm>(&'a Mmu<'m, X86_64>);

impl TlbInvalidate for KeepsGlobal<'_, '_> {
    fn invalidate_page(&self, va: u64) {
        self.0.invalidate_page(va)
    }

    fn invalidate_all(&self) {
        self.0.invalidate_non_global()
    }
}

/// Unmapping more than `FULL_FLUSH_THRESHOLD` global pages escalates to a full flush,
/// which must drop their translations: with one that keeps global entries the MMU model
/// finds them stale; with one that does not, they are gone.
#[test]
fn a_full_flush_drops_global_translations() {
    let global = <X86_64 as devpriv_pte::PteFormat>::LeafAttributes::from_property(PageProperty {
        writable: true,
        global: true,
        ..PageProperty::default()
    });
    let pages = devpriv_paging::FULL_FLUSH_THRESHOLD + 8;
    for keeps_global in [true, false] {
        let memory = Memory::new(16);
        let mut w = world::<X86_64>(&memory);
        let mut alloc = &memory;
        // A page that stays keeps the level-1 table alive: the unmap flushes by token.
        w.table
            .map_range(0, 0x100_0000, (pages + 1) * 0x1000, global, &mut alloc)
            .unwrap()
            .ignore();
        for p in 0..pages {
            w.mmu.access(p * 0x1000, Access::Read).unwrap();
        }
        let tlb = KeepsGlobal(&w.mmu);
        let flush = w
            .table
            .unmap(0, pages * 0x1000, &mut alloc, &w.mmu)
            .unwrap();
        assert!(flush.pages() > devpriv_paging::FULL_FLUSH_THRESHOLD);
        if keeps_global {
            flush.flush(&tlb);
            assert!(matches!(
                w.mmu.access(0, Access::Read),
                Err(MmuError::Stale { .. })
            ));
            w.mmu.invalidate_all();
        } else {
            flush.flush(&w.mmu);
            assert!(matches!(
                w.mmu.access(0, Access::Read),
                Err(MmuError::NotMapped { .. })
            ));
        }
        w.table
            .unmap(pages * 0x1000, 0x1000, &mut alloc, &w.mmu)
            .unwrap()
            .flush(&w.mmu);
        if !keeps_global {
            w.finish();
        }
    }
}

/// Single-page unmaps free a level-1 table exactly when its last live entry goes,
/// whoever else changed its entries meanwhile: the table's live-entry count (made by
/// `map_range`, kept by `map` and `unmap`) must never say "live" once the table is
/// empty. Each round sets up two 2 MiB tables the same way, then empties both in a
/// scattered order, alternating between them (so that no call is in the table the
/// last one used, and every call goes by the count where there is one), and checks
/// after every unmap that each table is linked exactly while a page of it is left:
/// - 0: `map_range` made the tables (their counts are 512);
/// - 1: `map_range` into tables that single-page `map`s had started;
/// - 2: a cursor cleared most pages (a `&self` path the counts do not follow), and only
///   the pages left are unmapped;
/// - 3: `install` added pages (another `&self` path);
/// - 4: pages unmapped in address order first (the path that drops a count).
///
/// Then `install` links an empty table where each was, and one unmap frees it.
fn tables_are_freed_when_their_last_page_goes<F: PagingFormat>() {
    let memory = Memory::new(64);
    let mut w = world::<F>(&memory);
    let mut alloc = &memory;
    let bases = [5 * GIB + 6 * MIB, 5 * GIB + 8 * MIB];
    // A page elsewhere in the gigabyte keeps the level-2 table (and the counts of the
    // tables below it) from going with the two tables.
    let anchor = 5 * GIB + 100 * MIB;
    w.table
        .map(
            anchor,
            Pfn::new(1),
            PageSize::Size4KiB,
            rw::<F>(),
            &mut alloc,
        )
        .unwrap()
        .ignore();
    let empty = memory.live_frames();
    let page_va = |table: usize, page: u64| bases[table] + page * 0x1000;
    let linked = |w: &World<'_, F>, table: usize| {
        matches!(
            w.table.entry_at(bases[table], Level::L2),
            Ok(Entry::Table { .. })
        )
    };
    for round in 0..5 {
        let mut mapped = [[false; 512]; 2];
        for t in 0..2 {
            if round == 1 {
                for page in [3u64, 200, 511] {
                    w.table
                        .map(
                            page_va(t, page),
                            Pfn::new(page),
                            PageSize::Size4KiB,
                            rw::<F>(),
                            &mut alloc,
                        )
                        .unwrap()
                        .ignore();
                    mapped[t][page as usize] = true;
                }
                // The rest, in two range calls around the pages already there.
                for (first, last) in [(4u64, 199u64), (201, 510)] {
                    w.table
                        .map_range(
                            page_va(t, first),
                            first * 0x1000,
                            (last - first + 1) * 0x1000,
                            rw::<F>(),
                            &mut alloc,
                        )
                        .unwrap()
                        .ignore();
                    mapped[t][first as usize..=last as usize].fill(true);
                }
            } else {
                w.table
                    .map_range_with_max(
                        bases[t],
                        0,
                        2 * MIB,
                        rw::<F>(),
                        PageSize::Size4KiB,
                        &mut alloc,
                    )
                    .unwrap()
                    .ignore();
                mapped[t].fill(true);
            }
            match round {
                2 => {
                    for mut slot in w.table.cursor(bases[t], 2 * MIB).unwrap() {
                        let page = (slot.va() - bases[t]) / 0x1000;
                        if page % 97 != 5 {
                            slot.replace(&Entry::Absent).unwrap().flush(&w.mmu);
                            mapped[t][page as usize] = false;
                        }
                    }
                }
                3 => {
                    // Free some pages, then put some of them back through `install`.
                    for page in 0..64u64 {
                        w.unmap(page_va(t, page), 0x1000);
                        mapped[t][page as usize] = false;
                    }
                    for page in (0..64u64).step_by(3) {
                        let leaf = Entry::Leaf {
                            pfn: Pfn::new(page),
                            size: PageSize::Size4KiB,
                            attrs: rw::<F>(),
                        };
                        w.table
                            .install(page_va(t, page), Level::L1, &leaf, &mut alloc)
                            .unwrap()
                            .ignore();
                        mapped[t][page as usize] = true;
                    }
                }
                4 => {
                    for page in 100..300u64 {
                        w.unmap(page_va(t, page), 0x1000);
                        mapped[t][page as usize] = false;
                    }
                }
                _ => {}
            }
        }
        // A scattered order (a multiplier coprime with 512), each page of one table
        // then the same page of the other.
        for step in 0..512u64 {
            let page = (step * 173 + 29) % 512;
            for (t, table_pages) in mapped.iter_mut().enumerate() {
                if round == 2 && !table_pages[page as usize] {
                    continue;
                }
                w.unmap(page_va(t, page), 0x1000);
                table_pages[page as usize] = false;
                let left = table_pages.iter().filter(|&&m| m).count();
                assert_eq!(
                    linked(&w, t),
                    left > 0,
                    "round {round}, table {t}, page {page}: {left} pages left"
                );
                assert!(w.table.translate(page_va(t, page)).is_none());
            }
        }
        assert_eq!(memory.live_frames(), empty, "round {round}: tables kept");
        // A new, empty table where a counted one was freed (`install` of an absent
        // entry links the tables down to its slot and counts nothing): an unmap there
        // frees it, whatever count the freed table had.
        for t in 0..2 {
            w.table
                .install(page_va(t, 7), Level::L1, &Entry::Absent, &mut alloc)
                .unwrap()
                .ignore();
            assert!(linked(&w, t), "round {round}, table {t}: installed");
            w.unmap(page_va(t, 7), 0x1000);
            assert!(!linked(&w, t), "round {round}, table {t}: empty table kept");
        }
        assert_eq!(memory.live_frames(), empty, "round {round}: tables kept");
    }
    w.unmap(anchor, 0x1000);
    w.finish();
}

#[test]
fn tables_are_freed_when_their_last_page_goes_x86_64() {
    tables_are_freed_when_their_last_page_goes::<X86_64>();
}

#[test]
fn tables_are_freed_when_their_last_page_goes_aarch64() {
    tables_are_freed_when_their_last_page_goes::<Aarch64>();
}

/// aarch64 translates an address and its upper-half (TTBR1) form through the same
/// tables, so unmaps through either form must keep the same live-entry counts: a count
/// kept under one form and missed by the other would leave an emptied table linked, or
/// hand a freed table's count to a new table at its place.
#[test]
fn upper_half_unmaps_keep_the_counts_of_their_lower_half() {
    let memory = Memory::new(32);
    let mut alloc = &memory;
    let mut t = PageTable::<Aarch64, _>::new(Level::L3, &memory, &mut alloc).unwrap();
    let high = 0xffff_ff80_0000_0000u64;
    let l1_linked = |t: &PageTable<Aarch64, &Memory>| {
        matches!(t.entry_at(0, Level::L2), Ok(Entry::Table { .. }))
    };
    let unmap = |t: &mut PageTable<Aarch64, &Memory>, va: u64| {
        let mut alloc = &memory;
        t.unmap(va, 0x1000, &mut alloc, &NoInvalidate)
            .unwrap()
            .ignore();
    };
    // A table made by map_range (counted: 2), emptied one page through each form.
    t.map_range(0, 0, 0x2000, rw::<Aarch64>(), &mut alloc)
        .unwrap()
        .ignore();
    unmap(&mut t, high);
    assert!(l1_linked(&t));
    unmap(&mut t, 0x1000);
    assert!(!l1_linked(&t), "the emptied table stays linked");
    // A page elsewhere keeps the level-2 table; a counted table freed through the upper
    // form, then a new one at its place through the lower form.
    t.map(
        0x20_0000,
        Pfn::new(9),
        PageSize::Size4KiB,
        rw::<Aarch64>(),
        &mut alloc,
    )
    .unwrap()
    .ignore();
    t.map_range(0, 0, 0x2000, rw::<Aarch64>(), &mut alloc)
        .unwrap()
        .ignore();
    unmap(&mut t, high);
    unmap(&mut t, high + 0x1000);
    assert!(!l1_linked(&t));
    t.map(
        0,
        Pfn::new(3),
        PageSize::Size4KiB,
        rw::<Aarch64>(),
        &mut alloc,
    )
    .unwrap()
    .ignore();
    unmap(&mut t, 0);
    assert!(!l1_linked(&t), "the new table took the freed one's count");
    unmap(&mut t, 0x20_0000);
    assert_eq!(memory.live_frames(), 1, "tables left");
    t.destroy(&mut alloc);
}
