//! Shared proptest strategies for both architectures.
#![allow(dead_code)]

use devpriv_pte::{
    DeviceAccess, DeviceIndex, Level, Marker, MigrationAccess, Pfn, SideBits, SoftwareEntry,
    SoftwareKind, SwapType,
};
use proptest::prelude::*;

/// Every level number, including ones a format may not have.
pub const LEVELS: [Level; 5] = [Level::L1, Level::L2, Level::L3, Level::L4, Level::L5];

/// Any migration access.
pub fn migration_access() -> impl Strategy<Value = MigrationAccess> {
    prop_oneof![
        Just(MigrationAccess::Read),
        Just(MigrationAccess::ReadExclusive),
        Just(MigrationAccess::Write),
    ]
}

/// Any device-private access.
pub fn device_access() -> impl Strategy<Value = DeviceAccess> {
    prop_oneof![Just(DeviceAccess::Read), Just(DeviceAccess::Write)]
}

/// A frame number or index that fits a software entry (40 bits), edges included.
pub fn number() -> impl Strategy<Value = u64> {
    prop_oneof![0..(1u64 << 40), Just(0), Just((1 << 40) - 1)]
}

/// Every software kind with fields in range.
pub fn software_kind() -> impl Strategy<Value = SoftwareKind> {
    prop_oneof![
        (0..=20u8, prop_oneof![0..(1u64 << 42), Just((1 << 42) - 1)]).prop_map(|(t, offset)| {
            SoftwareKind::Swap {
                swap_type: SwapType::new(t).unwrap(),
                offset,
            }
        }),
        (migration_access(), number(), any::<bool>(), any::<bool>()).prop_map(
            |(access, n, young, dirty)| SoftwareKind::Migration {
                access,
                pfn: Pfn::new(n),
                young,
                dirty
            }
        ),
        (migration_access(), number(), any::<bool>(), any::<bool>()).prop_map(
            |(access, n, young, dirty)| SoftwareKind::DeviceMigration {
                access,
                index: DeviceIndex::new(n),
                young,
                dirty
            }
        ),
        (device_access(), number()).prop_map(|(access, n)| SoftwareKind::DevicePrivate {
            access,
            index: DeviceIndex::new(n)
        }),
        number().prop_map(|n| SoftwareKind::DeviceExclusive { pfn: Pfn::new(n) }),
        number().prop_map(|n| SoftwareKind::HwPoison { pfn: Pfn::new(n) }),
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(uffd_wp, poisoned, guard)| {
            SoftwareKind::Marker(Marker {
                uffd_wp,
                poisoned,
                guard,
            })
        }),
    ]
}

/// A software entry; `soft_dirty` only where the architecture has the bit.
pub fn software_entry(with_soft_dirty: bool) -> impl Strategy<Value = SoftwareEntry> {
    (software_kind(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        move |(kind, exclusive, uffd_wp, soft_dirty)| SoftwareEntry {
            kind,
            side: SideBits {
                exclusive,
                uffd_wp,
                soft_dirty: soft_dirty && with_soft_dirty,
            },
        },
    )
}

/// A software kind whose number does not fit, and the error encoding it must give.
pub fn oversized_kind() -> impl Strategy<Value = (SoftwareKind, devpriv_pte::EncodeError)> {
    use devpriv_pte::EncodeError as E;
    let big = (1u64 << 40)..=u64::MAX;
    prop_oneof![
        ((1u64 << 42)..=u64::MAX).prop_map(|offset| (
            SoftwareKind::Swap {
                swap_type: SwapType::new(0).unwrap(),
                offset
            },
            E::OffsetTooLarge
        )),
        big.clone().prop_map(|n| (
            SoftwareKind::Migration {
                access: MigrationAccess::Read,
                pfn: Pfn::new(n),
                young: false,
                dirty: false
            },
            E::FrameTooLarge
        )),
        big.clone().prop_map(|n| (
            SoftwareKind::DeviceMigration {
                access: MigrationAccess::Write,
                index: DeviceIndex::new(n),
                young: true,
                dirty: true
            },
            E::IndexTooLarge
        )),
        big.clone().prop_map(|n| (
            SoftwareKind::DevicePrivate {
                access: DeviceAccess::Write,
                index: DeviceIndex::new(n)
            },
            E::IndexTooLarge
        )),
        big.clone().prop_map(|n| (
            SoftwareKind::DeviceExclusive { pfn: Pfn::new(n) },
            E::FrameTooLarge
        )),
        big.prop_map(|n| (
            SoftwareKind::HwPoison { pfn: Pfn::new(n) },
            E::FrameTooLarge
        )),
    ]
}

/// A raw value biased towards interesting patterns: anything, and values with some
/// bits forced set or clear so that every decoder path gets exercised.
pub fn raw_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| a & b),
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| a | b),
        // x86_64 software-looking: P, PS, PROTNONE, bit 4 clear, bits 51..58 set.
        any::<u64>().prop_map(|a| (a & !0x191) | 0x07f8_0000_0000_0000),
        // arm64 software-looking: bits 0, 1, 4, 5, 11, 62, 63 clear, bits 52..61 clear.
        any::<u64>().prop_map(|a| a & 0x000f_ffff_ffff_f7cc),
        // arm64 present-looking with reserved bits clear.
        (any::<u64>(), 0..4u64).prop_map(|(a, t)| (a & 0x07fc_ffff_ffff_fffc) | t),
        // Sparse values.
        (0..64u32, 0..64u32).prop_map(|(a, b)| (1u64 << a) | (1u64 << b)),
        Just(0u64),
        Just(u64::MAX),
    ]
}

/// The number of cases a property test runs: `PROPTEST_CASES` if set (Miri runs a
/// handful), else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
