//! Range snapshots (Linux's `hmm_range_fault`): what a device needs to mirror part of
//! an address space, one [`HmmPfn`] word per page, faulting pages in where asked; and
//! the sequence-retry loop that makes the mirror coherent.

use core::fmt;

use devpriv_pagemap::Owner;
use devpriv_paging::PagingError;
use devpriv_pte::{
    DeviceAccess, DeviceIndex, Entry, LeafAttributes, PageSize, Pfn, SoftwareEntry, SoftwareKind,
};

use crate::address_space::AddressSpace;
use crate::fault::{FaultOutcome, WaitFor, handle_fault};
use crate::notifier::{NotifierError, SubscriptionId};
use crate::platform::{Platform, Vma};
use crate::words::{DevicePrivateSeries, HmmLayout, HmmPfn};

/// A range to snapshot (Linux's `struct hmm_range`).
pub struct HmmRange<'w, L: HmmLayout = DevicePrivateSeries> {
    /// First address (4 KiB aligned).
    pub start: u64,
    /// One past the last address (4 KiB aligned).
    pub end: u64,
    /// One word per page: the request on input (with the mask and default below), the
    /// snapshot on output.
    pub pfns: &'w mut [HmmPfn<L>],
    /// Flags requested for every page (`default_flags`).
    pub default_flags: HmmPfn<L>,
    /// Which input bits of each word count (`pfn_flags_mask`).
    pub pfn_flags_mask: HmmPfn<L>,
    /// Device-private pages of this owner are reported as they are, never faulted
    /// (`dev_private_owner`).
    pub owner: Option<Owner>,
}

/// Why a snapshot stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotError<'a> {
    /// The range is empty.
    EmptyRange,
    /// An address is not 4 KiB aligned.
    Unaligned {
        /// The address.
        value: u64,
    },
    /// `pfns` does not have one word per page.
    SliceLength {
        /// Pages in the range.
        pages: usize,
        /// Words given.
        words: usize,
    },
    /// A page that had to be faulted in could not be: no region holds it, the region
    /// forbids the access, the kernel's fault handler failed, or it is poisoned
    /// (`-EFAULT`).
    Fault {
        /// The address.
        va: u64,
    },
    /// A page is being migrated: wait for it, then snapshot again (`-EBUSY`).
    Busy(WaitFor<'a>),
    /// The snapshot loop was retried as often as it was allowed to.
    TooManyRetries,
    /// The subscription given to the loop is not live.
    Notifier(NotifierError),
    /// The page table refused the range.
    Paging(PagingError),
}

impl fmt::Display for SnapshotError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyRange => f.write_str("the range is empty"),
            Self::Unaligned { value } => write!(f, "{value:#x} is not 4 KiB aligned"),
            Self::SliceLength { pages, words } => {
                write!(f, "{pages} pages need {pages} words, {words} given")
            }
            Self::Fault { va } => write!(f, "{va:#x} could not be faulted in"),
            Self::Busy(wait) => write!(f, "a page is being migrated: {wait}"),
            Self::TooManyRetries => f.write_str("the snapshot kept being invalidated"),
            Self::Notifier(e) => write!(f, "{e}"),
            Self::Paging(e) => write!(f, "page table: {e}"),
        }
    }
}

impl core::error::Error for SnapshotError<'_> {}

/// What a page needs before it can be reported.
enum Need<'a> {
    /// The kernel's fault handler, writable or not.
    Kernel(bool),
    /// devpriv's own fault path (another owner's device page, a device-exclusive entry).
    Ours(bool),
    /// Wait for a migration.
    Wait(WaitFor<'a>),
    /// It cannot be had.
    Fail,
}

/// Fills `range.pfns` with what `range` maps now (Linux's `hmm_range_fault`), under
/// the address space's shared lock:
///
/// * a present page: VALID, WRITE if writable, the mapping's order, its frame;
/// * a device-private page of `range.owner`: VALID, DEVICE_PRIVATE, WRITE if writable,
///   the order, its device index — never faulted;
/// * anything else reads 0 (not present) unless the request asks for the page
///   (REQ_FAULT, REQ_WRITE): then absent and read-only pages, swap entries and markers
///   are faulted in through `fault_in` (the kernel's fault handler: address, write;
///   `true` if it mapped the page), other owners' device pages are migrated back and
///   device-exclusive entries revoked through [`handle_fault`];
/// * a page being migrated gives [`SnapshotError::Busy`] if it was asked for;
/// * a page no region holds, or a poisoned one, reads ERROR, or gives
///   [`SnapshotError::Fault`] if it was asked for.
///
/// Every word inside a 2 MiB mapping carries the same flags and order. The input bits
/// DMA_MAPPED, P2PDMA and P2PDMA_BUS pass through.
pub fn snapshot<'a, P: Platform, L: HmmLayout>(
    space: &AddressSpace<'a, P>,
    range: &mut HmmRange<'_, L>,
    fault_in: &mut dyn FnMut(u64, bool) -> bool,
) -> Result<(), SnapshotError<'a>> {
    for value in [range.start, range.end] {
        if value & 0xfff != 0 {
            return Err(SnapshotError::Unaligned { value });
        }
    }
    if range.start >= range.end {
        return Err(SnapshotError::EmptyRange);
    }
    let pages = ((range.end - range.start) >> 12) as usize;
    if range.pfns.len() != pages {
        return Err(SnapshotError::SliceLength {
            pages,
            words: range.pfns.len(),
        });
    }
    let mut from = range.start;
    loop {
        let (va, need) = match walk(space, range, from)? {
            None => return Ok(()),
            Some(stop) => stop,
        };
        match need {
            Need::Kernel(write) => {
                if !fault_in(va, write) {
                    return Err(SnapshotError::Fault { va });
                }
            }
            Need::Ours(write) => match handle_fault(space, va, write) {
                Ok(FaultOutcome::Wait(wait)) => return Err(SnapshotError::Busy(wait)),
                Ok(_) => {}
                Err(_) => return Err(SnapshotError::Fault { va }),
            },
            Need::Wait(wait) => return Err(SnapshotError::Busy(wait)),
            Need::Fail => return Err(SnapshotError::Fault { va }),
        }
        from = va;
    }
}

/// Walks `[from, range.end)` and fills words until a page needs something: returns
/// that page's address and what it needs, or `None` when every word is filled.
fn walk<'a, P: Platform, L: HmmLayout>(
    space: &AddressSpace<'a, P>,
    range: &mut HmmRange<'_, L>,
    from: u64,
) -> Result<Option<(u64, Need<'a>)>, SnapshotError<'a>> {
    let table = space.table();
    let mut cursor = table
        .cursor(from, range.end - from)
        .map_err(SnapshotError::Paging)?;
    // The region of the last page looked at: one lookup per region, not per page.
    let mut region: Option<Vma> = None;
    while let Some(slot) = cursor.next_slot() {
        let es = slot.va();
        let last = es.wrapping_add(slot.span() - 1);
        let cs = es.max(from);
        let cl = last.min(range.end - 1);
        let entry = slot.entry();
        let mut va = cs;
        loop {
            let i = ((va - range.start) >> 12) as usize;
            let request = range.pfns[i].request(range.pfn_flags_mask, range.default_flags);
            let fault = request.has(HmmPfn::<L>::REQ_FAULT);
            let write = fault && request.has(HmmPfn::<L>::REQ_WRITE);
            let offset = (va - es) >> 12;
            if !region.is_some_and(|r| r.contains(va)) {
                region = space.vma(va);
            }
            let word = match region {
                // No region, or one the CPU may not read: whatever the table holds,
                // the page cannot be had (Linux checks the VMA before the entries).
                None if fault => return Ok(Some((va, Need::Fail))),
                None => Ok(HmmPfn::error()),
                Some(vma) => page_word::<P, L>(
                    space,
                    range.owner,
                    entry,
                    slot.level().leaf_size(),
                    offset,
                    (fault, write),
                    &vma,
                ),
            };
            let word = match word {
                Ok(word) => word,
                Err(need) => return Ok(Some((va, need))),
            };
            range.pfns[i] =
                HmmPfn::from_raw(word.raw() | (request.raw() & HmmPfn::<L>::PASS_THROUGH));
            // `cl` is the last byte: stop after its page.
            if cl - va < 4096 {
                break;
            }
            va += 4096;
        }
    }
    Ok(None)
}

/// The word for page `offset` of an entry in region `vma`, or what it needs first.
/// `request` is (fault, write).
fn page_word<'a, P: Platform, L: HmmLayout>(
    space: &AddressSpace<'a, P>,
    owner: Option<Owner>,
    entry: Result<Entry<P::Format>, devpriv_pte::DecodeError>,
    size: Option<PageSize>,
    offset: u64,
    (fault, write): (bool, bool),
    vma: &Vma,
) -> Result<HmmPfn<L>, Need<'a>> {
    let order = size.map_or(0, PageSize::order);
    match entry {
        Err(_) => {
            if fault {
                Err(Need::Fail)
            } else {
                Ok(HmmPfn::error())
            }
        }
        // A PROT_NONE / NUMA-hinting entry is not accessible until the kernel resolves
        // the fault it raises: like a hole.
        Ok(Entry::Absent) | Ok(Entry::Table { .. }) | Ok(Entry::ProtNone { .. }) => {
            if fault {
                Err(Need::Kernel(write))
            } else {
                Ok(HmmPfn::none())
            }
        }
        Ok(Entry::Leaf { pfn, attrs, .. }) => {
            let writable = attrs.property().writable;
            if write && !writable {
                return if vma.property.writable {
                    Err(Need::Kernel(true))
                } else {
                    Err(Need::Fail)
                };
            }
            HmmPfn::system(Pfn::new(pfn.number() + offset), writable, order).ok_or(Need::Fail)
        }
        Ok(Entry::Software(SoftwareEntry { kind, .. })) => match kind {
            SoftwareKind::DevicePrivate { access, index } => {
                let own = space
                    .devices()
                    .lookup(index)
                    .is_ok_and(|p| Some(p.pagemap().owner()) == owner);
                let word = HmmPfn::device(
                    DeviceIndex::new(index.number() + offset),
                    access == DeviceAccess::Write,
                    order,
                );
                match word {
                    Some(word) if own => Ok(word),
                    _ if fault => Err(Need::Ours(write)),
                    _ => Ok(HmmPfn::none()),
                }
            }
            SoftwareKind::DeviceExclusive { .. } if fault => Err(Need::Ours(write)),
            SoftwareKind::Migration { pfn, .. } if fault => {
                Err(Need::Wait(WaitFor::SystemFrame(pfn)))
            }
            SoftwareKind::DeviceMigration { index, .. } if fault => {
                match space.devices().lookup(index) {
                    Ok(page) => Err(Need::Wait(WaitFor::DeviceFolio(page.folio()))),
                    Err(_) => Err(Need::Fail),
                }
            }
            SoftwareKind::HwPoison { .. } => {
                if fault {
                    Err(Need::Fail)
                } else {
                    Ok(HmmPfn::error())
                }
            }
            SoftwareKind::Swap { .. } | SoftwareKind::Marker(_) if fault => {
                Err(Need::Kernel(write))
            }
            _ => Ok(HmmPfn::none()),
        },
    }
}

/// The sequence-retry loop around [`snapshot`] (what a driver writes around
/// `hmm_range_fault`): take `seq` from the subscription, snapshot (waiting out busy
/// pages), take the driver's lock (`lock`, the one its notifier takes), and if no
/// invalidation began meanwhile run `commit` under it with the words — otherwise start
/// again, at most `retries` times.
pub fn snapshot_and_commit<'a, P, L, G, T>(
    space: &AddressSpace<'a, P>,
    subscription: SubscriptionId,
    range: &mut HmmRange<'_, L>,
    fault_in: &mut dyn FnMut(u64, bool) -> bool,
    mut lock: impl FnMut() -> G,
    commit: impl FnOnce(&mut G, &[HmmPfn<L>]) -> T,
    retries: u32,
) -> Result<T, SnapshotError<'a>>
where
    P: Platform,
    L: HmmLayout,
{
    for _ in 0..retries {
        let seq = space
            .read_begin(subscription)
            .map_err(SnapshotError::Notifier)?;
        match snapshot(space, range, fault_in) {
            Ok(()) => {}
            Err(SnapshotError::Busy(wait)) => {
                if let WaitFor::DeviceFolio(folio) = wait {
                    while folio.is_locked() {
                        crate::sync::spin_wait();
                    }
                }
                crate::sync::spin_wait();
                continue;
            }
            Err(e) => return Err(e),
        }
        let mut guard = lock();
        if space.read_retry(subscription, seq) {
            continue;
        }
        return Ok(commit(&mut guard, range.pfns));
    }
    Err(SnapshotError::TooManyRetries)
}
