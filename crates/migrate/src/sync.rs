//! The atomics and locks this crate uses: `core` and `spin` normally, loom's models
//! under `cfg(loom)` so that the loom tests explore every interleaving.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// A reader-writer lock: `spin::RwLock` normally, loom's under `cfg(loom)`.
pub(crate) struct RwLock<T>(
    #[cfg(not(loom))] spin::RwLock<T>,
    #[cfg(loom)] loom::sync::RwLock<T>,
);

/// The guard [`RwLock::read`] returns.
#[cfg(not(loom))]
pub(crate) type ReadGuard<'a, T> = spin::RwLockReadGuard<'a, T>;
/// The guard [`RwLock::write`] returns.
#[cfg(not(loom))]
pub(crate) type WriteGuard<'a, T> = spin::RwLockWriteGuard<'a, T>;
/// The guard [`RwLock::read`] returns.
#[cfg(loom)]
pub(crate) type ReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
/// The guard [`RwLock::write`] returns.
#[cfg(loom)]
pub(crate) type WriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;

impl<T> RwLock<T> {
    #[cfg(not(loom))]
    pub(crate) const fn new(value: T) -> Self {
        Self(spin::RwLock::new(value))
    }

    #[cfg(loom)]
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::RwLock::new(value))
    }

    /// Shared access, spinning while a writer holds the lock.
    #[inline]
    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        #[cfg(not(loom))]
        return self.0.read();
        // A loom lock is only poisoned by a panicking thread, which fails the model.
        #[cfg(loom)]
        return self.0.read().unwrap();
    }

    /// Exclusive access.
    #[inline]
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        #[cfg(not(loom))]
        return self.0.write();
        #[cfg(loom)]
        return self.0.write().unwrap();
    }

    /// The value, consuming the lock.
    pub(crate) fn into_inner(self) -> T {
        #[cfg(not(loom))]
        return self.0.into_inner();
        #[cfg(loom)]
        return self.0.into_inner().unwrap();
    }
}

/// A mutual-exclusion lock: `spin::Mutex` normally, loom's under `cfg(loom)`.
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
    #[cfg(not(loom))]
    pub(crate) const fn new(value: T) -> Self {
        Self(spin::Mutex::new(value))
    }

    #[cfg(loom)]
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    /// Takes the lock.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        return self.0.lock();
        #[cfg(loom)]
        return self.0.lock().unwrap();
    }
}

/// Spins once while waiting for another thread (yields under loom).
#[inline]
pub(crate) fn spin_wait() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
