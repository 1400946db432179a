//! A device bound to a process (an open `dmirror` file): the device's own page table of
//! the process's address space, kept coherent by an interval notifier, and the device
//! commands (Linux's `HMM_DMIRROR_*` ioctls).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, OnceLock};

use devpriv_migrate::{
    HmmPfn, HmmRange, IntervalNotifier, Invalidation, MigratePfn, MigrateVma, Migration,
    PageTarget, Select, SnapshotError, SubscriptionId, SystemMemory, make_device_exclusive, model,
    snapshot, snapshot_and_commit,
};
use devpriv_paging::PagingFormat;
use devpriv_pte::{DeviceIndex, PageSize, Pfn};

use crate::device::{DeviceError, Dmirror};
use crate::leak;
use crate::process::{Process, nth};

/// What one mirror entry maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorEntry {
    /// The page: a system frame, or a page of device memory.
    pub target: PageTarget,
    /// Whether the device may write it.
    pub write: bool,
    /// The device holds it exclusively (atomic access).
    pub exclusive: bool,
}

/// What a command did (Linux's `struct hmm_dmirror_cmd` `cpages` and `faults`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandResult {
    /// Pages the command handled (read, written, migrated, ...).
    pub cpages: u64,
    /// Times it had to fault pages in.
    pub faults: u64,
}

/// Snapshot byte: the page is not mapped, or not present (`HMM_DMIRROR_PROT_NONE`).
pub const PROT_NONE: u8 = 0x00;
/// Snapshot byte: the page is mapped read-only (`HMM_DMIRROR_PROT_READ`).
pub const PROT_READ: u8 = 0x01;
/// Snapshot byte: the page is mapped writable (`HMM_DMIRROR_PROT_WRITE`).
pub const PROT_WRITE: u8 = 0x02;
/// Snapshot flag: mapped by a 2 MiB entry (`HMM_DMIRROR_PROT_PMD`).
pub const PROT_PMD: u8 = 0x04;
/// Snapshot flag: mapped by a 1 GiB entry (`HMM_DMIRROR_PROT_PUD`).
pub const PROT_PUD: u8 = 0x08;
/// Snapshot flag: the shared zero page (`HMM_DMIRROR_PROT_ZERO`).
pub const PROT_ZERO: u8 = 0x10;
/// Snapshot byte kind: a device-private page of this device
/// (`HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL`).
pub const PROT_DEV_PRIVATE_LOCAL: u8 = 0x20;
/// Snapshot byte kind: a device-private page of another device
/// (`HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE`).
pub const PROT_DEV_PRIVATE_REMOTE: u8 = 0x30;
/// Snapshot byte: the page cannot be accessed (`HMM_DMIRROR_PROT_ERROR`).
pub const PROT_ERROR: u8 = 0xff;

/// How often a command retries a snapshot that keeps being invalidated.
const RETRIES: u32 = 64;
/// Pages migrated per `Migration` (Linux's dmirror works in 64-page chunks).
const CHUNK: u64 = 512;

/// A device's view of one process.
pub struct Mirror<F: PagingFormat + 'static> {
    device: &'static Dmirror<F>,
    process: &'static Process<F>,
    /// The device page table: virtual page number → entry (the driver lock).
    table: Mutex<BTreeMap<u64, MirrorEntry>>,
    subscription: OnceLock<SubscriptionId>,
}

impl<F: PagingFormat> IntervalNotifier for Mirror<F> {
    /// Linux's `dmirror_interval_invalidate`: drop the entries of the range, except when
    /// the device's own migration is the cause (it updates the mirror itself).
    fn invalidate(&self, _subscription: SubscriptionId, range: &Invalidation) {
        if range.is_migration_by(self.device.owner()) {
            return;
        }
        self.drop_range(&mut self.lock(), range.start, range.end);
    }
}

impl<F: PagingFormat> Mirror<F> {
    pub(crate) fn new(device: &'static Dmirror<F>, process: &'static Process<F>) -> &'static Self {
        let mirror: &'static Self = leak(Self {
            device,
            process,
            table: Mutex::new(BTreeMap::new()),
            subscription: OnceLock::new(),
        });
        let id = process
            .space()
            .subscribe(0, u64::MAX, mirror)
            .expect("room for a subscription");
        assert!(
            mirror.subscription.set(id).is_ok(),
            "the subscription is set once"
        );
        mirror
    }

    /// The process.
    pub fn process(&self) -> &'static Process<F> {
        self.process
    }

    /// The device.
    pub fn device(&self) -> &'static Dmirror<F> {
        self.device
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, MirrorEntry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_range(&self, table: &mut BTreeMap<u64, MirrorEntry>, start: u64, end: u64) {
        let first = start >> 12;
        let last = end.saturating_sub(1) >> 12;
        let doomed: Vec<u64> = table.range(first..=last).map(|(k, _)| *k).collect();
        for k in doomed {
            table.remove(&k);
        }
    }

    /// Drops `[start, end)` from the mirror (the device's own migrations).
    pub(crate) fn forget(&self, start: u64, end: u64) {
        self.drop_range(&mut self.lock(), start, end);
    }

    /// The mirror entry for `va`, if the device maps it.
    pub fn entry(&self, va: u64) -> Option<MirrorEntry> {
        self.lock().get(&(va >> 12)).copied()
    }

    /// Mirror entries now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the mirror is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_range(va: u64, len: u64) -> Result<u64, DeviceError> {
        if va & 0xfff != 0 || len == 0 || len & 0xfff != 0 {
            return Err(DeviceError::Invalid);
        }
        va.checked_add(len).ok_or(DeviceError::Invalid)
    }

    /// Linux's `dmirror_fault`: snapshot `[start, end)` faulting every page in (writable
    /// if `write`), and put it in the mirror under the lock the notifier takes, unless
    /// an invalidation raced.
    fn fault(&self, start: u64, end: u64, write: bool) -> Result<(), DeviceError> {
        let pages = ((end - start) >> 12) as usize;
        let mut pfns: Vec<HmmPfn> = vec![HmmPfn::none(); pages];
        let mut flags = HmmPfn::<devpriv_migrate::DevicePrivateSeries>::REQ_FAULT;
        if write {
            flags |= HmmPfn::<devpriv_migrate::DevicePrivateSeries>::REQ_WRITE;
        }
        let mut range = HmmRange {
            start,
            end,
            pfns: &mut pfns,
            default_flags: HmmPfn::from_raw(flags),
            pfn_flags_mask: HmmPfn::none(),
            owner: Some(self.device.owner()),
        };
        let space = self.process.space();
        let mut fault_in = |va, write| model::anonymous_fault(space, va, write);
        snapshot_and_commit(
            space,
            *self.subscription.get().expect("subscribed"),
            &mut range,
            &mut fault_in,
            || self.lock(),
            |table, words| {
                for (i, word) in words.iter().enumerate() {
                    if let Some(target) = word.target() {
                        table.insert(
                            (start >> 12) + i as u64,
                            MirrorEntry {
                                target,
                                write: word.is_writable(),
                                exclusive: false,
                            },
                        );
                    }
                }
            },
            RETRIES,
        )
        .map_err(|e| match e {
            SnapshotError::Busy(_) | SnapshotError::TooManyRetries => DeviceError::Busy,
            // A write to a read-only region is -EPERM; a page nothing maps, -EFAULT.
            SnapshotError::Fault { va }
                if write && space.vma(va).is_some_and(|v| !v.property.writable) =>
            {
                DeviceError::Permission
            }
            _ => DeviceError::Fault,
        })
    }

    /// The words of the page an entry maps.
    fn words(&self, target: PageTarget) -> &[std::sync::atomic::AtomicU64; 512] {
        match target {
            PageTarget::System(pfn) => self.device.machine().ram.words(pfn),
            PageTarget::Device(index) => self.device.page_words(index),
        }
    }

    /// `HMM_DMIRROR_READ`: reads `[va, va + out.len() * 8)` through the device's page
    /// table, faulting pages in where the mirror has none. `out` changes only if the
    /// whole read succeeds (Linux copies its bounce buffer out only then).
    pub fn read(&self, va: u64, out: &mut [u64]) -> Result<CommandResult, DeviceError> {
        let mut bounce = vec![0; out.len()];
        let result = self.access(va, out.len() as u64 * 8, false, |page, words| {
            let base = page * 512;
            for (w, word) in words.iter().enumerate() {
                if let Some(slot) = bounce.get_mut(base + w) {
                    *slot = word.load(Ordering::Relaxed);
                }
            }
        })?;
        out.copy_from_slice(&bounce);
        Ok(result)
    }

    /// `HMM_DMIRROR_WRITE`: writes `data` at `va` through the device's page table,
    /// faulting pages in writable where needed.
    pub fn write(&self, va: u64, data: &[u64]) -> Result<CommandResult, DeviceError> {
        self.access(va, data.len() as u64 * 8, true, |page, words| {
            let base = page * 512;
            for (w, word) in words.iter().enumerate() {
                if let Some(value) = data.get(base + w) {
                    word.store(*value, Ordering::Relaxed);
                }
            }
        })
    }

    fn access(
        &self,
        va: u64,
        len: u64,
        write: bool,
        mut each: impl FnMut(usize, &[std::sync::atomic::AtomicU64; 512]),
    ) -> Result<CommandResult, DeviceError> {
        let end = Self::check_range(va, len)?;
        let mut result = CommandResult::default();
        let mut page = va;
        while page < end {
            {
                let table = self.lock();
                if let Some(e) = table.get(&(page >> 12)).copied()
                    && (!write || e.write)
                {
                    // The lock keeps the entry valid (an invalidation waits for it).
                    each(((page - va) >> 12) as usize, self.words(e.target));
                    result.cpages += 1;
                    page += 4096;
                    continue;
                }
            }
            result.faults += 1;
            if result.faults > 2 * ((end - va) >> 12) + 8 {
                return Err(DeviceError::Busy);
            }
            self.fault(page, end, write)?;
        }
        Ok(result)
    }

    /// `HMM_DMIRROR_MIGRATE_TO_DEV`: migrates `[va, va + len)` to the device memory
    /// (2 MiB folios where whole 2 MiB pages or holes allow, 4 KiB where the 2 MiB
    /// allocation fails), copying, and maps the pages that moved in the mirror.
    ///
    /// As Linux's dmirror, it then reads the range back through the mirror: `cpages` is
    /// the number of pages on the device, and a page that did not move (shared memory,
    /// a pinned page, another device's page, a failed copy or allocation) makes it
    /// [`DeviceError::NotFound`]. A range not wholly in accessible regions is
    /// [`DeviceError::Invalid`].
    pub fn migrate_to_device(&self, va: u64, len: u64) -> Result<CommandResult, DeviceError> {
        let end = Self::check_range(va, len)?;
        let space = self.process.space();
        let mut start = va;
        while start < end {
            let vma = space.vma(start).ok_or(DeviceError::Invalid)?;
            let stop = end
                .min((start + CHUNK * 4096) & !(CHUNK * 4096 - 1))
                .min(vma.end);
            self.migrate_chunk_to_device(start, stop, vma.property.writable)?;
            start = stop;
        }
        let mut result = CommandResult::default();
        let table = self.lock();
        for page in (va..end).step_by(4096) {
            match table.get(&(page >> 12)) {
                Some(MirrorEntry {
                    target: PageTarget::Device(index),
                    ..
                }) if self.device.owns(*index) => result.cpages += 1,
                _ => return Err(DeviceError::NotFound),
            }
        }
        Ok(result)
    }

    /// One `Migration` of `[start, stop)`, inside one region and one 2 MiB block.
    fn migrate_chunk_to_device(
        &self,
        start: u64,
        stop: u64,
        writable: bool,
    ) -> Result<(), DeviceError> {
        let space = self.process.space();
        let pages = ((stop - start) >> 12) as usize;
        let mut src = vec![MigratePfn::EMPTY; pages];
        let mut dst = vec![MigratePfn::EMPTY; pages];
        let mut m = Migration::setup(MigrateVma {
            address_space: space,
            start,
            end: stop,
            select: Select::SYSTEM | Select::COMPOUND,
            owner: self.device.owner(),
            fault: None,
            src: &mut src,
            dst: &mut dst,
        })
        .map_err(|_| DeviceError::Invalid)?;
        let words: Vec<MigratePfn> = m.src().to_vec();
        for (i, s) in words.iter().enumerate() {
            if !s.is_migrating() {
                continue;
            }
            let source = s.target().map(|t| match t {
                PageTarget::System(pfn) => pfn,
                PageTarget::Device(_) => unreachable!("system pages only"),
            });
            if let Some(folio) = self.device.allocate(s.size()) {
                if self.device.copy_in(folio.index(), source, s.size()) {
                    m.set_device_destination(i, folio)
                        .map_err(|(_, _)| DeviceError::Invalid)?;
                }
            } else if s.size() == PageSize::Size2MiB {
                // 4 KiB destinations: the 2 MiB source is split at commit.
                for k in 0..512 {
                    let Some(folio) = self.device.allocate(PageSize::Size4KiB) else {
                        break;
                    };
                    let piece = source.map(|p| nth(p, k as u64));
                    if self
                        .device
                        .copy_in(folio.index(), piece, PageSize::Size4KiB)
                    {
                        m.set_device_destination(i + k, folio)
                            .map_err(|(_, _)| DeviceError::Invalid)?;
                    }
                }
            }
        }
        let m = m.pages();
        // Linux's dmirror_migrate_finalize_and_map: the pages that move are the
        // device's, mapped in its page table as the process maps them (its own
        // migration's invalidation skipped the mirror).
        {
            let mut table = self.lock();
            for (i, (s, d)) in m.src().iter().zip(m.dst()).enumerate() {
                let (true, Some(PageTarget::Device(index))) = (s.is_migrating(), d.target()) else {
                    continue;
                };
                let write = writable && (s.is_hole() || s.is_writable());
                for k in 0..d.size().frames() {
                    table.insert(
                        (start >> 12) + i as u64 + k,
                        MirrorEntry {
                            target: PageTarget::Device(DeviceIndex::new(index.number() + k)),
                            write,
                            exclusive: false,
                        },
                    );
                }
            }
        }
        m.finalize();
        Ok(())
    }

    /// `HMM_DMIRROR_MIGRATE_TO_SYS`: migrates the device's pages in `[va, va + len)`
    /// back to system memory. `cpages` is the number of pages collected.
    pub fn migrate_to_system(&self, va: u64, len: u64) -> Result<CommandResult, DeviceError> {
        let end = Self::check_range(va, len)?;
        let space = self.process.space();
        if space.vma(va).is_none_or(|v| !v.covers(va, end)) {
            return Err(DeviceError::Invalid);
        }
        let mut result = CommandResult::default();
        let mut start = va;
        while start < end {
            let stop = end
                .min((start + CHUNK * 4096) & !(CHUNK * 4096 - 1))
                .max(start + 4096);
            let pages = ((stop - start) >> 12) as usize;
            let mut src = vec![MigratePfn::EMPTY; pages];
            let mut dst = vec![MigratePfn::EMPTY; pages];
            let mut m = Migration::setup(MigrateVma {
                address_space: space,
                start,
                end: stop,
                select: Select::DEVICE_PRIVATE | Select::COMPOUND,
                owner: self.device.owner(),
                fault: None,
                src: &mut src,
                dst: &mut dst,
            })
            .map_err(|_| DeviceError::Invalid)?;
            let collected: u64 = m
                .src()
                .iter()
                .filter(|s| s.is_valid() && s.is_migrating())
                .map(|s| s.size().frames())
                .sum();
            result.cpages += collected;
            // The device stops using the pages before they are copied.
            self.forget(start, stop);
            self.device.bring_back(&mut m);
            m.pages().finalize();
            start = stop;
        }
        Ok(result)
    }

    /// `HMM_DMIRROR_SNAPSHOT`: one byte per page of `[va, va + len)` saying what the
    /// process maps there, without faulting anything in.
    pub fn snapshot(&self, va: u64, len: u64) -> Result<Vec<u8>, DeviceError> {
        let end = Self::check_range(va, len)?;
        let pages = ((end - va) >> 12) as usize;
        let mut pfns: Vec<HmmPfn> = vec![HmmPfn::none(); pages];
        let mut range = HmmRange {
            start: va,
            end,
            pfns: &mut pfns,
            default_flags: HmmPfn::none(),
            pfn_flags_mask: HmmPfn::none(),
            owner: Some(self.device.owner()),
        };
        let space = self.process.space();
        let mut never = |_: u64, _: bool| false;
        snapshot(space, &mut range, &mut never).map_err(|e| match e {
            SnapshotError::Busy(_) => DeviceError::Busy,
            _ => DeviceError::Fault,
        })?;
        let zero = self.device.machine().ram.zero_page();
        Ok(pfns
            .iter()
            .enumerate()
            .map(|(i, w)| self.snapshot_byte(va + (i as u64) * 4096, *w, zero))
            .collect())
    }

    fn snapshot_byte(&self, va: u64, word: HmmPfn, zero: Option<Pfn>) -> u8 {
        if word.is_error() {
            return PROT_ERROR;
        }
        let order_flag = match word.order() {
            9 => PROT_PMD,
            18 => PROT_PUD,
            _ => 0,
        };
        let access = |writable| if writable { PROT_WRITE } else { PROT_READ };
        match word.target() {
            Some(PageTarget::Device(_)) => {
                PROT_DEV_PRIVATE_LOCAL | access(word.is_writable()) | order_flag
            }
            Some(PageTarget::System(pfn)) => {
                let zero_flag = if Some(pfn) == zero { PROT_ZERO } else { 0 };
                access(word.is_writable()) | zero_flag | order_flag
            }
            // Not present to this device. Linux's private dmirror reports another
            // device's page as none (hmm_range_fault hides it); the page table tells us
            // more, so the byte says whose it is.
            None => match self.process.entry(va) {
                (
                    level,
                    devpriv_pte::Entry::Software(devpriv_pte::SoftwareEntry {
                        kind: devpriv_pte::SoftwareKind::DevicePrivate { access: a, .. },
                        ..
                    }),
                ) => {
                    let order_flag = if level == devpriv_pte::Level::L2 {
                        PROT_PMD
                    } else {
                        0
                    };
                    PROT_DEV_PRIVATE_REMOTE
                        | access(a == devpriv_pte::DeviceAccess::Write)
                        | order_flag
                }
                _ => PROT_NONE,
            },
        }
    }

    /// `HMM_DMIRROR_EXCLUSIVE`: takes every page of `[va, va + len)` for exclusive
    /// (atomic) access by the device, mapping it in the mirror.
    pub fn exclusive(&self, va: u64, len: u64) -> Result<CommandResult, DeviceError> {
        let end = Self::check_range(va, len)?;
        let space = self.process.space();
        let mut result = CommandResult::default();
        for page in (va..end).step_by(4096) {
            let mut fault_in = |va, write| model::anonymous_fault(space, va, write);
            let mut tries = 0;
            let taken = loop {
                tries += 1;
                if tries > RETRIES {
                    return Err(DeviceError::Busy);
                }
                let taken =
                    match make_device_exclusive(space, page, self.device.owner(), &mut fault_in) {
                        Ok(taken) => taken,
                        Err(devpriv_migrate::ExclusiveError::Busy(_)) => {
                            std::thread::yield_now();
                            continue;
                        }
                        Err(devpriv_migrate::ExclusiveError::NoWritableVma { .. }) => {
                            return Err(DeviceError::Permission);
                        }
                        Err(_) => return Err(DeviceError::Fault),
                    };
                // The hand-over's own invalidation is over: from here the sequence
                // covers what the page table says, and the mirror entry goes in only if
                // nothing took the page away since (a CPU touch waits for the page
                // lock `taken` holds; a protection change does not).
                let sub = *self.subscription.get().expect("subscribed");
                let seq = space.read_begin(sub).map_err(|_| DeviceError::Invalid)?;
                let still = matches!(
                    self.process.entry(page).1,
                    devpriv_pte::Entry::Software(devpriv_pte::SoftwareEntry {
                        kind: devpriv_pte::SoftwareKind::DeviceExclusive { pfn },
                        ..
                    }) if pfn == taken.pfn()
                );
                let mut table = self.lock();
                if !still || space.read_retry(sub, seq) {
                    continue;
                }
                table.insert(
                    page >> 12,
                    MirrorEntry {
                        target: PageTarget::System(taken.pfn()),
                        write: true,
                        exclusive: true,
                    },
                );
                break taken;
            };
            drop(taken);
            result.cpages += 1;
        }
        Ok(result)
    }

    /// `HMM_DMIRROR_CHECK_EXCLUSIVE`: whether every page of `[va, va + len)` the device
    /// took exclusively has been taken back — CPU touches and protection changes end
    /// exclusive access, and the notifier drops the mirror entry. As in Linux, a page
    /// the device still holds exclusively makes it [`DeviceError::Permission`]. (Use
    /// [`entry`](Self::entry) to ask whether one page is still held.)
    pub fn check_exclusive(&self, va: u64, len: u64) -> Result<(), DeviceError> {
        let end = Self::check_range(va, len)?;
        let table = self.lock();
        for page in (va..end).step_by(4096) {
            if table.get(&(page >> 12)).is_some_and(|e| e.exclusive) {
                return Err(DeviceError::Permission);
            }
        }
        Ok(())
    }
}
