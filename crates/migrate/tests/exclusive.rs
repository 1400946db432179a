//! Device-exclusive access: hand-over, CPU restore, revocation by a protection change.

mod common;

use common::*;
use devpriv_migrate::*;
use devpriv_paging::PagingFormat;
use devpriv_pte::arch::aarch64::Aarch64;
use devpriv_pte::arch::x86_64::X86_64;
use devpriv_pte::{Entry, LeafAttributes, Level, SoftwareEntry, SoftwareKind};

fn fault_in<F: PagingFormat>(space: &'static Space<F>) -> impl FnMut(u64, bool) -> bool {
    move |va, write| model::anonymous_fault(space, va, write)
}

fn exclusive_then_cpu_restores<F: PagingFormat>(huge: bool) {
    let w = world::<F>(16, 4096);
    let rec = Recorder::leak();
    w.space.subscribe(BASE, BASE + REGION, rec).unwrap();
    w.populate(BASE, MIB2, huge);
    let va = BASE + 3 * KIB4;
    let page =
        make_device_exclusive(w.space, va + 16, w.device.owner, &mut fault_in(w.space)).unwrap();
    assert_eq!(page.va(), va);
    assert!(w.ram.is_locked(page.pfn()), "handed over locked");
    let events = rec.events();
    let last = events.last().unwrap();
    assert_eq!(
        (last.event, last.owner, last.start, last.end),
        (
            InvalidateEvent::Exclusive,
            Some(w.device.owner),
            va,
            va + KIB4
        )
    );
    assert!(matches!(
        w.space.read().lookup(va).unwrap(),
        (Level::L1, Entry::Software(SoftwareEntry { kind: SoftwareKind::DeviceExclusive { pfn }, .. })) if pfn == page.pfn()
    ));
    // The device writes through its exclusive access.
    w.ram.write(page.pfn(), 5, 0xfeed);
    let pfn = page.pfn();
    drop(page);
    assert!(!w.ram.is_locked(pfn));
    // A CPU write takes the page back (after a Clear notification).
    rec.clear();
    w.cpu().write(va + 8, 0x1234).unwrap();
    assert_eq!(rec.events()[0].event, InvalidateEvent::Clear);
    match w.space.read().lookup(va).unwrap() {
        (Level::L1, Entry::Leaf { pfn: p, attrs, .. }) => {
            assert_eq!(p, pfn);
            assert!(attrs.property().writable);
        }
        other => panic!("{other:?}"),
    }
    let cpu = w.cpu();
    assert_eq!(cpu.read(va + 40).unwrap(), 0xfeed);
    assert_eq!(cpu.read(va + 8).unwrap(), 0x1234);
    assert_eq!(cpu.read(va).unwrap(), pattern(3, 0));
    w.assert_quiescent();
}

#[test]
fn exclusive_then_cpu_restores_x86_64() {
    exclusive_then_cpu_restores::<X86_64>(false);
}

#[test]
fn exclusive_inside_a_2mib_mapping_x86_64() {
    exclusive_then_cpu_restores::<X86_64>(true);
}

#[test]
fn exclusive_then_cpu_restores_aarch64() {
    exclusive_then_cpu_restores::<Aarch64>(false);
    exclusive_then_cpu_restores::<Aarch64>(true);
}

/// Making a page read-only revokes the device's exclusive access: the page is mapped
/// again, read-only.
#[test]
fn protection_change_revokes() {
    let w = world::<X86_64>(16, 4096);
    w.populate(BASE, 4 * KIB4, false);
    let page = make_device_exclusive(w.space, BASE + KIB4, w.device.owner, &mut fault_in(w.space))
        .unwrap();
    let pfn = page.pfn();
    drop(page);
    w.space.protect(BASE, 4 * KIB4, false).unwrap();
    match w.space.read().lookup(BASE + KIB4).unwrap() {
        (Level::L1, Entry::Leaf { pfn: p, attrs, .. }) => {
            assert_eq!(p, pfn);
            assert!(!attrs.property().writable);
        }
        other => panic!("{other:?}"),
    }
    w.check_pattern(BASE, 4 * KIB4);
    w.assert_quiescent();
}

/// An absent page is faulted in first; a device page is brought back first; a locked
/// page is busy; a read-only region is refused.
#[test]
fn faults_in_and_refusals() {
    let w = world::<X86_64>(4096, 4096);
    let page =
        make_device_exclusive(w.space, BASE, w.device.owner, &mut fault_in(w.space)).unwrap();
    assert_eq!(w.ram.read(page.pfn(), 0), 0, "a fresh zeroed page");
    // Busy while the first hand-over holds the lock: another CPU access waits.
    assert_eq!(
        handle_fault(w.space, BASE, true),
        Ok(FaultOutcome::Wait(WaitFor::SystemFrame(page.pfn())))
    );
    drop(page);
    w.populate(BASE + MIB2, 4 * KIB4, false);
    w.to_device(w.device, BASE + MIB2, 4 * KIB4, false);
    let page = make_device_exclusive(
        w.space,
        BASE + MIB2 + KIB4,
        w.other.owner,
        &mut fault_in(w.space),
    )
    .unwrap();
    assert_eq!(w.ram.read(page.pfn(), 3), pattern(512 + 1, 3));
    drop(page);
    assert!(matches!(
        make_device_exclusive(w.space, 0x1000, w.device.owner, &mut fault_in(w.space)),
        Err(ExclusiveError::NoWritableVma { va: 0x1000 })
    ));
    let mut never = |_: u64, _: bool| false;
    assert_eq!(
        make_device_exclusive(w.space, BASE + 3 * MIB2, w.device.owner, &mut never).err(),
        Some(ExclusiveError::FaultFailed {
            va: BASE + 3 * MIB2
        })
    );
}
