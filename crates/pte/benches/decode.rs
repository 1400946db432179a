//! Decoding raw x86_64 level-1 entries: devpriv-pte against the `x86_64` crate.
//!
//! Both sides read the same 1 Mi pre-generated raw values (13/16 present 4 KiB leaves
//! with random attributes and addresses, 2/16 software entries of four kinds, 1/16
//! absent) and fold the frame and flag bits into a checksum.
//!
//! - "pte: decode ...": devpriv's full typed decode (`PteFormat::decode`: classify,
//!   validate, build the `Entry`) against the `x86_64` crate's `flags()` + `addr()`,
//!   which neither classifies nor validates.
//! - "pte: leaf fast path ...": devpriv's `X86_64::leaf` (a validated present-leaf
//!   check returning the frame and attributes) against the same peer work.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use devpriv_pte::arch::x86_64::conv::page_table_entry;
use devpriv_pte::arch::x86_64::{PageAttributes, X86_64};
use devpriv_pte::{
    DeviceAccess, DeviceIndex, Entry, Level, MigrationAccess, Pfn, PteFormat, SoftwareEntry,
    SoftwareKind, SwapType,
};

const COUNT: usize = 1 << 20;

const NOT_A_LEAF: (Pfn, PageAttributes) = (Pfn::new(0), PageAttributes::from_bits(0));

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

fn devpriv_checksum(raws: &[u64]) -> u64 {
    let mut sum = 0u64;
    for &raw in raws {
        sum = sum.wrapping_add(match X86_64::decode(raw, Level::L1) {
            Ok(Entry::Leaf { pfn, attrs, .. }) => pfn.number().wrapping_add(attrs.into_bits()),
            Ok(Entry::Software(sw)) => sw.kind.type_number() as u64,
            Ok(_) => 0,
            Err(_) => 1,
        });
    }
    sum
}

fn bench(c: &mut Criterion) {
    let raws = raw_entries();
    let entries: Vec<_> = raws.iter().map(|&r| page_table_entry(r)).collect();
    let mut group = c.benchmark_group("pte: decode 1Mi random x86_64 entries");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("devpriv", |b| {
        b.iter(|| black_box(devpriv_checksum(black_box(&raws))))
    });
    group.bench_function("x86_64-crate", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for e in black_box(&entries) {
                sum = sum.wrapping_add(e.flags().bits().wrapping_add(e.addr().as_u64()));
            }
            black_box(sum)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("pte: leaf fast path 1Mi random x86_64 entries");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("devpriv", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &raw in black_box(&raws) {
                // `unwrap_or` rather than `if let`: LLVM then selects instead of branching.
                let (pfn, attrs) = X86_64::leaf(raw, Level::L1).unwrap_or(NOT_A_LEAF);
                sum = sum.wrapping_add(pfn.number().wrapping_add(attrs.into_bits()));
            }
            black_box(sum)
        })
    });
    group.bench_function("x86_64-crate", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for e in black_box(&entries) {
                sum = sum.wrapping_add(e.flags().bits().wrapping_add(e.addr().as_u64()));
            }
            black_box(sum)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
