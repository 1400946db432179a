//! The registry of address spaces: what eviction uses to go from the address-space
//! identifier in a folio's reverse map to the address space, without walking anything.

use core::fmt;
use core::ptr;

use devpriv_pagemap::AddressSpaceId;

use crate::address_space::AddressSpace;
use crate::platform::Platform;
use crate::sync::{AtomicPtr, Ordering};

/// Finds an address space by identifier (what [`Migration::evict`](crate::Migration::evict)
/// needs). [`AddressSpaces`] implements it; a kernel with its own table of address
/// spaces can too.
pub trait AddressSpaceLookup<'a, P: Platform>: Sync {
    /// The address space with identifier `id`, if there is one.
    fn address_space(&self, id: AddressSpaceId) -> Option<&'a AddressSpace<'a, P>>;
}

/// Why a registry call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryError {
    /// The identifier is not below the registry's capacity.
    IdTooLarge {
        /// The identifier.
        id: AddressSpaceId,
        /// The capacity.
        capacity: usize,
    },
    /// Another address space holds the identifier.
    Taken {
        /// The identifier.
        id: AddressSpaceId,
    },
    /// No address space holds the identifier.
    NotRegistered {
        /// The identifier.
        id: AddressSpaceId,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IdTooLarge { id, capacity } => write!(
                f,
                "address-space id {} is not below the registry's capacity {capacity}",
                id.value()
            ),
            Self::Taken { id } => write!(f, "address-space id {} is taken", id.value()),
            Self::NotRegistered { id } => {
                write!(f, "no address space has id {}", id.value())
            }
        }
    }
}

impl core::error::Error for RegistryError {}

/// A fixed-capacity registry of address spaces indexed by identifier: identifiers
/// `0..N`, lookup is one load. No allocation; `N` is the caller's choice.
pub struct AddressSpaces<'a, P: Platform, const N: usize> {
    slots: [AtomicPtr<AddressSpace<'a, P>>; N],
}

// SAFETY: the slots hold pointers made from `&'a AddressSpace` and hand out only shared
// references to them; sending or sharing the registry is sharing those references, which
// needs the address spaces to be `Sync`.
unsafe impl<'a, P: Platform, const N: usize> Sync for AddressSpaces<'a, P, N> where
    AddressSpace<'a, P>: Sync
{
}

// SAFETY: as for `Sync`: the registry owns nothing but shared references.
unsafe impl<'a, P: Platform, const N: usize> Send for AddressSpaces<'a, P, N> where
    AddressSpace<'a, P>: Sync
{
}

impl<'a, P: Platform, const N: usize> AddressSpaces<'a, P, N> {
    /// An empty registry.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            slots: [const { AtomicPtr::new(ptr::null_mut()) }; N],
        }
    }

    /// An empty registry.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
        }
    }

    fn slot(&self, id: AddressSpaceId) -> Result<&AtomicPtr<AddressSpace<'a, P>>, RegistryError> {
        self.slots
            .get(id.value() as usize)
            .ok_or(RegistryError::IdTooLarge { id, capacity: N })
    }

    /// Registers `space` under its identifier.
    pub fn register(&self, space: &'a AddressSpace<'a, P>) -> Result<(), RegistryError> {
        let id = space.id();
        self.slot(id)?
            .compare_exchange(
                ptr::null_mut(),
                ptr::from_ref(space).cast_mut(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(|_| RegistryError::Taken { id })
    }

    /// Removes the address space with identifier `id`.
    pub fn unregister(&self, id: AddressSpaceId) -> Result<&'a AddressSpace<'a, P>, RegistryError> {
        let p = self.slot(id)?.swap(ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: non-null slot pointers are only stored by `register`, from a
        // `&'a AddressSpace<'a, P>`, so the address space lives (unmoved) for `'a`.
        unsafe { p.as_ref() }.ok_or(RegistryError::NotRegistered { id })
    }

    /// The address space with identifier `id`.
    pub fn get(&self, id: AddressSpaceId) -> Option<&'a AddressSpace<'a, P>> {
        let p = self.slot(id).ok()?.load(Ordering::Acquire);
        // SAFETY: as in `unregister`.
        unsafe { p.as_ref() }
    }
}

impl<'a, P: Platform, const N: usize> AddressSpaceLookup<'a, P> for AddressSpaces<'a, P, N>
where
    AddressSpace<'a, P>: Sync,
{
    fn address_space(&self, id: AddressSpaceId) -> Option<&'a AddressSpace<'a, P>> {
        self.get(id)
    }
}

impl<P: Platform, const N: usize> Default for AddressSpaces<'_, P, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Platform, const N: usize> fmt::Debug for AddressSpaces<'_, P, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let live = self
            .slots
            .iter()
            .filter(|s| !s.load(Ordering::Relaxed).is_null())
            .count();
        f.debug_struct("AddressSpaces")
            .field("capacity", &N)
            .field("registered", &live)
            .finish()
    }
}
