//! A software MMU: a reference table walk over [`Memory`] and a TLB that changes only on
//! explicit invalidation.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::vec::Vec;

use devpriv_pte::{Entry, LeafAttributes, Level, Pfn};

use crate::bbm::raw_needs_break_before_make;
use crate::format::PagingFormat;
use crate::tlb::TlbInvalidate;

use super::memory::Memory;

/// The kind of access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A read.
    Read,
    /// A write (needs a writable leaf).
    Write,
}

/// What the walk found for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    /// The physical address.
    pub pa: u64,
    /// The level of the leaf.
    pub level: Level,
    /// The raw leaf entry.
    pub raw: u64,
    /// The table holding the leaf, and its index there.
    pub slot: (Pfn, usize),
}

/// Why an access did not translate, or why the model objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuError {
    /// A translation fault: the walk reached an invalid (absent or software) entry.
    NotMapped {
        /// The level of the invalid entry.
        level: Level,
        /// Its raw value.
        raw: u64,
    },
    /// A permission fault: a write to a read-only leaf.
    ReadOnly,
    /// The walk reached an entry the hardware would reject (reserved bits, a block where
    /// the level allows none, a frame outside simulated memory).
    BadEntry {
        /// The level.
        level: Level,
        /// The raw value.
        raw: u64,
    },
    /// The TLB holds a translation that no longer matches the tables: a flush was
    /// missed. The access used the stale translation.
    Stale {
        /// The address.
        va: u64,
        /// What the TLB used.
        cached: Walk,
        /// What the tables say now (`None`: not mapped any more).
        current: Option<Walk>,
    },
}

/// Which rule a [`Violation`] broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// A cached valid entry was replaced by a valid entry that needed break-before-make.
    BreakBeforeMake,
    /// The table holding a cached entry was freed before the entry was invalidated (the
    /// frame could be reused while a walker still trusts it).
    FreedBeforeInvalidate,
}

/// A change that broke an architectural rule, noticed at an invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub kind: ViolationKind,
    /// The address of the cached translation.
    pub va: u64,
    /// The raw entry the TLB held.
    pub cached: u64,
    /// The raw entry in its slot now.
    pub current: u64,
}

#[derive(Debug, Default)]
struct Tlb {
    /// Cached leaf translations, by (leaf start, level).
    entries: HashMap<(u64, u8), Walk>,
    violations: Vec<Violation>,
    page_invalidations: u64,
    full_invalidations: u64,
}

/// The MMU of one CPU walking a page table of format `F` in simulated [`Memory`].
///
/// [`access`](Self::access) translates through the TLB, filling it on a miss; a hit is
/// checked against a fresh walk and a mismatch is reported as [`MmuError::Stale`]. The
/// TLB changes only through the [`TlbInvalidate`] methods; each invalidation first
/// checks that no cached valid entry was overwritten by another valid entry in a way
/// that needed break-before-make, and that the table holding it was not freed while it
/// was cached (each recorded as a [`Violation`]).
pub struct Mmu<'m, F: PagingFormat> {
    memory: &'m Memory,
    root: Pfn,
    root_level: Level,
    tlb: Mutex<Tlb>,
    format: PhantomData<fn() -> F>,
}

impl<F: PagingFormat> core::fmt::Debug for Mmu<'_, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mmu")
            .field("root", &self.root)
            .field("root_level", &self.root_level)
            .finish_non_exhaustive()
    }
}

impl<'m, F: PagingFormat> Mmu<'m, F> {
    /// An MMU with an empty TLB whose translation base register holds `root`.
    pub fn new(memory: &'m Memory, root: Pfn, root_level: Level) -> Self {
        Self {
            memory,
            root,
            root_level,
            tlb: Mutex::new(Tlb::default()),
            format: PhantomData,
        }
    }

    /// Walks the tables for `va` with the format's decoder and level rules, ignoring
    /// the TLB.
    pub fn walk(&self, va: u64) -> Result<Walk, MmuError> {
        let mut table = self.root;
        let mut level = self.root_level;
        loop {
            let index = level.table_index(va);
            let raw = self
                .memory
                .read(table, index)
                .ok_or(MmuError::BadEntry { level, raw: 0 })?;
            if !F::is_valid(raw, level) {
                return Err(MmuError::NotMapped { level, raw });
            }
            match F::decode(raw, level) {
                Ok(Entry::Table { next, .. }) => {
                    if !self.memory.is_allocated(next) {
                        return Err(MmuError::BadEntry { level, raw });
                    }
                    table = next;
                    level = level
                        .next_lower()
                        .ok_or(MmuError::BadEntry { level, raw })?;
                }
                Ok(Entry::Leaf { pfn, size, .. }) => {
                    return Ok(Walk {
                        pa: pfn.phys_addr() + (va & (size.bytes() - 1)),
                        level,
                        raw,
                        slot: (table, index),
                    });
                }
                _ => return Err(MmuError::BadEntry { level, raw }),
            }
        }
    }

    fn permits(raw: u64, level: Level, access: Access) -> bool {
        match (access, F::leaf(raw, level)) {
            (Access::Read, _) => true,
            (Access::Write, Some((_, attrs))) => attrs.property().writable,
            (Access::Write, None) => false,
        }
    }

    /// Translates `va` for `access` as the hardware would: through the TLB if it holds
    /// the page, else by a walk that fills it. Returns the physical address.
    pub fn access(&self, va: u64, access: Access) -> Result<u64, MmuError> {
        let mut tlb = self.tlb.lock().unwrap();
        let cached = [Level::L1, Level::L2, Level::L3]
            .into_iter()
            .find_map(|level| {
                let start = va & !(level.entry_span() - 1);
                tlb.entries.get(&(start, level.number())).copied()
            });
        if let Some(cached) = cached {
            let current = self.walk(va).ok();
            let span = cached.level.entry_span();
            if current.map(|w| (w.pa & !(span - 1), w.raw)) != Some((cached.pa, cached.raw)) {
                // The stale translation: the translated address as the TLB gives it.
                let size = cached.level.entry_span();
                let pa = (cached.pa & !(size - 1)) + (va & (size - 1));
                let stale = Walk { pa, ..cached };
                return Err(MmuError::Stale {
                    va,
                    cached: stale,
                    current,
                });
            }
            let size = cached.level.entry_span();
            if !Self::permits(cached.raw, cached.level, access) {
                return Err(MmuError::ReadOnly);
            }
            return Ok((cached.pa & !(size - 1)) + (va & (size - 1)));
        }
        let walk = self.walk(va)?;
        if !Self::permits(walk.raw, walk.level, access) {
            return Err(MmuError::ReadOnly);
        }
        let span = walk.level.entry_span();
        let start = va & !(span - 1);
        let base = Walk {
            pa: walk.pa & !(span - 1),
            ..walk
        };
        tlb.entries.insert((start, walk.level.number()), base);
        Ok(walk.pa)
    }

    /// Cached translations.
    pub fn cached(&self) -> usize {
        self.tlb.lock().unwrap().entries.len()
    }

    /// The violations seen so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.tlb.lock().unwrap().violations.clone()
    }

    /// Panics if any violation was seen.
    pub fn assert_clean(&self) {
        let v = self.violations();
        assert!(v.is_empty(), "break-before-make violations: {v:x?}");
    }

    /// (page, full) invalidations so far.
    pub fn invalidations(&self) -> (u64, u64) {
        let tlb = self.tlb.lock().unwrap();
        (tlb.page_invalidations, tlb.full_invalidations)
    }

    /// Drops one cached translation after checking it for a break-before-make violation.
    fn drop_entry(&self, tlb: &mut Tlb, key: (u64, u8)) {
        let Some(cached) = tlb.entries.remove(&key) else {
            return;
        };
        let level = cached.level;
        let current = self.memory.read(cached.slot.0, cached.slot.1).unwrap_or(0);
        let kind = if !self.memory.is_allocated(cached.slot.0) {
            Some(ViolationKind::FreedBeforeInvalidate)
        } else if raw_needs_break_before_make::<F>(cached.raw, current, level) {
            Some(ViolationKind::BreakBeforeMake)
        } else {
            None
        };
        if let Some(kind) = kind {
            tlb.violations.push(Violation {
                kind,
                va: key.0,
                cached: cached.raw,
                current,
            });
        }
    }
}

impl<F: PagingFormat> Mmu<'_, F> {
    /// Drops every cached translation except those of global leaves: what an x86_64
    /// CR3 reload does. [`TlbInvalidate::invalidate_all`] must drop global ones too; a
    /// `TlbInvalidate` that calls this instead models an implementation that does not
    /// (and a test with it sees the stale global translations).
    pub fn invalidate_non_global(&self) {
        let mut tlb = self.tlb.lock().unwrap();
        tlb.full_invalidations += 1;
        let keys: Vec<_> = tlb
            .entries
            .iter()
            .filter(|(_, walk)| {
                !F::leaf(walk.raw, walk.level)
                    .is_some_and(|(_, attrs)| devpriv_pte::LeafAttributes::property(&attrs).global)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            self.drop_entry(&mut tlb, key);
        }
    }
}

impl<F: PagingFormat> TlbInvalidate for Mmu<'_, F> {
    fn invalidate_page(&self, va: u64) {
        let mut tlb = self.tlb.lock().unwrap();
        tlb.page_invalidations += 1;
        for level in [Level::L1, Level::L2, Level::L3] {
            let key = (va & !(level.entry_span() - 1), level.number());
            self.drop_entry(&mut tlb, key);
        }
    }

    fn invalidate_all(&self) {
        let mut tlb = self.tlb.lock().unwrap();
        tlb.full_invalidations += 1;
        let keys: Vec<_> = tlb.entries.keys().copied().collect();
        for key in keys {
            self.drop_entry(&mut tlb, key);
        }
    }
}
