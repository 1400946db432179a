//! `unmap` and `protect` of part of a 2 MiB page split it first — the entry, and the
//! frame or device folio behind it — as Linux splits a huge page that `munmap` or
//! `mprotect` cuts.

mod common;

use common::*;
use devpriv_paging::PagingFormat;
use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{Entry, LeafAttributes, Level, SoftwareEntry, SoftwareKind};

fn level_and_kind<F: PagingFormat>(w: &World<F>, va: u64) -> (Level, &'static str) {
    let (level, e) = w.space.read().lookup(va).unwrap();
    let kind = match e {
        Entry::Absent => "absent",
        Entry::Leaf { .. } => "leaf",
        Entry::Software(SoftwareEntry {
            kind: SoftwareKind::DevicePrivate { .. },
            ..
        }) => "device",
        _ => "other",
    };
    (level, kind)
}

/// Unmapping a quarter of a 2 MiB system page in its middle frees those 128 frames
/// only; the rest stays mapped (4 KiB entries) with its bytes.
fn unmap_cuts_a_system_page<F: PagingFormat>() {
    let w = world::<F>(1024, 2048);
    w.populate(BASE, MIB2, true);
    let before = w.ram.live_frames();
    w.unmap(w.space, BASE + MIB2 / 4, MIB2 / 4);
    assert_eq!(w.ram.live_frames(), before - 128);
    assert_eq!(level_and_kind(&w, BASE), (Level::L1, "leaf"));
    assert_eq!(level_and_kind(&w, BASE + MIB2 / 4), (Level::L1, "absent"));
    w.check_pattern(BASE, MIB2 / 4);
    w.check_pattern(BASE + MIB2 / 2, MIB2 / 2);
    w.unmap(w.space, BASE, MIB2);
    w.assert_quiescent();
}

/// Unmapping the second half of a 2 MiB device page splits the folio: 256 device pages
/// are freed, 256 stay mapped as 4 KiB device-private entries and fault back intact.
fn unmap_cuts_a_device_page<F: PagingFormat>() {
    let w = world::<F>(1024, 2048);
    w.populate(BASE, MIB2, true);
    w.to_device(w.device, BASE, MIB2, true);
    assert_eq!(level_and_kind(&w, BASE), (Level::L2, "device"));
    w.unmap(w.space, BASE + MIB2 / 2, MIB2 / 2);
    assert_eq!(w.device.pagemap().allocated_pages(), 256);
    assert_eq!(level_and_kind(&w, BASE), (Level::L1, "device"));
    w.check_pattern(BASE, MIB2 / 2);
    assert_eq!(w.device.pagemap().allocated_pages(), 0);
    w.unmap(w.space, BASE, MIB2);
    w.assert_quiescent();
}

/// Write-protecting one page of a 2 MiB system page leaves the other 511 writable.
fn protect_cuts_a_system_page<F: PagingFormat>() {
    let w = world::<F>(1024, 2048);
    w.populate(BASE, MIB2, true);
    w.space.protect(BASE + 5 * KIB4, KIB4, false).unwrap();
    let writable = |va| match w.space.read().lookup(va).unwrap() {
        (Level::L1, Entry::Leaf { attrs, .. }) => attrs.property().writable,
        other => panic!("{other:?}"),
    };
    assert!(!writable(BASE + 5 * KIB4));
    assert!(writable(BASE + 4 * KIB4) && writable(BASE + 6 * KIB4));
    w.check_pattern(BASE, MIB2);
    w.unmap(w.space, BASE, MIB2);
    w.assert_quiescent();
}

/// `split_huge_page` splits a 2 MiB system page in place (every page still mapped, its
/// bytes unchanged) and leaves a 4 KiB page alone.
fn split_huge_page_splits_in_place<F: PagingFormat>() {
    let w = world::<F>(1024, 2048);
    w.populate(BASE, MIB2, true);
    w.space.split_huge_page(BASE + 17 * KIB4).unwrap();
    assert_eq!(level_and_kind(&w, BASE), (Level::L1, "leaf"));
    assert_eq!(level_and_kind(&w, BASE + MIB2 - KIB4), (Level::L1, "leaf"));
    w.space.split_huge_page(BASE).unwrap();
    w.check_pattern(BASE, MIB2);
    w.unmap(w.space, BASE, MIB2);
    w.assert_quiescent();
}

#[test]
fn split_huge_page_splits_in_place_x86_64() {
    split_huge_page_splits_in_place::<X86_64>();
}

#[test]
fn split_huge_page_splits_in_place_aarch64() {
    split_huge_page_splits_in_place::<Aarch64>();
}

#[test]
fn unmap_cuts_a_system_page_x86_64() {
    unmap_cuts_a_system_page::<X86_64>();
}

#[test]
fn unmap_cuts_a_system_page_aarch64() {
    unmap_cuts_a_system_page::<Aarch64>();
}

#[test]
fn unmap_cuts_a_device_page_x86_64() {
    unmap_cuts_a_device_page::<X86_64>();
}

#[test]
fn unmap_cuts_a_device_page_aarch64() {
    unmap_cuts_a_device_page::<Aarch64>();
}

#[test]
fn protect_cuts_a_system_page_x86_64() {
    protect_cuts_a_system_page::<X86_64>();
}

#[test]
fn protect_cuts_a_system_page_aarch64() {
    protect_cuts_a_system_page::<Aarch64>();
}
