//! The fault handler: from a hardware fault to a devpriv decision.
//!
//! A kernel's trap entry reads the faulting address and the kind of access from the
//! hardware (x86_64: CR2 and the page-fault error code; aarch64: FAR_EL1 and ESR_EL1)
//! and calls [`Demo::handle_fault`]. The handler
//!
//! 1. checks the fault against the one the demo armed ([`Expectation`]) — anything else
//!    is an unexpected fault and fails the run;
//! 2. walks the live page table from the MMU's root with a devpriv-paging cursor over
//!    the faulting page, to the entry that made the MMU fault, and decodes it with
//!    devpriv-pte at its level;
//! 3. acts on the entry's kind: a present leaf that forbids the access is made to allow
//!    it (write, execute, access flag), a software entry is reported and handed to the
//!    [`Resolver`];
//! 4. installs the new entry with the cursor slot's compare-exchange (break-before-make
//!    where the architecture needs it), carries out the flush token, and returns
//!    [`Outcome::Resume`]: the kernel returns from the trap and the faulting instruction
//!    runs again, this time successfully.

use core::fmt::{self, Write};

use devpriv_paging::{PagingFormat, Slot};
use devpriv_pte::{Entry, LeafAttributes, Level, PageProperty, PteFormat, SoftwareKind};

use crate::frames::FrameSource;
use crate::platform::{Console, Platform};
use crate::report::Stats;
use crate::resolve::{EntryReport, Request, Resolver, SystemMemory};
use crate::stack::{Stack, StackFault};
use crate::tables::LiveTables;

/// The kind of access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Execute,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Execute => "execute",
        })
    }
}

/// Why the MMU faulted, as the hardware reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// No valid translation (x86_64: P=0 in the error code; aarch64: translation fault).
    NotPresent,
    /// A valid translation forbids the access (x86_64: P=1; aarch64: permission fault).
    Permission,
    /// The translation's access flag is clear (aarch64 access-flag fault).
    AccessFlag,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotPresent => "not present",
            Self::Permission => "permission",
            Self::AccessFlag => "access flag",
        })
    }
}

/// A page fault or abort as the kernel's trap entry decoded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The faulting virtual address.
    pub address: u64,
    /// The access.
    pub access: Access,
    /// The cause.
    pub cause: Cause,
}

/// What the kernel does after [`Demo::handle_fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// Return from the trap: the faulting instruction runs again.
    Resume,
    /// Something went wrong (already printed): exit with a failure status.
    Fail,
}

/// The fault the demo is about to cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// First byte of the region the fault may hit.
    pub start: u64,
    /// Length of the region.
    pub len: u64,
    /// The access that will fault.
    pub access: Access,
}

impl Expectation {
    fn matches(&self, fault: &Fault) -> bool {
        fault.address.wrapping_sub(self.start) < self.len && fault.access == self.access
    }
}

/// The demo state: the live table, frames, the resolver, and what has happened so far.
pub struct Demo<P: Platform, A: FrameSource, R: Resolver> {
    /// The kernel's architecture hooks.
    pub platform: P,
    /// The live page table (the one the MMU uses).
    pub tables: LiveTables<P::Format>,
    /// Frames for new tables and for resolved pages.
    pub frames: A,
    /// Decides what software entries resolve to.
    pub resolver: R,
    /// Counters for the summary.
    pub stats: Stats,
    /// The devpriv stack, once built: faults in its workload region go to it.
    stack: Option<Stack<P>>,
    expectation: Option<Expectation>,
    hits: u32,
    quiet: bool,
}

impl<P: Platform, A: FrameSource, R: Resolver> Demo<P, A, R> {
    /// The demo over the live table `tables`.
    pub fn new(platform: P, tables: LiveTables<P::Format>, frames: A, resolver: R) -> Self {
        Self {
            platform,
            tables,
            frames,
            resolver,
            stats: Stats::default(),
            stack: None,
            expectation: None,
            hits: 0,
            quiet: false,
        }
    }

    /// The console.
    pub fn console(&self) -> Console<'_, P> {
        Console::new(&self.platform, false)
    }

    /// Mutes (or unmutes) the fault handler's transcript lines, for timing.
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    /// Arms the handler for one kind of fault in a region.
    pub fn expect(&mut self, expectation: Expectation) {
        self.expectation = Some(expectation);
        self.hits = 0;
    }

    /// Disarms the handler and returns how many faults matched since [`Self::expect`].
    pub fn take_hits(&mut self) -> u32 {
        self.expectation = None;
        core::mem::take(&mut self.hits)
    }

    /// Sends faults in the stack's workload region to the stack from now on.
    pub fn attach_stack(&mut self, stack: Stack<P>) {
        self.stack = Some(stack);
    }

    /// The stack, if attached.
    pub fn stack(&self) -> Option<Stack<P>> {
        self.stack
    }

    /// A fault in the stack's region: devpriv-migrate decides.
    fn stack_fault(&mut self, stack: Stack<P>, fault: Fault) -> Outcome {
        let expected = self.expectation.is_some_and(|e| e.matches(&fault));
        let quiet = self.quiet;
        let before = stack
            .space()
            .read()
            .lookup(fault.address & !0xfff)
            .map(|(level, entry)| (level, entry.kind_name()));
        let platform = &self.platform;
        let mut out = Console::new(platform, quiet || !expected);
        let (level, kind) = before.unwrap_or((Level::L1, "unreadable"));
        let _ = write!(
            out,
            "  fault: {} at {:#x} ({}): level {} {kind} entry: ",
            fault.access,
            fault.address,
            fault.cause,
            level.number()
        );
        if !expected {
            let _ = writeln!(
                Console::new(platform, false),
                "  fault: {} at {:#x} ({}): UNEXPECTED level {} {kind} entry in the                  workload region (expected {:?})",
                fault.access,
                fault.address,
                fault.cause,
                level.number(),
                self.expectation
            );
            return Outcome::Fail;
        }
        let what = stack.handle_fault(fault.address, fault.access == Access::Write);
        let _ = writeln!(
            out,
            "{}",
            match what {
                Some(StackFault::Resolved) =>
                    "devpriv-migrate resolved it (migrate_to_ram, or exclusive access revoked)",
                Some(StackFault::Retry) => "it changed meanwhile; retry",
                Some(StackFault::CompletedInFlight) =>
                    "a migration holds the page: its completion ran, retry",
                Some(StackFault::Anonymous) => "anonymous memory: a fresh zeroed frame",
                None => "NOT RESOLVED",
            }
        );
        match what {
            Some(_) => {
                self.stats.devpriv_migrate += 1;
                self.hits += 1;
                Outcome::Resume
            }
            None => Outcome::Fail,
        }
    }

    /// Handles `fault`; see the module documentation for the steps.
    pub fn handle_fault(&mut self, fault: Fault) -> Outcome {
        self.stats.faults += 1;
        if let Some(stack) = self.stack.filter(|s| s.owns(fault.address)) {
            return self.stack_fault(stack, fault);
        }
        let Self {
            platform,
            tables,
            frames,
            resolver,
            stats,
            expectation,
            quiet,
            ..
        } = self;
        let quiet = *quiet;
        let platform: &P = platform;
        let prefix = |out: &mut Console<'_, P>| {
            let _ = write!(
                out,
                "  fault: {} at {:#x} ({}): ",
                fault.access, fault.address, fault.cause
            );
        };
        let mut out = Console::new(platform, quiet);
        prefix(&mut out);
        // Failures are always printed, with the fault's line if it was muted.
        let loud = || {
            let mut console = Console::new(platform, false);
            if quiet {
                prefix(&mut console);
            }
            console
        };
        let expected = expectation.is_some_and(|e| e.matches(&fault));
        let table = tables.paging();
        let slot = table
            .cursor(fault.address & !0xfff, 0x1000)
            .map(|mut cursor| cursor.next_slot());
        let mut slot = match slot {
            Ok(Some(slot)) => slot,
            Ok(None) => {
                let _ = writeln!(loud(), "the table walk found no entry");
                return Outcome::Fail;
            }
            Err(e) => {
                let _ = writeln!(loud(), "the table walk failed: {e}");
                return Outcome::Fail;
            }
        };
        let entry = match slot.entry() {
            Ok(entry) => entry,
            Err(e) => {
                let _ = writeln!(
                    loud(),
                    "level {} entry {:#x} does not decode: {e}",
                    slot.level().number(),
                    slot.raw()
                );
                return Outcome::Fail;
            }
        };
        if !expected {
            let _ = writeln!(
                loud(),
                "UNEXPECTED (level {} entry {:#x}, expected {:?})",
                slot.level().number(),
                slot.raw(),
                expectation
            );
            return Outcome::Fail;
        }
        let outcome = match entry {
            Entry::Leaf { pfn, size, attrs } => match allow_access(&fault, attrs.property()) {
                Some((property, action)) => {
                    let _ = writeln!(out, "present {action}");
                    stats.present_faults += 1;
                    let attrs = leaf_attrs::<P::Format>(property);
                    install(platform, quiet, &mut slot, Entry::Leaf { pfn, size, attrs })
                }
                None => {
                    let _ = writeln!(
                        loud(),
                        "UNEXPECTED: the leaf {:#x} at level {} allows this access",
                        slot.raw(),
                        slot.level().number()
                    );
                    Outcome::Fail
                }
            },
            Entry::Software(sw) => {
                let _ = writeln!(
                    out,
                    "{}{}",
                    EntryReport(&sw.kind),
                    if slot.level() == Level::L2 {
                        " (2 MiB entry)"
                    } else {
                        ""
                    }
                );
                match slot.level().leaf_size() {
                    Some(size) => {
                        let request = Request {
                            va: slot.va(),
                            size,
                            entry: sw,
                            access: fault.access,
                        };
                        let memory = SystemMemory::new(frames, table.mapper().offset());
                        resolve(
                            platform, quiet, memory, resolver, stats, &request, &mut slot,
                        )
                    }
                    None => Outcome::Fail,
                }
            }
            Entry::Absent | Entry::Table { .. } | Entry::ProtNone { .. } => {
                let _ = writeln!(
                    loud(),
                    "UNEXPECTED {} entry at level {}",
                    entry.kind_name(),
                    slot.level().number()
                );
                Outcome::Fail
            }
        };
        if outcome == Outcome::Resume {
            self.hits += 1;
        }
        outcome
    }
}

/// The attributes of a leaf with `property`, in format `F`.
fn leaf_attrs<F: PagingFormat>(property: PageProperty) -> <F as PteFormat>::LeafAttributes {
    <F as PteFormat>::LeafAttributes::from_property(property)
}

/// A present leaf forbade the access: the property that allows it, as the fault's cause
/// says, and what was changed; `None` if the leaf already allows it (a contradiction).
fn allow_access(fault: &Fault, mut property: PageProperty) -> Option<(PageProperty, &'static str)> {
    let action = match (fault.cause, fault.access) {
        (Cause::Permission, Access::Write) if !property.writable => {
            property.writable = true;
            "read-only leaf; made writable"
        }
        (Cause::Permission, Access::Execute) if !property.executable => {
            property.executable = true;
            "no-execute leaf; made executable"
        }
        (Cause::AccessFlag, _) if !property.accessed => {
            property.accessed = true;
            "access flag clear; set it (software access-flag management)"
        }
        _ => return None,
    };
    Some((property, action))
}

/// A software entry: ask the resolver, install its answer.
fn resolve<P: Platform>(
    platform: &P,
    quiet: bool,
    mut memory: SystemMemory<'_>,
    resolver: &mut dyn Resolver,
    stats: &mut Stats,
    request: &Request,
    slot: &mut Slot<'_, P::Format>,
) -> Outcome {
    let mut out = Console::new(platform, quiet);
    let resolution = match resolver.resolve(request, &mut memory, &mut out) {
        Ok(resolution) => resolution,
        Err(e) => {
            let _ = writeln!(Console::new(platform, false), "    FAILED: {e}");
            return Outcome::Fail;
        }
    };
    match request.entry.kind {
        SoftwareKind::DevicePrivate { .. } => stats.device_private += 1,
        SoftwareKind::DeviceExclusive { .. } => stats.device_exclusive += 1,
        k if k.is_migration() => stats.migration += 1,
        _ => {}
    }
    let property = PageProperty {
        writable: resolution.writable,
        accessed: resolution.young,
        dirty: resolution.dirty,
        global: true,
        ..PageProperty::default()
    };
    let leaf = Entry::Leaf {
        pfn: resolution.pfn,
        size: request.size,
        attrs: leaf_attrs::<P::Format>(property),
    };
    install(platform, quiet, slot, leaf)
}

/// Replaces the slot's entry with `entry` (compare-exchange, break-before-make where
/// needed), carries out the flush token, and resumes.
fn install<P: Platform>(
    platform: &P,
    quiet: bool,
    slot: &mut Slot<'_, P::Format>,
    entry: Entry<P::Format>,
) -> Outcome {
    let mut out = Console::new(platform, quiet);
    let old = slot.raw();
    match slot.replace_break_before_make(&entry, platform.tlb()) {
        Ok(flush) => {
            flush.flush(platform.tlb());
            let _ = writeln!(
                out,
                "    level {} entry {:#x} -> {:#x}; retry the access",
                slot.level().number(),
                old,
                slot.raw()
            );
            Outcome::Resume
        }
        Err(e) => {
            let _ = writeln!(
                Console::new(platform, false),
                "    FAILED to install the new entry: {e}"
            );
            Outcome::Fail
        }
    }
}

/// Why a kernel must stop after a fault ([`dispatch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// The handler could not allow the access (it printed why).
    NotResolved,
    /// The demo state was in use (a fault inside the handler) or not set up yet.
    Busy,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotResolved => "not resolved",
            Self::Busy => {
                "a nested or early fault, while the demo state was in use or not yet set up"
            }
        })
    }
}

/// What both kernels' trap handlers do with a decoded fault: hand it to the demo in
/// `cell`. `Ok` means return from the trap and retry the access.
pub fn dispatch<P: Platform, A: FrameSource, R: Resolver>(
    cell: &crate::cell::TryCell<Demo<P, A, R>>,
    fault: Fault,
) -> Result<(), Unresolved> {
    match cell.with(|demo| demo.handle_fault(fault)) {
        Some(Outcome::Resume) => Ok(()),
        Some(Outcome::Fail) => Err(Unresolved::NotResolved),
        None => Err(Unresolved::Busy),
    }
}
