//! `classify` and `classify_table` agree with the full decode on every value, level and
//! profile.

mod common;

use common::*;
use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::classify::CLASSES;
use devpriv_pte::{
    Classified, DecodeError, Entry, EntryClass, Level, Profile, PteFormat, SoftwareEntry,
};
use proptest::prelude::*;

/// Entries in the largest table the bitmap test builds: a whole table, or under Miri
/// (a thousand times slower) a bit more than one bitmap word.
const TABLE_ENTRIES: usize = if cfg!(miri) { 70 } else { 512 };

/// What `classify` must say about `decoded`.
fn expected<F: PteFormat>(
    raw: u64,
    decoded: Result<Entry<F>, DecodeError>,
    bits: impl Fn(&Entry<F>) -> u64,
) -> Classified {
    match decoded {
        Ok(Entry::Absent) => Classified::ABSENT,
        Ok(ref e @ Entry::Table { next, .. }) => Classified {
            class: EntryClass::Table,
            number: next.number(),
            bits: bits(e),
        },
        Ok(ref e @ Entry::Leaf { pfn, .. }) => Classified {
            class: EntryClass::Leaf,
            number: pfn.number(),
            bits: bits(e),
        },
        Ok(ref e @ Entry::ProtNone { pfn, .. }) => Classified {
            class: EntryClass::ProtNone,
            number: pfn.number(),
            bits: bits(e),
        },
        Ok(Entry::Software(_)) => Classified {
            class: EntryClass::Software,
            number: software_type::<F>(raw),
            bits: raw,
        },
        Err(_) => Classified::INVALID,
    }
}

fn software_type<F: PteFormat>(raw: u64) -> u64 {
    match F::ARCH {
        devpriv_pte::Arch::X86_64 => raw >> 59,
        devpriv_pte::Arch::Aarch64 => raw >> 6 & 31,
    }
}

fn x86_bits(e: &Entry<X86_64>) -> u64 {
    match e {
        Entry::Table { attrs, .. } => attrs.into_bits(),
        Entry::Leaf { attrs, .. } | Entry::ProtNone { attrs, .. } => attrs.into_bits(),
        _ => 0,
    }
}

fn arm_bits(e: &Entry<Aarch64>) -> u64 {
    match e {
        Entry::Table { attrs, .. } => attrs.into_bits(),
        Entry::Leaf { attrs, .. } | Entry::ProtNone { attrs, .. } => attrs.into_bits(),
        _ => 0,
    }
}

/// Raw values: the biased mix plus software entries every profile can write.
fn raw() -> impl Strategy<Value = u64> {
    prop_oneof![
        raw_value(),
        software_kind().prop_map(|kind| {
            X86_64::encode(&Entry::Software(SoftwareEntry::new(kind)), Level::L1).unwrap_or(0)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1024), ..ProptestConfig::default() })]

    #[test]
    fn classify_agrees_with_decode(
        raw in raw(),
        level in prop_oneof![Just(Level::L1), Just(Level::L2), Just(Level::L3), Just(Level::L4)],
        preset in 0..Profile::PRESETS.len(),
    ) {
        let profile = Profile::PRESETS[preset];
        prop_assert_eq!(
            X86_64::classify(raw, level, &profile),
            expected(raw, X86_64::decode_in(raw, level, &profile), x86_bits)
        );
        prop_assert_eq!(
            Aarch64::classify(raw, level, &profile),
            expected(raw, Aarch64::decode_in(raw, level, &profile), arm_bits)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(32), ..ProptestConfig::default() })]

    #[test]
    fn classify_table_agrees_with_classify(
        raws in prop::collection::vec(raw(), 0..=TABLE_ENTRIES),
        level in prop_oneof![Just(Level::L1), Just(Level::L2)],
    ) {
        let profile = Profile::LINUX_X86_64_4LEVEL;
        let x86 = X86_64::classify_table(&raws, level, &profile);
        let arm = Aarch64::classify_table(&raws, level, &profile);
        for class in CLASSES {
            let x86_expected: Vec<usize> = raws
                .iter()
                .enumerate()
                .filter(|&(_, &r)| X86_64::classify(r, level, &profile).class == class)
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(x86.indices(class).collect::<Vec<_>>(), x86_expected);
            let arm_expected = raws
                .iter()
                .filter(|&&r| Aarch64::classify(r, level, &profile).class == class)
                .count() as u32;
            prop_assert_eq!(arm.count(class), arm_expected);
        }
    }
}
