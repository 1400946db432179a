//! `cargo xtask miri`: the host test suites under Miri, which checks every memory
//! access, alignment, provenance (strict), data race and leak of the code it runs.
//!
//! Every library and integration test that can finish under Miri runs; tests that
//! cannot (stress tests, loom models, big sweeps) are `#[cfg_attr(miri, ignore)]` where
//! they are written, with the reason beside them. Property tests run `PROPTEST_CASES`
//! cases ([`PROPTEST_CASES`] here). `--ci` runs the subset `cargo xtask test` runs,
//! sized to about five minutes on two cores. Miri interprets on one thread, so the test
//! targets run side by side, one per CPU.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use crate::cli::{Args, run_checked, split_passthrough};
use crate::toolchain::{ensure_miri, nightly_cargo};

/// Miri flags for every run: strict provenance (no integer-to-pointer casts), and the
/// two proptest variables forwarded into Miri's isolated environment.
pub const MIRI_FLAGS: [&str; 3] = [
    "-Zmiri-strict-provenance",
    "-Zmiri-env-forward=PROPTEST_CASES",
    "-Zmiri-env-forward=PROPTEST_DISABLE_FAILURE_PERSISTENCE",
];

/// Cases per property test: enough to drive every strategy, few enough for Miri.
pub const PROPTEST_CASES: &str = "4";

/// One crate's tests under Miri.
#[derive(Debug, Clone, Copy)]
pub struct Suite {
    /// The package.
    pub krate: &'static str,
    /// Extra Miri flags for this crate (each one says why where the suite is listed).
    pub flags: &'static [&'static str],
    /// What `--ci` runs of it, one `cargo miri test` each: cargo's target selection
    /// (`--lib`, `--test NAME`), then, after a `--`, test-name filters for the harness.
    pub ci: &'static [&'static [&'static str]],
}

/// Every crate with host tests. The full run tests each one's library and every
/// integration test (`tests/*.rs`), one `cargo miri test` per test target.
pub const SUITES: [Suite; 5] = [
    Suite {
        krate: "devpriv-pte",
        flags: &[],
        ci: &[&["--tests"]],
    },
    Suite {
        krate: "devpriv-paging",
        flags: &[],
        // Most page-table tests take one to four minutes each under Miri; CI runs the
        // break-before-make rules, corrupt entries and the break-before-make window
        // race (the one Miri caught before it was fixed).
        ci: &[
            &[
                "--test",
                "basic",
                "--",
                "break_before_make_rules",
                "corrupt_entries_are_typed_errors",
            ],
            &["--test", "stress", "--", "the_break_before_make_window"],
        ],
    },
    Suite {
        krate: "devpriv-pagemap",
        flags: &[],
        // All of the API tests but the five that take about a minute each.
        ci: &[&[
            "--lib",
            "--test",
            "api",
            "--",
            "--skip",
            "allocated_folios_walks_heads_only",
            "--skip",
            "alloc_locked_gives_a_locked_destination",
            "--skip",
            "callbacks_may_allocate_and_free",
            "--skip",
            "space_full_after_256_pagemaps",
            "--skip",
            "split_and_merge",
        ]],
    },
    Suite {
        krate: "devpriv-migrate",
        // The tests build whole `'static` worlds (address spaces, pagemaps, devices
        // that reference each other for the rest of the process, as a kernel's do) and
        // leak them on purpose; a leak in the crate's own code still shows up as a
        // tracking-allocator or pagemap assertion in the tests.
        flags: &["-Zmiri-ignore-leaks"],
        // Each test builds megabytes of simulated RAM and device memory, minutes of
        // Miri per test: only the full run has them.
        ci: &[],
    },
    Suite {
        krate: "devpriv-testdev",
        // The simulated machine, its devices and processes are `&'static` by design
        // (`devpriv_testdev::leak`), as a kernel's are; every scenario checks that no
        // RAM frame or device page is left allocated instead. A scenario's machine
        // takes minutes to build under Miri: only the full run has them.
        flags: &["-Zmiri-ignore-leaks"],
        ci: &[],
    },
];

/// One `cargo miri test` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unit {
    /// The crate and what it runs, for progress lines and the summary.
    label: String,
    /// The crate's extra Miri flags.
    flags: &'static [&'static str],
    /// The arguments after `cargo miri test`.
    args: Vec<String>,
}

/// `cargo xtask miri [--ci] [--jobs N] [CRATE ...] [-- TEST ARGS]`: installs Miri when
/// missing, then runs each crate's tests (all crates, or the named ones: `pte` or
/// `devpriv-pte`), `N` `cargo miri test`s at a time (Miri runs one thread, so the
/// default is one per CPU), passing TEST ARGS (e.g. a test name) to the test harness.
pub fn run(args: &[String]) -> Result<(), String> {
    let (own, harness) = split_passthrough(args);
    let args = Args::parse(own, &["jobs"])?;
    args.reject_unknown_switches(&["ci"])?;
    let ci = args.switch("ci");
    let jobs = match args.option("jobs") {
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("--jobs `{text}`: expected a positive number")),
        },
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut weighed = Vec::new();
    for suite in select(&args.positional)? {
        let selections = if ci {
            suite
                .ci
                .iter()
                .map(|s| (0, s.iter().map(|a| a.to_string()).collect()))
                .collect()
        } else {
            full_selections(suite.krate)?
        };
        weighed.extend(
            selections
                .iter()
                .map(|(weight, selection)| (*weight, unit(&suite, selection, harness))),
        );
    }
    // The biggest test files first, so that the long ones do not start last (the CI
    // selections keep their order).
    weighed.sort_by_key(|(weight, _)| std::cmp::Reverse(*weight));
    let units: Vec<Unit> = weighed.into_iter().map(|(_, unit)| unit).collect();
    if units.is_empty() {
        return Ok(());
    }
    ensure_miri()?;
    let start = Instant::now();
    let results = run_units(units, jobs);
    eprintln!(
        "\nxtask miri summary{} ({} at a time, {:.0}s in all)",
        if ci { " (CI subset)" } else { "" },
        jobs,
        start.elapsed().as_secs_f64()
    );
    for (label, outcome, seconds) in &results {
        let mark = if outcome.is_ok() { "ok  " } else { "FAIL" };
        eprintln!("  {mark} {label:<40} {seconds:>6.1}s");
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, outcome, _)| outcome.is_err())
        .map(|(label, _, _)| label.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("Miri failed in {}", failed.join(", ")))
    }
}

/// The suites named by `names` (`pte` or `devpriv-pte`), all of them when none is.
fn select(names: &[String]) -> Result<Vec<Suite>, String> {
    if names.is_empty() {
        return Ok(SUITES.to_vec());
    }
    names
        .iter()
        .map(|name| {
            SUITES
                .iter()
                .find(|s| s.krate == name || s.krate.strip_prefix("devpriv-") == Some(name))
                .copied()
                .ok_or_else(|| {
                    let known: Vec<&str> = SUITES.iter().map(|s| s.krate).collect();
                    format!("no Miri suite `{name}` (known: {})", known.join(", "))
                })
        })
        .collect()
}

/// The full run of `krate`: its library, then each integration test, one selection
/// each (so that they can run side by side), with the size of its test file.
fn full_selections(krate: &str) -> Result<Vec<(u64, Vec<String>)>, String> {
    let tests = crate::cli::repo_root()
        .join("crates")
        .join(krate.trim_start_matches("devpriv-"))
        .join("tests");
    let names = std::fs::read_dir(&tests)
        .map_err(|e| format!("{}: {e}", tests.display()))?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let size = entry.metadata().map_or(0, |m| m.len());
            name.strip_suffix(".rs").map(|n| (n.to_string(), size))
        });
    Ok(selections_for(names))
}

/// `--lib` (weight 0), then `--test NAME` for each of `names` (with its weight), sorted
/// by name.
fn selections_for(names: impl Iterator<Item = (String, u64)>) -> Vec<(u64, Vec<String>)> {
    let mut names: Vec<(String, u64)> = names.collect();
    names.sort();
    let mut selections = vec![(0, vec!["--lib".to_string()])];
    selections.extend(
        names
            .into_iter()
            .map(|(name, weight)| (weight, vec!["--test".into(), name])),
    );
    selections
}

/// The `MIRIFLAGS` for a unit: [`MIRI_FLAGS`], the crate's own, then whatever the
/// caller's environment already had (so `MIRIFLAGS=-Zmiri-seed=7` still works).
fn miri_flags(crate_flags: &[&str], from_env: Option<&str>) -> String {
    let mut flags: Vec<&str> = MIRI_FLAGS.to_vec();
    flags.extend(crate_flags);
    flags.extend(from_env.into_iter().flat_map(str::split_whitespace));
    flags.join(" ")
}

/// The unit that runs `selection` (cargo's target selection, then after `--` the
/// harness's filters) of `suite`, with `harness` appended for the test harness.
fn unit(suite: &Suite, selection: &[String], harness: &[String]) -> Unit {
    let (targets, filters) = split_passthrough(selection);
    let short = suite.krate.trim_start_matches("devpriv-");
    // Short: it prefixes every line of output.
    let mut label = format!("{short} {}", targets.join(" "));
    if !filters.is_empty() {
        label.push_str(" (filtered)");
    }
    let mut args: Vec<String> = ["-p", suite.krate, "--no-fail-fast"]
        .iter()
        .map(|a| a.to_string())
        .chain(targets.iter().cloned())
        .collect();
    if !filters.is_empty() || !harness.is_empty() {
        args.push("--".into());
        args.extend(filters.iter().chain(harness).cloned());
    }
    Unit {
        label,
        flags: suite.flags,
        args,
    }
}

/// `rustup run nightly cargo miri test ...` for `unit`, with its environment.
fn command(unit: &Unit) -> Command {
    let mut command = nightly_cargo();
    command
        .args(["miri", "test"])
        .args(&unit.args)
        .env(
            "MIRIFLAGS",
            miri_flags(unit.flags, std::env::var("MIRIFLAGS").ok().as_deref()),
        )
        .env("PROPTEST_CASES", PROPTEST_CASES)
        // Persistence reads and writes `*.proptest-regressions` next to the sources,
        // which Miri's isolation forbids; the regressions replay in the normal tests.
        .env("PROPTEST_DISABLE_FAILURE_PERSISTENCE", "1");
    command
}

/// Runs `units`, `jobs` at a time, and returns each one's label, outcome and seconds in
/// the order given. With one job the console is inherited; with more, every line is
/// prefixed with its unit's label so that the interleaved output stays readable.
fn run_units(units: Vec<Unit>, jobs: usize) -> Vec<(String, Result<(), String>, f64)> {
    let timed = |unit: &Unit, outcome: Result<(), String>, start: Instant| {
        (unit.label.clone(), outcome, start.elapsed().as_secs_f64())
    };
    if jobs == 1 {
        return units
            .iter()
            .map(|unit| {
                eprintln!("\n=== xtask miri: {}", unit.label);
                let start = Instant::now();
                timed(unit, run_checked(&mut command(unit)), start)
            })
            .collect();
    }
    let queue = Mutex::new(units.iter().enumerate());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(units.len()) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut q| q.next()).ok().flatten();
                    let Some((index, unit)) = next else { break };
                    eprintln!("=== xtask miri: starting {}", unit.label);
                    let start = Instant::now();
                    let outcome = run_prefixed(&mut command(unit), &unit.label);
                    eprintln!(
                        "=== xtask miri: {} {} ({:.0}s)",
                        unit.label,
                        if outcome.is_ok() { "passed" } else { "FAILED" },
                        start.elapsed().as_secs_f64()
                    );
                    if let Ok(mut r) = results.lock() {
                        r.push((index, timed(unit, outcome, start)));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Runs `command` with its stdout and stderr read line by line and written to stderr
/// prefixed with `[label]`.
fn run_prefixed(command: &mut Command, label: &str) -> Result<(), String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start cargo miri for {label}: {e}"))?;
    let forward = |stream: Box<dyn Read + Send>| {
        let label = label.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{label}] {line}");
            }
        })
    };
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(forward)
    .collect();
    let status = child
        .wait()
        .map_err(|e| format!("cargo miri for {label}: {e}"))?;
    for reader in readers {
        let _ = reader.join();
    }
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo miri test for {label} failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn suites_are_selected_by_short_or_full_name() {
        let all = select(&[]).unwrap();
        assert_eq!(all.len(), SUITES.len());
        let some = select(&strings(&["pte", "devpriv-migrate"])).unwrap();
        let names: Vec<&str> = some.iter().map(|s| s.krate).collect();
        assert_eq!(names, ["devpriv-pte", "devpriv-migrate"]);
        let err = select(&strings(&["loom"])).unwrap_err();
        assert!(err.contains("no Miri suite `loom`"), "{err}");
    }

    #[test]
    fn the_full_run_is_the_library_then_each_integration_test() {
        let names = [("model".to_string(), 9), ("basic".to_string(), 30)];
        let selections = selections_for(names.into_iter());
        assert_eq!(
            selections,
            vec![
                (0, strings(&["--lib"])),
                (30, strings(&["--test", "basic"])),
                (9, strings(&["--test", "model"]))
            ]
        );
        // The real crates: every tests/*.rs file is a selection, and no helper module.
        let pte: Vec<Vec<String>> = full_selections("devpriv-pte")
            .unwrap()
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert!(
            pte.contains(&strings(&["--test", "known_answers"])),
            "{pte:?}"
        );
        assert!(!pte.iter().any(|s| s.contains(&"common".to_string())));
    }

    #[test]
    fn a_unit_runs_its_selection_with_the_filters_then_the_harness_arguments() {
        let suite = Suite {
            krate: "devpriv-paging",
            flags: &["-Zmiri-ignore-leaks"],
            ci: &[],
        };
        let unit = unit(
            &suite,
            &strings(&["--test", "basic", "--", "split"]),
            &strings(&["--exact"]),
        );
        assert_eq!(unit.label, "paging --test basic (filtered)");
        assert_eq!(unit.flags, ["-Zmiri-ignore-leaks"]);
        assert_eq!(
            unit.args,
            strings(&[
                "-p",
                "devpriv-paging",
                "--no-fail-fast",
                "--test",
                "basic",
                "--",
                "split",
                "--exact"
            ])
        );
        let plain = super::unit(&suite, &strings(&["--lib"]), &[]);
        assert_eq!(
            plain.args,
            strings(&["-p", "devpriv-paging", "--no-fail-fast", "--lib"])
        );
    }

    #[test]
    fn miri_flags_add_the_crates_and_keep_the_callers() {
        let flags = miri_flags(&["-Zmiri-ignore-leaks"], Some(" -Zmiri-seed=7 "));
        assert!(flags.starts_with("-Zmiri-strict-provenance "), "{flags}");
        assert!(
            flags.ends_with(" -Zmiri-ignore-leaks -Zmiri-seed=7"),
            "{flags}"
        );
        assert!(!flags.contains("disable-isolation"), "{flags}");
        assert_eq!(miri_flags(&[], None), MIRI_FLAGS.join(" "));
    }

    #[test]
    fn every_ci_selection_names_real_test_targets() {
        for suite in SUITES {
            let full: Vec<Vec<String>> = full_selections(suite.krate)
                .unwrap()
                .into_iter()
                .map(|(_, s)| s)
                .collect();
            for selection in suite.ci {
                let mut words = selection.iter().take_while(|w| **w != "--");
                while let Some(word) = words.next() {
                    if *word == "--test" {
                        let name = words.next().expect("--test needs a name");
                        assert!(
                            full.contains(&strings(&["--test", name])),
                            "{}: no tests/{name}.rs",
                            suite.krate
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn unknown_flags_and_bad_job_counts_are_errors() {
        assert!(run(&strings(&["--fast"])).unwrap_err().contains("--fast"));
        assert!(
            run(&strings(&["--jobs", "0"]))
                .unwrap_err()
                .contains("--jobs")
        );
        assert!(run(&strings(&["nosuch"])).unwrap_err().contains("nosuch"));
    }
}
