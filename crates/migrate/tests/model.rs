//! A reference model of where every page lives and what it holds, driven by random
//! sequences of CPU accesses, migrations to either device and back, faults, evictions,
//! unmaps, protection changes, exclusive access, snapshots and migrations racing an
//! unmap. After every step each page's entry, bytes, folio and frame are checked
//! against the model.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use devpriv_migrate::*;
use devpriv_paging::PagingFormat;
use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{
    DeviceIndex, Entry, LeafAttributes, Level, PageSize, Pfn, SoftwareEntry, SoftwareKind,
};
use proptest::prelude::*;

/// Two 2 MiB chunks.
const CHUNKS: u64 = 2;
const PAGES: u64 = CHUNKS * 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    Absent,
    Ram,
    /// On device 0 or 1.
    Dev(usize),
    /// In RAM, held exclusively by a device.
    Exclusive,
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        page: u64,
        value: u64,
    },
    Read {
        page: u64,
    },
    ToDevice {
        first: u64,
        pages: u64,
        dev: usize,
        compound: bool,
        declines: u64,
    },
    ToRam {
        first: u64,
        pages: u64,
        dev: usize,
    },
    Evict {
        dev: usize,
    },
    Unmap {
        first: u64,
        pages: u64,
    },
    MapHuge {
        chunk: u64,
    },
    Protect {
        first: u64,
        pages: u64,
    },
    Exclusive {
        page: u64,
        dev: usize,
    },
    Snapshot {
        first: u64,
        pages: u64,
    },
    RacingUnmap {
        first: u64,
        pages: u64,
        dev: usize,
        cut: u64,
        cut_pages: u64,
    },
    Policy {
        whole: bool,
    },
    /// Make 2 MiB allocations fail (or not): of RAM, or of device memory.
    FailLarge {
        ram: bool,
        on: bool,
    },
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        1 => (0..PAGES, 1u64..16).prop_map(|(f, n)| (f, n.min(PAGES - f))),
        2 => (0..CHUNKS).prop_map(|c| (c * 512, 512)),
        1 => Just((0, PAGES)),
        1 => (0..PAGES, 1..PAGES).prop_map(|(f, n)| (f, n.min(PAGES - f))),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PAGES, any::<u64>()).prop_map(|(page, value)| Op::Write { page, value: value | 1 }),
        3 => (0..PAGES).prop_map(|page| Op::Read { page }),
        4 => (range(), 0..2usize, any::<bool>(), 0u64..4)
            .prop_map(|((first, pages), dev, compound, declines)| Op::ToDevice { first, pages, dev, compound, declines }),
        2 => (range(), 0..2usize).prop_map(|((first, pages), dev)| Op::ToRam { first, pages, dev }),
        1 => (0..2usize).prop_map(|dev| Op::Evict { dev }),
        2 => range().prop_map(|(first, pages)| Op::Unmap { first, pages }),
        2 => (0..CHUNKS).prop_map(|chunk| Op::MapHuge { chunk }),
        1 => range().prop_map(|(first, pages)| Op::Protect { first, pages }),
        1 => (0..PAGES, 0..2usize).prop_map(|(page, dev)| Op::Exclusive { page, dev }),
        2 => range().prop_map(|(first, pages)| Op::Snapshot { first, pages }),
        1 => (range(), 0..2usize, 0..PAGES, 1u64..8)
            .prop_map(|((first, pages), dev, cut, cut_pages)| Op::RacingUnmap { first, pages, dev, cut, cut_pages }),
        1 => any::<bool>().prop_map(|whole| Op::Policy { whole }),
        2 => (any::<bool>(), any::<bool>()).prop_map(|(ram, on)| Op::FailLarge { ram, on }),
    ]
}

struct Model {
    loc: Vec<Loc>,
    value: Vec<u64>,
}

impl Model {
    fn va(page: u64) -> u64 {
        BASE + page * KIB4
    }

    fn set(&mut self, pages: impl IntoIterator<Item = u64>, loc: Loc) {
        for p in pages {
            self.loc[p as usize] = loc;
        }
    }
}

struct Harness<F: PagingFormat + 'static> {
    w: World<F>,
    spaces: &'static AddressSpaces<'static, P<F>, 2>,
    m: Model,
}

/// Whether a driver declines word `i` under decline pattern `d`.
fn declined(i: usize, d: u64) -> bool {
    d != 0 && (i as u64 * 2_654_435_761) % 7 < d
}

impl<F: PagingFormat> Harness<F> {
    fn new() -> Self {
        let w = world::<F>(2048, 4096);
        let spaces: &'static AddressSpaces<'static, P<F>, 2> =
            Box::leak(Box::new(AddressSpaces::new()));
        spaces.register(w.space).unwrap();
        Self {
            w,
            spaces,
            m: Model {
                loc: vec![Loc::Absent; PAGES as usize],
                value: vec![0; PAGES as usize],
            },
        }
    }

    fn device(&self, dev: usize) -> &'static Device {
        if dev == 0 {
            self.w.device
        } else {
            self.w.other
        }
    }

    fn dev_of(&self, pagemap: &devpriv_pagemap::DevicePagemap<'_>) -> usize {
        if std::ptr::eq(pagemap, self.w.device.pagemap()) {
            0
        } else {
            1
        }
    }

    /// The entry mapping `page` and its level.
    fn entry(&self, page: u64) -> (Level, Entry<F>) {
        self.w.space.read().lookup(Model::va(page)).unwrap()
    }

    /// Whether a range cuts through a 2 MiB entry.
    fn cuts_huge(&self, first: u64, pages: u64) -> bool {
        [first, first + pages - 1].iter().any(|&p| {
            let (level, e) = self.entry(p);
            level == Level::L2 && !matches!(e, Entry::Absent) && {
                let chunk = p / 512;
                first > chunk * 512 || first + pages < (chunk + 1) * 512
            }
        })
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Write { page, value } => {
                // Word 0 through the CPU (faulting the page in), the other 511 words
                // straight into the frame it is mapped to: the check then compares
                // every byte of every page.
                self.w.cpu().write(Model::va(page), value).unwrap();
                self.after_touch(page);
                let Entry::Leaf { pfn, size, .. } = self.entry(page).1 else {
                    panic!("page {page} is not present after a CPU write");
                };
                let frame = Pfn::new(pfn.number() + page % size.frames());
                for word in &self.w.ram.words(frame)[1..] {
                    word.store(value, Ordering::Relaxed);
                }
                self.m.value[page as usize] = value;
            }
            Op::Read { page } => {
                let got = self.w.cpu().read(Model::va(page)).unwrap();
                assert_eq!(got, self.m.value[page as usize], "page {page}");
                self.after_touch(page);
            }
            Op::FailLarge { ram, on } => {
                if ram {
                    self.w
                        .ram
                        .fail_large_allocations(if on { u32::MAX } else { 0 });
                } else {
                    let failures = if on {
                        devpriv_pagemap::AllocFailures::Always
                    } else {
                        devpriv_pagemap::AllocFailures::Never
                    };
                    for dev in 0..2 {
                        self.device(dev)
                            .pagemap()
                            .inject_alloc_failures(PageSize::Size2MiB, failures);
                    }
                }
            }
            Op::Policy { whole } => {
                for dev in [self.w.device, self.w.other] {
                    *dev.policy.lock().unwrap() = if whole {
                        FaultPolicy::Whole
                    } else {
                        FaultPolicy::Page
                    };
                }
            }
            Op::ToDevice {
                first,
                pages,
                dev,
                compound,
                declines,
            } => self.migrate_to_device(first, pages, dev, compound, declines, None),
            Op::RacingUnmap {
                first,
                pages,
                dev,
                cut,
                cut_pages,
            } => {
                let cut_pages = cut_pages.min(PAGES - cut);
                self.migrate_to_device(first, pages, dev, false, 0, Some((cut, cut_pages)))
            }
            Op::ToRam { first, pages, dev } => {
                let device = self.device(dev);
                let n = pages as usize;
                let mut src = vec![MigratePfn::EMPTY; n];
                let mut dst = vec![MigratePfn::EMPTY; n];
                let mut m = Migration::setup(MigrateVma {
                    address_space: self.w.space,
                    start: Model::va(first),
                    end: Model::va(first + pages),
                    select: Select::DEVICE_PRIVATE | Select::COMPOUND,
                    owner: device.owner,
                    fault: None,
                    src: &mut src,
                    dst: &mut dst,
                })
                .unwrap();
                // Holes are collected too: decline them.
                let collected: BTreeSet<u64> = m
                    .src()
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.is_valid() && s.is_migrating())
                    .flat_map(|(i, s)| (0..s.size().frames()).map(move |k| first + i as u64 + k))
                    .collect();
                let expected: BTreeSet<u64> = (first..first + pages)
                    .filter(|&p| self.m.loc[p as usize] == Loc::Dev(dev))
                    .collect();
                // A 2 MiB folio only partly in the range is split and its pages in the
                // range collected.
                assert_eq!(collected, expected, "collected by migrate-to-ram");
                device.fill_system_destinations(&mut m);
                m.pages().finalize();
                self.m.set(expected, Loc::Ram);
            }
            Op::Evict { dev } => {
                let device = self.device(dev);
                let pm = device.pagemap();
                for _ in 0..4 {
                    let n = pm.pages() as usize;
                    let mut src = vec![MigratePfn::EMPTY; n];
                    let mut dst = vec![MigratePfn::EMPTY; n];
                    let mut m = Migration::evict(
                        self.w.devices,
                        self.spaces,
                        self.w.ram,
                        Evict::pagemap(pm),
                        &mut src,
                        &mut dst,
                    )
                    .unwrap();
                    device.fill_system_destinations(&mut m);
                    m.pages().finalize();
                }
                assert_eq!(pm.allocated_pages(), 0);
                for l in &mut self.m.loc {
                    if *l == Loc::Dev(dev) {
                        *l = Loc::Ram;
                    }
                }
            }
            Op::Unmap { first, pages } => {
                let ram = self.w.ram;
                let result = self.w.space.unmap(Model::va(first), pages * KIB4, |r| {
                    free_removed::<F>(ram, r)
                });
                // A 2 MiB page the range cuts through is split; the rest stays.
                result.unwrap();
                for p in first..first + pages {
                    self.m.loc[p as usize] = Loc::Absent;
                    self.m.value[p as usize] = 0;
                }
            }
            Op::MapHuge { chunk } => {
                let pages = chunk * 512..(chunk + 1) * 512;
                if !pages.clone().all(|p| self.m.loc[p as usize] == Loc::Absent)
                    || !matches!(self.entry(chunk * 512), (Level::L2, Entry::Absent))
                {
                    return;
                }
                use devpriv_migrate::SystemMemory;
                let Some(pfn) = self.w.ram.allocate(PageSize::Size2MiB) else {
                    return;
                };
                for k in 0..512 {
                    let v = 0x1000 + chunk * 512 + k;
                    self.w
                        .ram
                        .fill(Pfn::new(pfn.number() + k), PageSize::Size4KiB, |_| v);
                    self.m.value[(chunk * 512 + k) as usize] = v;
                }
                self.w
                    .space
                    .map_page(Model::va(chunk * 512), pfn, PageSize::Size2MiB, true)
                    .unwrap();
                self.m.set(pages, Loc::Ram);
            }
            Op::Protect { first, pages } => {
                let result = self.w.space.protect(Model::va(first), pages * KIB4, false);
                result.unwrap();
                for p in first..first + pages {
                    if self.m.loc[p as usize] == Loc::Exclusive {
                        self.m.loc[p as usize] = Loc::Ram;
                    }
                }
            }
            Op::Exclusive { page, dev } => {
                let space = self.w.space;
                let mut fault_in = |va, write| model::anonymous_fault(space, va, write);
                let owner = self.device(dev).owner;
                let got =
                    make_device_exclusive(space, Model::va(page), owner, &mut fault_in).unwrap();
                self.after_touch(page);
                self.m.loc[page as usize] = Loc::Exclusive;
                drop(got);
            }
            Op::Snapshot { first, pages } => self.snapshot(first, pages),
        }
    }

    /// A CPU touched `page`: whatever held it (a device, an exclusive hand-over, an
    /// empty slot) gave it back to RAM; which neighbours came along depends on the
    /// folio the device had (read from the pagemap's split count is not needed: the
    /// check compares every page anyway, so mark exactly what is now in RAM).
    fn after_touch(&mut self, page: u64) {
        let before = self.m.loc[page as usize];
        self.m.loc[page as usize] = Loc::Ram;
        if let Loc::Dev(dev) = before {
            // A whole 2 MiB folio comes back with it if the driver moved it whole: the
            // other pages of the chunk that were on the same device and are now
            // present in RAM.
            let chunk = page / 512;
            for p in chunk * 512..(chunk + 1) * 512 {
                if self.m.loc[p as usize] == Loc::Dev(dev)
                    && matches!(self.entry(p).1, Entry::Leaf { .. })
                {
                    self.m.loc[p as usize] = Loc::Ram;
                }
            }
        }
    }

    fn migrate_to_device(
        &mut self,
        first: u64,
        pages: u64,
        dev: usize,
        compound: bool,
        declines: u64,
        cut: Option<(u64, u64)>,
    ) {
        let device = self.device(dev);
        let pm = device.pagemap();
        let n = pages as usize;
        let mut src = vec![MigratePfn::EMPTY; n];
        let mut dst = vec![MigratePfn::EMPTY; n];
        let mut select = Select::SYSTEM;
        if compound {
            select |= Select::COMPOUND;
        }
        let mut m = Migration::setup(MigrateVma {
            address_space: self.w.space,
            start: Model::va(first),
            end: Model::va(first + pages),
            select,
            owner: device.owner,
            fault: None,
            src: &mut src,
            dst: &mut dst,
        })
        .unwrap();
        let words: Vec<MigratePfn> = m.src().to_vec();
        let collected: BTreeSet<u64> = words
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_migrating())
            .flat_map(|(i, s)| (0..s.size().frames()).map(move |k| first + i as u64 + k))
            .collect();
        let expected: BTreeSet<u64> = (first..first + pages)
            .filter(|&p| matches!(self.m.loc[p as usize], Loc::Ram | Loc::Absent))
            .collect();
        assert_eq!(collected, expected, "collected by migrate-to-device");
        let mut moved = BTreeSet::new();
        for (i, s) in words.iter().enumerate() {
            if !s.is_migrating() || declined(i, declines) {
                continue;
            }
            let size = s.size();
            let copy = |folio: &devpriv_pagemap::LockedFolio<'_>, k: u64| match s.target() {
                Some(PageTarget::System(pfn)) => {
                    device.copy_to_device(folio.index(), Pfn::new(pfn.number() + k), folio.size())
                }
                _ => device.clear(folio.index(), folio.size()),
            };
            match pm.alloc_locked(size) {
                Ok(folio) => {
                    copy(&folio, 0);
                    m.set_device_destination(i, folio).unwrap();
                }
                Err(_) if size == PageSize::Size2MiB => {
                    // 4 KiB destinations: the 2 MiB source is split at commit.
                    for k in 0..512 {
                        let folio = pm.alloc_locked(PageSize::Size4KiB).unwrap();
                        copy(&folio, k);
                        m.set_device_destination(i + k as usize, folio).unwrap();
                    }
                }
                Err(e) => panic!("{e:?}"),
            }
            moved.extend((0..size.frames()).map(|k| first + i as u64 + k));
        }
        // An unmap between the steps abandons the collected pages it hits; a hole it
        // "unmaps" is still empty, and is populated at commit like any other.
        let cut_set: BTreeSet<u64> = match cut {
            Some((c, cn)) if !self.cuts_huge(c, cn) => {
                let ram = self.w.ram;
                self.w
                    .space
                    .unmap(Model::va(c), cn * KIB4, |r| free_removed::<F>(ram, r))
                    .unwrap();
                (c..c + cn)
                    .filter(|&p| self.m.loc[p as usize] != Loc::Absent)
                    .collect()
            }
            _ => BTreeSet::new(),
        };
        m.pages().finalize();
        for &p in &moved {
            if !cut_set.contains(&p) {
                if self.m.loc[p as usize] == Loc::Absent {
                    self.m.value[p as usize] = 0;
                }
                self.m.loc[p as usize] = Loc::Dev(dev);
            }
        }
        for &p in &cut_set {
            self.m.loc[p as usize] = Loc::Absent;
            self.m.value[p as usize] = 0;
        }
    }

    fn snapshot(&mut self, first: u64, pages: u64) {
        let mut pfns: Vec<HmmPfn> = vec![HmmPfn::none(); pages as usize];
        let mut range = HmmRange {
            start: Model::va(first),
            end: Model::va(first + pages),
            pfns: &mut pfns,
            default_flags: HmmPfn::none(),
            pfn_flags_mask: HmmPfn::none(),
            owner: Some(self.w.device.owner),
        };
        let space = self.w.space;
        let mut fault_in = |va, write| model::anonymous_fault(space, va, write);
        snapshot(space, &mut range, &mut fault_in).unwrap();
        for (i, word) in pfns.iter().enumerate() {
            let p = first + i as u64;
            match self.m.loc[p as usize] {
                Loc::Ram => assert!(
                    word.is_valid() && !word.is_device_private(),
                    "page {p}: {word:?}"
                ),
                Loc::Dev(0) => assert!(
                    word.is_valid() && word.is_device_private(),
                    "page {p}: {word:?}"
                ),
                _ => assert_eq!(*word, HmmPfn::none(), "page {p}"),
            }
        }
    }

    /// Every page's entry and bytes match the model; every folio and frame is
    /// accounted for; nothing is locked; the MMU saw no missing flush.
    fn check(&self) {
        let mut on_device = [0u64; 2];
        let mut in_ram = 0u64;
        let mut huge_frames = BTreeSet::new();
        for p in 0..PAGES {
            let (level, e) = self.entry(p);
            let want = self.m.value[p as usize];
            match (self.m.loc[p as usize], e) {
                (Loc::Absent, Entry::Absent) => {}
                (Loc::Ram, Entry::Leaf { pfn, size, attrs }) => {
                    let offset = p % size.frames();
                    let frame = Pfn::new(
                        pfn.number()
                            + if size == PageSize::Size2MiB {
                                offset
                            } else {
                                0
                            },
                    );
                    assert_whole(self.w.ram.words(frame), want, p, "in RAM");
                    let _ = attrs.property();
                    if size == PageSize::Size2MiB {
                        huge_frames.insert(pfn.number());
                    } else {
                        in_ram += 1;
                    }
                }
                (
                    Loc::Dev(dev),
                    Entry::Software(SoftwareEntry {
                        kind: SoftwareKind::DevicePrivate { index, .. },
                        ..
                    }),
                ) => {
                    let offset = if level == Level::L2 { p % 512 } else { 0 };
                    let page_index = DeviceIndex::new(index.number() + offset);
                    let page = self.w.devices.lookup(page_index).unwrap();
                    assert_eq!(
                        self.dev_of(page.pagemap()),
                        dev,
                        "page {p} on the wrong device"
                    );
                    let device = self.device(dev);
                    assert_whole(device.page_words(page_index), want, p, "on a device");
                    let folio = page.folio();
                    // The folio's reverse map names this address space and the virtual
                    // page its entry maps (the start of a 2 MiB entry).
                    let rmap = folio
                        .reverse_map()
                        .expect("a mapped folio has a reverse map");
                    assert_eq!(
                        rmap.address_space(),
                        self.w.space.id(),
                        "page {p}: rmap space"
                    );
                    let head_va = Model::va(p) & !(level.leaf_size().unwrap().bytes() - 1);
                    assert_eq!(rmap.virtual_page(), head_va >> 12, "page {p}: rmap page");
                    assert_eq!(
                        folio.size(),
                        level.leaf_size().unwrap(),
                        "entry and folio sizes"
                    );
                    assert_eq!(folio.refcount(), 1, "page {p}: the entry's reference only");
                    assert!(!folio.is_locked());
                    on_device[dev] += 1;
                }
                (
                    Loc::Exclusive,
                    Entry::Software(SoftwareEntry {
                        kind: SoftwareKind::DeviceExclusive { pfn },
                        ..
                    }),
                ) => {
                    assert_whole(self.w.ram.words(pfn), want, p, "held exclusively");
                    in_ram += 1;
                }
                (loc, e) => panic!("page {p}: model says {loc:?}, table has {e:?} at {level:?}"),
            }
        }
        for (dev, pages) in on_device.iter().enumerate() {
            assert_eq!(
                self.device(dev).pagemap().allocated_pages(),
                *pages,
                "device {dev} pages"
            );
        }
        assert_eq!(
            self.w.ram.live_frames() as u64,
            in_ram + 512 * huge_frames.len() as u64,
            "RAM frames"
        );
        assert_eq!(self.w.ram.locked_frames(), 0, "a frame is still locked");
        self.w.mmu.assert_clean();
    }
}

impl<F: PagingFormat> Harness<F> {
    /// Empties the address space and checks that everything came back, so that the
    /// next case starts from nothing.
    fn reset(&mut self) {
        let ram = self.w.ram;
        self.w.space.release(|r| {
            // RAM and exclusive pages go back to RAM; device pages are released by the
            // address space itself.
            free_removed::<F>(ram, r)
        });
        for dev in 0..2 {
            assert_eq!(
                self.device(dev).pagemap().allocated_pages(),
                0,
                "device {dev} leaked"
            );
            *self.device(dev).policy.lock().unwrap() = FaultPolicy::Whole;
        }
        assert_eq!(self.w.ram.live_frames(), 0, "RAM leaked");
        self.w.ram.fail_large_allocations(0);
        for dev in 0..2 {
            self.device(dev)
                .pagemap()
                .inject_alloc_failures(PageSize::Size2MiB, devpriv_pagemap::AllocFailures::Never);
        }
        self.w.mmu.assert_clean();
        self.m.loc.fill(Loc::Absent);
        self.m.value.fill(0);
    }
}

fn run<F: PagingFormat>(h: &std::sync::Mutex<Harness<F>>, ops: &[Op]) {
    // A failed case leaves the harness poisoned: start the next one from scratch.
    let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
    h.reset();
    for op in ops {
        h.run(op);
        h.check();
    }
}

/// One world per format for all cases: worlds are leaked (their borrows are
/// `'static`), so each case reuses it after emptying it.
fn x86_64() -> &'static std::sync::Mutex<Harness<X86_64>> {
    static H: std::sync::OnceLock<std::sync::Mutex<Harness<X86_64>>> = std::sync::OnceLock::new();
    H.get_or_init(|| std::sync::Mutex::new(Harness::new()))
}

fn aarch64() -> &'static std::sync::Mutex<Harness<Aarch64>> {
    static H: std::sync::OnceLock<std::sync::Mutex<Harness<Aarch64>>> = std::sync::OnceLock::new();
    H.get_or_init(|| std::sync::Mutex::new(Harness::new()))
}

/// 256 cases by default; `PROPTEST_CASES` overrides.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Longest operation sequence: Miri, which checks every step slowly, runs short ones.
const MAX_OPS: usize = if cfg!(miri) { 4 } else { 60 };

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn x86_64_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..MAX_OPS)) {
        run(x86_64(), &ops);
    }

    #[test]
    fn aarch64_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..MAX_OPS)) {
        run(aarch64(), &ops);
    }
}

/// Asserts that every word of a page holds `want`.
fn assert_whole(words: &[AtomicU64; 512], want: u64, page: u64, place: &str) {
    for (w, word) in words.iter().enumerate() {
        assert_eq!(
            word.load(Ordering::Relaxed),
            want,
            "page {page} word {w} {place}"
        );
    }
}
