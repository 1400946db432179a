//! The fault handler: from a hardware fault to a devpriv decision.
//!
//! A kernel's trap entry reads the faulting address and the kind of access from the
//! hardware (x86_64: CR2 and the page-fault error code; aarch64: FAR_EL1 and ESR_EL1)
//! and calls [`Demo::handle_fault`]. The handler
//!
//! 1. checks the fault against the one the demo armed ([`Expectation`]) — anything else
//!    is an unexpected fault and fails the run;
//! 2. walks the live page table from the MMU's root, decoding each level with
//!    devpriv-pte, to the entry that made the MMU fault;
//! 3. acts on the entry's kind: a present leaf that forbids the access is made to allow
//!    it (write, execute, access flag), a software entry is reported and handed to the
//!    [`Resolver`], whose answer is installed with a compare-exchange;
//! 4. flushes the TLB for the page and returns [`Outcome::Resume`]: the kernel returns
//!    from the trap and the faulting instruction runs again, this time successfully.

use core::fmt::{self, Write};

use devpriv_pte::{Entry, LeafAttributes, Level, PageProperty, PteFormat};

use crate::frames::FrameSource;
use crate::platform::{Console, Platform};
use crate::report::Stats;
use crate::resolve::{EntryReport, Request, Resolver, SystemMemory};
use crate::tables::{LiveTables, Walk};

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
    expectation: Option<Expectation>,
    hits: u32,
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
            expectation: None,
            hits: 0,
        }
    }

    /// The console.
    pub fn console(&self) -> Console<'_, P> {
        Console(&self.platform)
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

    /// Handles `fault`; see the module documentation for the steps.
    pub fn handle_fault(&mut self, fault: Fault) -> Outcome {
        self.stats.faults += 1;
        let Self {
            platform,
            tables,
            frames,
            resolver,
            stats,
            expectation,
            ..
        } = self;
        let mut out = Console(&*platform);
        let _ = write!(
            out,
            "  fault: {} at {:#x} ({}): ",
            fault.access, fault.address, fault.cause
        );
        let expected = expectation.is_some_and(|e| e.matches(&fault));
        let walk = match tables.walk(fault.address) {
            Ok(walk) => walk,
            Err(e) => {
                let _ = writeln!(out, "the table walk failed: {e}");
                return Outcome::Fail;
            }
        };
        if !expected {
            let _ = writeln!(
                out,
                "UNEXPECTED (level {} entry {:#x}, expected {:?})",
                walk.level.number(),
                walk.raw,
                expectation
            );
            return Outcome::Fail;
        }
        let outcome = match walk.entry {
            Entry::Leaf { .. } => fix_present(platform, tables, stats, &fault, &walk),
            Entry::Software(sw) => {
                let size = walk.level.leaf_size();
                let _ = writeln!(
                    out,
                    "{}{}",
                    EntryReport(&sw.kind),
                    if walk.level == Level::L2 {
                        " (2 MiB entry)"
                    } else {
                        ""
                    }
                );
                match size {
                    Some(size) => {
                        let request = Request {
                            va: fault.address & !(size.bytes() - 1),
                            size,
                            entry: sw,
                            access: fault.access,
                        };
                        resolve(platform, tables, frames, resolver, stats, &request, &walk)
                    }
                    None => Outcome::Fail,
                }
            }
            Entry::Absent | Entry::Table { .. } => {
                let _ = writeln!(
                    out,
                    "UNEXPECTED {} entry at level {}",
                    walk.entry.kind_name(),
                    walk.level.number()
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

/// A present leaf forbade the access: allow it, as the fault's cause says.
fn fix_present<P: Platform>(
    platform: &P,
    tables: &LiveTables<P::Format>,
    stats: &mut Stats,
    fault: &Fault,
    walk: &Walk<'_, P::Format>,
) -> Outcome {
    let mut out = Console(platform);
    let Entry::Leaf { pfn, size, attrs } = walk.entry else {
        return Outcome::Fail;
    };
    let mut property: PageProperty = attrs.property();
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
        _ => {
            let _ = writeln!(
                out,
                "UNEXPECTED: the leaf {:#x} at level {} allows this access",
                walk.raw,
                walk.level.number()
            );
            return Outcome::Fail;
        }
    };
    let _ = writeln!(out, "present {action}");
    let attrs = <<P::Format as PteFormat>::LeafAttributes>::from_property(property);
    stats.present_faults += 1;
    install(
        platform,
        tables,
        walk,
        Entry::Leaf { pfn, size, attrs },
        fault.address,
    )
}

/// A software entry: ask the resolver, install its answer.
fn resolve<P: Platform>(
    platform: &P,
    tables: &LiveTables<P::Format>,
    frames: &mut dyn FrameSource,
    resolver: &mut dyn Resolver,
    stats: &mut Stats,
    request: &Request,
    walk: &Walk<'_, P::Format>,
) -> Outcome {
    let mut out = Console(platform);
    let mut memory = SystemMemory::new(frames, tables.phys_to_virt(0));
    let resolution = match resolver.resolve(request, &mut memory, &mut out) {
        Ok(resolution) => resolution,
        Err(e) => {
            let _ = writeln!(out, "    FAILED: {e}");
            return Outcome::Fail;
        }
    };
    let kind = &request.entry.kind;
    match kind {
        devpriv_pte::SoftwareKind::DevicePrivate { .. } => stats.device_private += 1,
        devpriv_pte::SoftwareKind::DeviceExclusive { .. } => stats.device_exclusive += 1,
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
        attrs: <<P::Format as PteFormat>::LeafAttributes>::from_property(property),
    };
    install(platform, tables, walk, leaf, request.va)
}

/// Replaces the walked entry with `entry` (compare-exchange), flushes, resumes.
fn install<P: Platform>(
    platform: &P,
    tables: &LiveTables<P::Format>,
    walk: &Walk<'_, P::Format>,
    entry: Entry<P::Format>,
    va: u64,
) -> Outcome {
    let mut out = Console(platform);
    match tables.replace(walk, &entry) {
        Ok(raw) => {
            platform.flush_page(va);
            let _ = writeln!(
                out,
                "    level {} entry {:#x} -> {:#x}; retry the access",
                walk.level.number(),
                walk.raw,
                raw
            );
            Outcome::Resume
        }
        Err(e) => {
            let _ = writeln!(out, "    FAILED to install the new entry: {e}");
            Outcome::Fail
        }
    }
}
