//! Classifying entries without building the typed [`Entry`].
//!
//! A table walker mostly asks "what is this entry, and its frame?". [`Classified`] answers
//! with the validation of [`PteFormat::decode_in`] and none
//! of its cost: the class, a number (the frame, or a software entry's type) and the
//! attribute bits, as plain words the compiler keeps in registers. A software entry stays
//! its validated raw value ([`Classified::bits`]); decode it when its kind matters.
//! [`TableClasses`] classifies a whole table into one bitmap per class.
//!
//! `classify(raw, level, profile).class` is exactly the class of `decode_in(raw, level,
//! profile)` (a property test checks it), with [`EntryClass::Invalid`] for an error.

use crate::entry::Entry;
use crate::error::DecodeError;
use crate::format::PteFormat;

/// What kind of entry a raw value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryClass {
    /// [`Entry::Absent`].
    Absent = 0,
    /// [`Entry::Table`].
    Table = 1,
    /// [`Entry::Leaf`].
    Leaf = 2,
    /// [`Entry::ProtNone`].
    ProtNone = 3,
    /// [`Entry::Software`].
    Software = 4,
    /// The value does not decode ([`DecodeError`]).
    Invalid = 5,
}

/// Every class, in `repr` order.
pub const CLASSES: [EntryClass; 6] = [
    EntryClass::Absent,
    EntryClass::Table,
    EntryClass::Leaf,
    EntryClass::ProtNone,
    EntryClass::Software,
    EntryClass::Invalid,
];

/// A classified entry: its class and the words a walker needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Classified {
    /// What the entry is.
    pub class: EntryClass,
    /// A leaf's, table's or PROT_NONE mapping's frame number; a software entry's type
    /// number; 0 otherwise.
    pub number: u64,
    /// A leaf's or PROT_NONE mapping's attribute bits (the raw value of the format's
    /// `LeafAttributes`), a table's attribute bits (its `TableAttributes`), a software
    /// entry's raw value; 0 otherwise.
    pub bits: u64,
}

impl Classified {
    /// An absent entry.
    pub const ABSENT: Self = Self {
        class: EntryClass::Absent,
        number: 0,
        bits: 0,
    };

    /// A value that does not decode.
    pub const INVALID: Self = Self {
        class: EntryClass::Invalid,
        number: 0,
        bits: 0,
    };

    /// The classification of a full decode of `raw`, whose software type number is
    /// `type_number`; `leaf_bits` and `table_bits` give the attributes' raw values.
    #[inline]
    pub(crate) fn of_decoded<F: PteFormat>(
        decoded: Result<Entry<F>, DecodeError>,
        type_number: u64,
        raw: u64,
        leaf_bits: impl Fn(F::LeafAttributes) -> u64,
        table_bits: impl Fn(F::TableAttributes) -> u64,
    ) -> Self {
        let (class, number, bits) = match decoded {
            Ok(Entry::Absent) => return Self::ABSENT,
            Err(_) => return Self::INVALID,
            Ok(Entry::Table { next, attrs }) => {
                (EntryClass::Table, next.number(), table_bits(attrs))
            }
            Ok(Entry::Leaf { pfn, attrs, .. }) => {
                (EntryClass::Leaf, pfn.number(), leaf_bits(attrs))
            }
            Ok(Entry::ProtNone { pfn, attrs, .. }) => {
                (EntryClass::ProtNone, pfn.number(), leaf_bits(attrs))
            }
            Ok(Entry::Software(_)) => (EntryClass::Software, type_number, raw),
        };
        Self {
            class,
            number,
            bits,
        }
    }
}

/// The classes of up to 512 entries (one table), as one bitmap per class: bit `i % 64` of
/// word `i / 64` of [`Self::bitmap`]`(class)` is set when entry `i` has that class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableClasses {
    bitmaps: [[u64; 8]; 6],
}

impl TableClasses {
    /// No entries.
    pub const EMPTY: Self = Self {
        bitmaps: [[0; 8]; 6],
    };

    /// The classes of `table`'s entries (at most the first 512), one `class_of` each.
    #[inline(always)]
    pub(crate) fn of_each(table: &[u64], class_of: impl Fn(u64) -> EntryClass) -> Self {
        let mut classes = Self::EMPTY;
        for (index, &raw) in table.iter().take(512).enumerate() {
            classes.bitmaps[class_of(raw) as usize][index / 64] |= 1 << (index % 64);
        }
        classes
    }

    /// Builds the bitmaps from one word of 64 entries' classes at a time.
    #[inline(always)]
    pub(crate) fn set_word(&mut self, word: usize, class: EntryClass, bits: u64) {
        self.bitmaps[class as usize][word] = bits;
    }

    /// The entries of class `class`.
    pub const fn bitmap(&self, class: EntryClass) -> &[u64; 8] {
        &self.bitmaps[class as usize]
    }

    /// How many entries have class `class`.
    pub fn count(&self, class: EntryClass) -> u32 {
        self.bitmap(class).iter().map(|w| w.count_ones()).sum()
    }

    /// The indices of the entries of class `class`, in order.
    pub fn indices(&self, class: EntryClass) -> impl Iterator<Item = usize> + '_ {
        self.bitmap(class)
            .iter()
            .enumerate()
            .flat_map(|(word, &bits)| {
                let mut rest = bits;
                core::iter::from_fn(move || {
                    if rest == 0 {
                        return None;
                    }
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    Some(word * 64 + bit)
                })
            })
    }
}
