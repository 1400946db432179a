//! Counters and the summary line.

use core::fmt;

/// The start of the summary line; `cargo xtask test` looks for it with
/// [`PASS_MARKER`] on the same line.
pub const SUMMARY_PREFIX: &str = "devpriv-demo: summary";
/// How a passing summary line ends.
pub const PASS_MARKER: &str = "result=PASS";
/// The kernels' last line before they power off: followed by `PASS` or `FAIL`. On
/// aarch64, where power-off (PSCI `SYSTEM_OFF`) carries no status, it is the verdict.
pub const EXIT_PREFIX: &str = "devpriv-kernel: exit result=";

/// What the demo counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Checks that held.
    pub checks_passed: u32,
    /// Checks that did not.
    pub checks_failed: u32,
    /// Faults taken.
    pub faults: u32,
    /// Faults on present leaves (permission, access flag).
    pub present_faults: u32,
    /// Device-private entries resolved.
    pub device_private: u32,
    /// Migration entries (system or device-private) resolved.
    pub migration: u32,
    /// Device-exclusive entries resolved.
    pub device_exclusive: u32,
    /// Faults in the workload region that devpriv-migrate (or the anonymous fault)
    /// handled.
    pub devpriv_migrate: u32,
}

impl Stats {
    /// Whether every check held and at least one ran.
    pub const fn passed(&self) -> bool {
        self.checks_failed == 0 && self.checks_passed > 0
    }

    /// The summary line for `arch` (without a newline).
    pub const fn summary<'a>(&'a self, arch: &'a str) -> Summary<'a> {
        Summary { stats: self, arch }
    }
}

/// The summary line, as [`fmt::Display`].
pub struct Summary<'a> {
    stats: &'a Stats,
    arch: &'a str,
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats;
        write!(
            f,
            "{SUMMARY_PREFIX} arch={} checks={}/{} faults={} present={} device-private={} \
             migration={} device-exclusive={} devpriv-migrate={} result={}",
            self.arch,
            s.checks_passed,
            s.checks_passed + s.checks_failed,
            s.faults,
            s.present_faults,
            s.device_private,
            s.migration,
            s.device_exclusive,
            s.devpriv_migrate,
            if s.passed() { "PASS" } else { "FAIL" }
        )
    }
}
