//! Classifying and decoding raw x86_64 level-1 entries: devpriv-pte against the `x86_64`
//! crate, on the same work.
//!
//! Every row classifies each entry the same way on both sides: absent → 0, present leaf
//! → frame + flag bits, software (non-present) → its type number, folded into a
//! checksum. The peer reads `is_unused()`, `flags()` and `addr()` and validates nothing;
//! devpriv validates as its decoder does (reserved bits, the offset a software entry's
//! type allows), and counts an entry that does not decode as 1.
//!
//! - "pte: classify ...": `X86_64::classify` (class, frame or type, attribute bits) on
//!   three mixes: random (13/16 present, 2/16 software of four kinds, 1/16 absent, in
//!   random order), clustered (the same mix in runs of 64 entries of one kind, as page
//!   tables hold them) and all present.
//!   Beside them, `devpriv-typed-decode` is the full typed decode (`PteFormat::decode`,
//!   building the `Entry` with the software kind) doing the same classification: what
//!   the richer API costs.
//! - "pte: classify a 512-entry table": `X86_64::classify_table` (one bitmap per class)
//!   against the peer's per-entry loop building the same three bitmaps.
//! - "pte: decode under a constant profile": `decode` (devpriv's profile) against
//!   `decode_in` with a Linux preset: the profile should cost nothing.
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{
    DeviceAccess, DeviceIndex, Entry, EntryClass, Level, MigrationAccess, Pfn, Profile, PteFormat,
    SoftwareEntry, SoftwareKind, SwapType,
};
use x86_64::structures::paging::PageTableFlags;
use x86_64::structures::paging::page_table::PageTableEntry;

const COUNT: usize = 1 << 20;

/// Marsaglia's xorshift64: deterministic, dependency-free.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn software(rng: &mut XorShift) -> u64 {
    let r = rng.next();
    let n = r & ((1 << 40) - 1);
    let kind = match r >> 60 & 3 {
        0 => SoftwareKind::Swap {
            swap_type: SwapType::new((r >> 40 & 15) as u8).unwrap(),
            offset: n,
        },
        1 => SoftwareKind::Migration {
            access: MigrationAccess::Write,
            pfn: Pfn::new(n),
            young: r >> 50 & 1 != 0,
            dirty: r >> 51 & 1 != 0,
        },
        2 => SoftwareKind::DevicePrivate {
            access: DeviceAccess::Write,
            index: DeviceIndex::new(n),
        },
        _ => SoftwareKind::DeviceMigration {
            access: MigrationAccess::Read,
            index: DeviceIndex::new(n),
            young: false,
            dirty: false,
        },
    };
    X86_64::encode(&Entry::Software(SoftwareEntry::new(kind)), Level::L1).unwrap()
}

/// The random mix.
fn raw_entries() -> Vec<u64> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    (0..COUNT)
        .map(|_| match rng.next() & 15 {
            0 => 0,
            1 | 2 => software(&mut rng),
            _ => rng.next() | 1,
        })
        .collect()
}

/// The same mix in runs of 64 entries of one kind.
fn clustered_entries() -> Vec<u64> {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut raws = Vec::with_capacity(COUNT);
    while raws.len() < COUNT {
        let kind = rng.next() & 15;
        for _ in 0..64 {
            raws.push(match kind {
                0 => 0,
                1 | 2 => software(&mut rng),
                _ => rng.next() | 1,
            });
        }
    }
    raws
}

/// Present leaves only.
fn present_entries() -> Vec<u64> {
    let mut rng = XorShift(0x5851_f42d_4c95_7f2d);
    (0..COUNT).map(|_| rng.next() | 1).collect()
}

#[inline(never)]
fn devpriv_classify_checksum(raws: &[u64]) -> u64 {
    let mut sum = 0u64;
    for &raw in raws {
        let c = X86_64::classify(raw, Level::L1, &Profile::DEVPRIV);
        sum = sum.wrapping_add(match c.class {
            EntryClass::Leaf => c.number.wrapping_add(c.bits),
            EntryClass::Software => c.number,
            EntryClass::Absent => 0,
            _ => 1,
        });
    }
    sum
}

#[inline(never)]
fn devpriv_decode_checksum(raws: &[u64], profile: &Profile) -> u64 {
    let mut sum = 0u64;
    for &raw in raws {
        sum = sum.wrapping_add(match X86_64::decode_in(raw, Level::L1, profile) {
            Ok(Entry::Leaf { pfn, attrs, .. }) => pfn.number().wrapping_add(attrs.into_bits()),
            Ok(Entry::Software(_)) => raw >> 59,
            Ok(Entry::Absent) => 0,
            Ok(_) | Err(_) => 1,
        });
    }
    sum
}

#[inline(never)]
fn peer_checksum(entries: &[PageTableEntry]) -> u64 {
    let mut sum = 0u64;
    for e in entries {
        let flags = e.flags();
        sum = sum.wrapping_add(if e.is_unused() {
            0
        } else if flags.contains(PageTableFlags::PRESENT) {
            (e.addr().as_u64() >> 12).wrapping_add(flags.bits())
        } else {
            flags.bits() >> 59
        });
    }
    sum
}

/// The peer's per-entry loop building the bitmaps `classify_table` gives.
fn peer_table_bitmaps(table: &[PageTableEntry]) -> [[u64; 8]; 3] {
    let mut maps = [[0u64; 8]; 3];
    for (i, e) in table.iter().enumerate() {
        let class = if e.is_unused() {
            0
        } else if e.flags().contains(PageTableFlags::PRESENT) {
            1
        } else {
            2
        };
        maps[class][i / 64] |= 1 << (i % 64);
    }
    maps
}

/// The same memory as `raws`, as the peer's entry type, so that both sides read one
/// buffer (two buffers can differ in page size and alignment, which shows in the times).
fn as_entries(raws: &[u64]) -> &[PageTableEntry] {
    // SAFETY: `PageTableEntry` is `#[repr(transparent)]` over a `u64`, so a slice of one
    // is laid out as a slice of the other; the borrow keeps `raws` alive and unchanged.
    unsafe { std::slice::from_raw_parts(raws.as_ptr().cast::<PageTableEntry>(), raws.len()) }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group
}

fn bench(c: &mut Criterion) {
    for (mix, raws) in [
        ("random", raw_entries()),
        ("clustered", clustered_entries()),
        ("all-present", present_entries()),
    ] {
        let entries = as_entries(&raws);
        assert_eq!(
            devpriv_classify_checksum(&raws),
            devpriv_decode_checksum(&raws, &Profile::DEVPRIV),
            "classify and decode agree"
        );
        let mut g = group(c, &format!("pte: classify 1Mi {mix} x86_64 entries"));
        g.bench_function("devpriv", |b| {
            b.iter(|| black_box(devpriv_classify_checksum(black_box(&raws))))
        });
        g.bench_function("x86_64-crate", |b| {
            b.iter(|| black_box(peer_checksum(black_box(entries))))
        });
        g.bench_function("devpriv-typed-decode", |b| {
            b.iter(|| black_box(devpriv_decode_checksum(black_box(&raws), &Profile::DEVPRIV)))
        });
        g.finish();
    }

    let raws = raw_entries();
    let mut g = group(
        c,
        "pte: decode under a constant profile, 1Mi random entries",
    );
    g.bench_function("devpriv", |b| {
        b.iter(|| black_box(devpriv_decode_checksum(black_box(&raws), &Profile::DEVPRIV)))
    });
    g.bench_function("devpriv-linux-profile", |b| {
        b.iter(|| {
            black_box(devpriv_decode_checksum(
                black_box(&raws),
                &Profile::LINUX_X86_64_4LEVEL,
            ))
        })
    });
    g.finish();

    let table = &raws[..512];
    let entries = as_entries(table);
    let mut g = group(c, "pte: classify a 512-entry table (random mix)");
    g.bench_function("devpriv", |b| {
        b.iter(|| {
            black_box(X86_64::classify_table(
                black_box(table),
                Level::L1,
                &Profile::DEVPRIV,
            ))
        })
    });
    g.bench_function("x86_64-crate", |b| {
        b.iter(|| black_box(peer_table_bitmaps(black_box(entries))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
