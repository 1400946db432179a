//! [`TryCell`]: the one place a kernel keeps the demo state for its trap handler.
//!
//! A trap handler has no arguments to carry state in, so the kernel keeps the
//! [`Demo`](crate::Demo) in a static `TryCell`. Borrowing is a try-lock: a fault taken
//! while the state is borrowed — a fault inside the fault handler, or during the demo's own
//! bookkeeping — finds the cell busy, and the kernel reports a nested fault instead of
//! corrupting the state.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A cell holding an optional `T`, borrowed exclusively through [`TryCell::with`].
pub struct TryCell<T> {
    busy: AtomicBool,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: access to `value` is serialised by `busy` (acquired with a compare-exchange,
// released with a store), so at most one `&mut T` exists at a time, on any CPU.
unsafe impl<T: Send> Sync for TryCell<T> {}

impl<T> TryCell<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        Self {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(None),
        }
    }

    /// Stores `value`, returning the previous one; `Err(value)` if the cell is borrowed.
    pub fn set(&self, value: T) -> Result<Option<T>, T> {
        let mut value = Some(value);
        match self.with_slot(|slot| core::mem::replace(slot, value.take())) {
            Some(old) => Ok(old),
            None => Err(value.take().expect("the closure did not run")),
        }
    }

    /// Runs `f` on the value; `None` if the cell is empty or already borrowed (a nested
    /// use).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.with_slot(|slot| slot.as_mut().map(f)).flatten()
    }

    /// Whether the value is borrowed right now.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    fn with_slot<R>(&self, f: impl FnOnce(&mut Option<T>) -> R) -> Option<R> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: `busy` was false and is now ours, so no other reference to the value
        // exists until we release it below.
        let result = f(unsafe { &mut *self.value.get() });
        self.busy.store(false, Ordering::Release);
        Some(result)
    }
}

impl<T> Default for TryCell<T> {
    fn default() -> Self {
        Self::new()
    }
}
