//! The atomics and the lock this crate uses: `core` and `spin` normally, loom's models
//! under `cfg(loom)` so that the loom tests explore every interleaving.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// A mutual-exclusion lock: `spin::Mutex` normally, loom's mutex under `cfg(loom)`.
pub(crate) struct Mutex<T>(
    #[cfg(not(loom))] spin::Mutex<T>,
    #[cfg(loom)] loom::sync::Mutex<T>,
);

/// The guard [`Mutex::lock`] returns.
#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = spin::MutexGuard<'a, T>;
/// The guard [`Mutex::lock`] returns.
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A lock holding `value`.
    #[cfg(not(loom))]
    pub(crate) const fn new(value: T) -> Self {
        Self(spin::Mutex::new(value))
    }

    /// A lock holding `value`.
    #[cfg(loom)]
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    /// Takes the lock, spinning while another thread holds it.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock()
    }

    /// Takes the lock.
    #[cfg(loom)]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        // A loom mutex is only poisoned by a panicking thread, which fails the model anyway.
        self.0.lock().unwrap()
    }
}
