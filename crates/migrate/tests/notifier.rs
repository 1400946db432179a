//! Interval notifiers: who hears what, with which owner, and the sequence protocol.

mod common;

use common::*;
use devpriv_migrate::*;
use devpriv_pte::arch::x86_64::X86_64;

#[test]
fn events_owners_and_clipping() {
    let w = world::<X86_64>(1024, 4096);
    let all = Recorder::leak();
    let part = Recorder::leak();
    w.space.subscribe(BASE, BASE + REGION, all).unwrap();
    let id = w
        .space
        .subscribe(BASE + KIB4, BASE + 2 * KIB4, part)
        .unwrap();
    assert_eq!(w.space.subscriptions(), 2);
    w.populate(BASE, 4 * KIB4, false);
    assert!(all.events().is_empty(), "mapping takes nothing away");
    w.to_device(w.device, BASE, 4 * KIB4, false);
    let ev = all.events();
    // Collection, then the second window for nothing (no holes): one Migrate event,
    // with the migrating device as owner.
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].event, InvalidateEvent::Migrate);
    assert!(ev[0].is_migration_by(w.device.owner));
    assert!(!ev[0].is_migration_by(w.other.owner));
    assert_eq!((ev[0].start, ev[0].end), (BASE, BASE + 4 * KIB4));
    // The partial subscription sees its part only.
    assert_eq!(
        (part.events()[0].start, part.events()[0].end),
        (BASE + KIB4, BASE + 2 * KIB4)
    );
    all.clear();
    w.space.protect(BASE, KIB4, false).unwrap();
    w.unmap(w.space, BASE, 2 * KIB4);
    let kinds: Vec<_> = all.events().iter().map(|e| (e.event, e.owner)).collect();
    assert_eq!(
        kinds,
        [
            (InvalidateEvent::Protect, None),
            (InvalidateEvent::Unmap, None)
        ]
    );
    w.space.unsubscribe(id).unwrap();
    assert_eq!(w.space.unsubscribe(id), Err(NotifierError::Stale));
    assert_eq!(w.space.subscriptions(), 1);
    all.clear();
    let ram = w.ram;
    w.space.release(|r| free_removed::<X86_64>(ram, r));
    assert_eq!(all.events()[0].event, InvalidateEvent::Release);
}

#[test]
fn sequence_protocol() {
    let w = world::<X86_64>(16, 64);
    let rec = Recorder::leak();
    let id = w.space.subscribe(BASE, BASE + MIB2, rec).unwrap();
    let seq = w.space.read_begin(id).unwrap();
    assert!(!w.space.read_retry(id, seq));
    assert_eq!(w.space.try_read_begin(id), Ok(Some(seq)));
    // A change outside the subscription does not disturb it.
    w.populate(BASE + 4 * MIB2, KIB4, false);
    w.unmap(w.space, BASE + 4 * MIB2, KIB4);
    assert!(!w.space.read_retry(id, seq));
    // A change inside does.
    w.populate(BASE, KIB4, false);
    w.unmap(w.space, BASE, KIB4);
    assert!(w.space.read_retry(id, seq));
    let seq2 = w.space.read_begin(id).unwrap();
    assert_ne!(seq, seq2);
    assert!(!w.space.read_retry(id, seq2));
    // A stale id is refused and always says retry.
    w.space.unsubscribe(id).unwrap();
    assert_eq!(w.space.read_begin(id), Err(NotifierError::Stale));
    assert!(w.space.read_retry(id, seq2));
    assert_eq!(
        w.space.subscribe(BASE, BASE, rec),
        Err(NotifierError::EmptyRange)
    );
    for _ in 0..MAX_SUBSCRIPTIONS {
        w.space.subscribe(BASE, BASE + 1, rec).unwrap();
    }
    assert_eq!(
        w.space.subscribe(BASE, BASE + 1, rec),
        Err(NotifierError::Full)
    );
}

/// While an invalidation is in progress, `read_begin` does not hand out a sequence.
#[test]
fn read_begin_waits_for_an_invalidation_in_progress() {
    struct Probe {
        space: std::sync::OnceLock<(&'static Space<X86_64>, SubscriptionId)>,
        seen: std::sync::Mutex<Vec<Result<Option<u64>, NotifierError>>>,
    }
    impl IntervalNotifier for Probe {
        fn invalidate(&self, _: SubscriptionId, _: &Invalidation) {
            let (space, id) = *self.space.get().unwrap();
            self.seen.lock().unwrap().push(space.try_read_begin(id));
        }
    }
    let w = world::<X86_64>(16, 64);
    let probe: &'static Probe = Box::leak(Box::new(Probe {
        space: std::sync::OnceLock::new(),
        seen: std::sync::Mutex::new(Vec::new()),
    }));
    let id = w.space.subscribe(BASE, BASE + MIB2, probe).unwrap();
    probe.space.set((w.space, id)).ok().unwrap();
    w.populate(BASE, KIB4, false);
    w.unmap(w.space, BASE, KIB4);
    assert_eq!(*probe.seen.lock().unwrap(), [Ok(None)]);
    assert!(w.space.try_read_begin(id).unwrap().is_some());
}
