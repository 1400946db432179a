//! Interval notifiers (Linux's `mmu_interval_notifier`): a device that mirrors part of an
//! address space subscribes to a range, hears about every change that takes a page away
//! from its mirror before the change is made, and snapshots without holding locks by
//! checking a sequence count.
//!
//! # The sequence protocol
//!
//! Each subscription has a sequence word: a count of invalidations begun, and the
//! number still in progress. An invalidation of a range bumps the count of every
//! overlapping subscription (and marks one more in progress), calls its notifier, lets
//! the page-table change happen, then marks itself done. So a driver that
//!
//! 1. takes `seq = read_begin(id)` (which waits while an invalidation is in progress),
//! 2. reads the page table (a [`snapshot`](crate::snapshot)),
//! 3. takes the lock its notifier also takes,
//! 4. checks `read_retry(id, seq)` — and starts again if it is true —
//! 5. and programs its device page table under that lock,
//!
//! never keeps a translation that a change removed: a change that began before step 4
//! shows in the count; one that begins after must call the notifier, which waits for the
//! lock and then removes what step 5 programmed.
//!
//! Notifiers are called with the address space's page-table lock held (shared, or
//! exclusive for unmap and protect) and must not subscribe or unsubscribe.

use core::fmt;

use devpriv_pagemap::Owner;

use crate::sync::{AtomicU64, Ordering, ReadGuard, RwLock, spin_wait};

/// How many subscriptions one address space holds at most.
pub const MAX_SUBSCRIPTIONS: usize = 16;

/// Why pages are being taken away from the mirrors (Linux's `enum mmu_notifier_event`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvalidateEvent {
    /// The range is being unmapped (`MMU_NOTIFY_UNMAP`).
    Unmap,
    /// The range's protection is changing (`MMU_NOTIFY_PROTECTION_VMA`).
    Protect,
    /// Pages are being migrated (`MMU_NOTIFY_MIGRATE`); `owner` is the migrating
    /// device's, so that its own mirror can skip what it is about to update itself.
    Migrate,
    /// A page is being made device-exclusive (`MMU_NOTIFY_EXCLUSIVE`) for `owner`.
    Exclusive,
    /// A CPU fault is taking a device-exclusive page back (`MMU_NOTIFY_CLEAR`).
    Clear,
    /// The address space is being torn down (`MMU_NOTIFY_RELEASE`).
    Release,
}

/// One invalidation, as a notifier sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalidation {
    /// First address of the range.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Why.
    pub event: InvalidateEvent,
    /// The device on whose behalf the change is made, if any.
    pub owner: Option<Owner>,
}

impl Invalidation {
    /// Whether this is a migration started by `owner` itself: a mirror that updates
    /// itself as part of its own migrations skips these (as Linux's dmirror does).
    pub fn is_migration_by(&self, owner: Owner) -> bool {
        self.event == InvalidateEvent::Migrate && self.owner == Some(owner)
    }
}

/// A device's mirror of part of an address space.
pub trait IntervalNotifier: Sync {
    /// Pages of `range` (clipped to the subscription) are about to be taken away:
    /// drop every mirror entry for them. Take the lock that the snapshot loop checks
    /// [`read_retry`](crate::AddressSpace::read_retry) under.
    fn invalidate(&self, subscription: SubscriptionId, range: &Invalidation);
}

/// Names one subscription of one address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionId {
    slot: u8,
    generation: u32,
}

/// Why a subscription call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifierError {
    /// The range is empty or wraps.
    EmptyRange,
    /// All [`MAX_SUBSCRIPTIONS`] subscriptions are taken.
    Full,
    /// The identifier names no live subscription.
    Stale,
}

impl fmt::Display for NotifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EmptyRange => "the subscribed range is empty",
            Self::Full => "every subscription slot of the address space is taken",
            Self::Stale => "no live subscription has this identifier",
        })
    }
}

impl core::error::Error for NotifierError {}

#[derive(Clone, Copy)]
struct Subscription<'a> {
    start: u64,
    end: u64,
    notifier: &'a dyn IntervalNotifier,
}

#[derive(Clone, Copy)]
struct SlotState<'a> {
    generation: u32,
    subscription: Option<Subscription<'a>>,
}

/// The low bits of a sequence word count invalidations in progress; the rest counts
/// invalidations begun.
const ACTIVE_MASK: u64 = 0xffff;
const BEGUN: u64 = 1 << 16;

/// The subscriptions of one address space.
pub(crate) struct Notifiers<'a> {
    slots: RwLock<[SlotState<'a>; MAX_SUBSCRIPTIONS]>,
    sequences: [AtomicU64; MAX_SUBSCRIPTIONS],
}

impl<'a> Notifiers<'a> {
    pub(crate) fn new() -> Self {
        Self {
            slots: RwLock::new(
                [SlotState {
                    generation: 0,
                    subscription: None,
                }; MAX_SUBSCRIPTIONS],
            ),
            sequences: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    pub(crate) fn subscribe(
        &self,
        start: u64,
        end: u64,
        notifier: &'a dyn IntervalNotifier,
    ) -> Result<SubscriptionId, NotifierError> {
        if start >= end {
            return Err(NotifierError::EmptyRange);
        }
        let mut slots = self.slots.write();
        let (i, slot) = slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.subscription.is_none())
            .ok_or(NotifierError::Full)?;
        slot.generation = slot.generation.wrapping_add(1);
        slot.subscription = Some(Subscription {
            start,
            end,
            notifier,
        });
        Ok(SubscriptionId {
            slot: i as u8,
            generation: slot.generation,
        })
    }

    pub(crate) fn unsubscribe(&self, id: SubscriptionId) -> Result<(), NotifierError> {
        let mut slots = self.slots.write();
        let slot = &mut slots[id.slot as usize];
        if slot.generation != id.generation || slot.subscription.is_none() {
            return Err(NotifierError::Stale);
        }
        slot.subscription = None;
        Ok(())
    }

    fn check(&self, id: SubscriptionId) -> Result<&AtomicU64, NotifierError> {
        let slots = self.slots.read();
        let slot = slots.get(id.slot as usize).ok_or(NotifierError::Stale)?;
        if slot.generation != id.generation || slot.subscription.is_none() {
            return Err(NotifierError::Stale);
        }
        Ok(&self.sequences[id.slot as usize])
    }

    /// The sequence to check later, or `None` while an invalidation is in progress.
    pub(crate) fn try_read_begin(&self, id: SubscriptionId) -> Result<Option<u64>, NotifierError> {
        let seq = self.check(id)?.load(Ordering::Acquire);
        Ok((seq & ACTIVE_MASK == 0).then_some(seq))
    }

    /// The sequence to check later, waiting while an invalidation is in progress.
    pub(crate) fn read_begin(&self, id: SubscriptionId) -> Result<u64, NotifierError> {
        loop {
            if let Some(seq) = self.try_read_begin(id)? {
                return Ok(seq);
            }
            spin_wait();
        }
    }

    /// Whether an invalidation began since `read_begin` returned `seq` (or the
    /// subscription is gone).
    pub(crate) fn read_retry(&self, id: SubscriptionId, seq: u64) -> bool {
        match self.check(id) {
            Ok(s) => s.load(Ordering::Acquire) != seq,
            Err(_) => true,
        }
    }

    /// Begins an invalidation of `[start, end)`: every overlapping subscription's count
    /// is bumped and its notifier called. The change is made while the returned window
    /// lives; dropping it ends the invalidation.
    pub(crate) fn invalidate(
        &self,
        start: u64,
        end: u64,
        event: InvalidateEvent,
        owner: Option<Owner>,
    ) -> InvalidationWindow<'_, 'a> {
        let slots = self.slots.read();
        let mut touched = 0u32;
        for (i, slot) in slots.iter().enumerate() {
            let Some(sub) = slot.subscription else {
                continue;
            };
            if sub.start >= end || start >= sub.end {
                continue;
            }
            touched |= 1 << i;
            self.sequences[i].fetch_add(BEGUN + 1, Ordering::AcqRel);
            let id = SubscriptionId {
                slot: i as u8,
                generation: slot.generation,
            };
            sub.notifier.invalidate(
                id,
                &Invalidation {
                    start: start.max(sub.start),
                    end: end.min(sub.end),
                    event,
                    owner,
                },
            );
        }
        InvalidationWindow {
            notifiers: self,
            _slots: slots,
            touched,
        }
    }

    /// How many subscriptions are live.
    pub(crate) fn count(&self) -> usize {
        self.slots
            .read()
            .iter()
            .filter(|s| s.subscription.is_some())
            .count()
    }
}

/// An invalidation in progress: the page-table change happens while it lives.
#[must_use = "the invalidation ends when the window is dropped"]
pub(crate) struct InvalidationWindow<'n, 'a> {
    notifiers: &'n Notifiers<'a>,
    /// Held so that no touched subscription goes away before its count is settled.
    _slots: ReadGuard<'n, [SlotState<'a>; MAX_SUBSCRIPTIONS]>,
    touched: u32,
}

impl Drop for InvalidationWindow<'_, '_> {
    fn drop(&mut self) {
        let mut touched = self.touched;
        while touched != 0 {
            let i = touched.trailing_zeros() as usize;
            touched &= touched - 1;
            self.notifiers.sequences[i].fetch_sub(1, Ordering::AcqRel);
        }
    }
}
