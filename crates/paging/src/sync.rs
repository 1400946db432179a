//! The atomics the crate uses: loom's under `cfg(loom)`, `core`'s otherwise.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU64, Ordering};

/// One step of a busy wait: a yield under loom (so the model can run the thread being
/// waited for), a spin-loop hint otherwise.
#[inline]
pub(crate) fn spin_wait() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}
