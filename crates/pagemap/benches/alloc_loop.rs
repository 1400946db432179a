//! A plain timing loop for the allocator rows, beside the criterion bench: the same work
//! as "pagemap: alloc+free order-0" / "order-9" (a batch of folios allocated, then the
//! batch freed), timed with `Instant` around many batches, both allocators in the same
//! run, alternating round by round so that both see the same machine.
//!
//! Each size runs twice:
//! - *steady*: each side first allocates one folio of the size it times and keeps it (a
//!   pinned folio), so that both run in a steady state: `buddy_system_allocator` keeps
//!   split blocks on its free lists instead of splitting its merged 1 GiB block (18
//!   splits for 4 KiB) at the first allocation of every batch and merging it back at the
//!   last free, and devpriv keeps its 2 MiB chunk split instead of turning it whole again;
//! - *fresh*: nothing pinned, as in the criterion rows, so each batch starts from an
//!   empty allocator on both sides.
//!
//! devpriv is `DevicePagemap::alloc` and dropping the `FolioRef` (thread-safe: a
//! compare-exchange on the pagemap's stash per alloc, or its spin lock when the stash is
//! empty, an atomic reference count, the driver's `folio_free` through `dyn`);
//! the peer is `FrameAllocator::alloc` / `dealloc` through `&mut`, unlocked.
//!
//! Prints, per size and state, the median ns per alloc+free pair of each side over the
//! rounds and the ratio (peer / devpriv: above 1 means devpriv is faster). Not a test:
//! nothing is asserted about time.
//!
//! `cargo bench -p devpriv-pagemap --bench alloc_loop` runs it; under `cargo bench` with
//! a filter (`cargo xtask bench <filter>`) it runs only if a filter matches "pagemap:
//! alloc+free loop".

use std::hint::black_box;
use std::time::Instant;

use buddy_system_allocator::FrameAllocator;
use devpriv_pagemap::{DevicePagemap, DevicePrivateSpace, Folio, Owner, PageMeta, PagemapOps};
use devpriv_pte::PageSize;

/// 1 GiB of 4 KiB pages, as in the criterion bench.
const FRAMES: usize = 1 << 18;
/// Rounds per size; each round times both sides.
const ROUNDS: usize = 1001;
/// Alloc+free pairs per side and round: short rounds (tens of microseconds), so that
/// most run without being preempted on a busy machine and the median is one of those.
const PAIRS_PER_ROUND: usize = 1 << 11;

/// The name filters match against.
const NAME: &str = "pagemap: alloc+free loop";

struct NoDriver;

impl PagemapOps for NoDriver {
    fn folio_free(&self, folio: Folio<'_>) {
        black_box(folio);
    }
}

/// Whether the command line (criterion-style: options, their values, name filters) asks
/// for this loop.
fn wanted() -> bool {
    // Options of criterion's command line that take a value, which is not a filter.
    const VALUED: [&str; 12] = [
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--profile-time",
        "--noise-threshold",
        "--significance-level",
        "--confidence-level",
        "--nresamples",
    ];
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if VALUED.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            filters.push(arg);
        }
    }
    filters.is_empty() || filters.iter().any(|f| NAME.contains(f.as_str()))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `batch`-sized alloc-then-free rounds of folios of `size` on both allocators
/// (each with one folio pinned if `pin`) and prints the medians and their ratio.
fn run(size: PageSize, batch: usize, pin: bool) {
    let frames = size.frames() as usize;
    let batches = PAIRS_PER_ROUND / batch;

    let mut meta: Vec<PageMeta> = (0..FRAMES).map(|_| PageMeta::new()).collect();
    let pm = DevicePagemap::new(FRAMES as u64, Owner::new(1), &NoDriver, &mut meta).unwrap();
    let space = DevicePrivateSpace::new();
    space.register(&pm).unwrap();
    let pinned = pin.then(|| pm.alloc(size).unwrap());

    let mut fa = FrameAllocator::<33>::new();
    fa.add_frame(0, FRAMES);
    let buddy_pinned = pin.then(|| fa.alloc(frames).unwrap());

    let mut ours = Vec::with_capacity(batch);
    let mut theirs = Vec::with_capacity(batch);
    let mut devpriv_ns = Vec::with_capacity(ROUNDS);
    let mut buddy_ns = Vec::with_capacity(ROUNDS);
    // One untimed round each first (caches, branch predictors, the Vecs' memory).
    for round in 0..=ROUNDS {
        let start = Instant::now();
        for _ in 0..batches {
            for _ in 0..batch {
                ours.push(pm.alloc(size).unwrap());
            }
            ours.clear();
        }
        let devpriv = start.elapsed();

        let start = Instant::now();
        for _ in 0..batches {
            for _ in 0..batch {
                theirs.push(black_box(fa.alloc(frames).unwrap()));
            }
            for f in theirs.drain(..) {
                fa.dealloc(f, frames);
            }
        }
        let buddy = start.elapsed();

        if round > 0 {
            let pairs = (batches * batch) as f64;
            devpriv_ns.push(devpriv.as_nanos() as f64 / pairs);
            buddy_ns.push(buddy.as_nanos() as f64 / pairs);
        }
    }
    drop(pinned);
    if let Some(frame) = buddy_pinned {
        fa.dealloc(frame, frames);
    }

    let ours = median(&mut devpriv_ns);
    let theirs = median(&mut buddy_ns);
    let label = match size {
        PageSize::Size4KiB => "order-0",
        _ => "order-9",
    };
    let state = if pin { "steady" } else { "fresh" };
    println!(
        "{NAME} {label} {state} (batches of {batch}, median of {ROUNDS} rounds of {} \
         pairs): devpriv {ours:.2} ns/pair, buddy_system_allocator {theirs:.2} ns/pair, \
         ratio {:.2}x",
        batches * batch,
        theirs / ours
    );
}

fn main() {
    if !wanted() {
        return;
    }
    for pin in [true, false] {
        run(PageSize::Size4KiB, 64, pin);
        run(PageSize::Size2MiB, 16, pin);
    }
}
