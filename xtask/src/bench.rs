//! `cargo xtask bench`: run every criterion bench and the testdev throughput sweep, and
//! print one summary table.
//!
//! Convention (see docs/benchmarks.md): each criterion group is one row; inside a group
//! the function `devpriv` is our code, a function named `devpriv-<variant>` is another
//! configuration of ours, and any other function is a peer measured on the same work in
//! the same run. The table shows both times and the ratio other / devpriv (above 1 means
//! `devpriv` is faster).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::cli::{Args, cargo, run_checked, split_passthrough, target_dir};

/// Crates with criterion benches.
const BENCH_CRATES: [&str; 4] = [
    "devpriv-pte",
    "devpriv-paging",
    "devpriv-pagemap",
    "devpriv-migrate",
];

/// One measured function: group (row), function id, mean time in nanoseconds.
struct Measurement {
    group: String,
    function: String,
    mean_ns: f64,
}

/// What `cargo xtask bench [--summary] [FILTER ...] [-- CRITERION OPTIONS]` asks for.
#[derive(Debug, PartialEq, Eq)]
struct BenchArgs {
    /// Only print the table from the last run.
    summary: bool,
    /// Benchmark name filters, given to criterion.
    filters: Vec<String>,
    /// Everything after `--`, given to every criterion bench untouched.
    criterion: Vec<String>,
}

impl BenchArgs {
    fn parse(args: &[String]) -> Result<Self, String> {
        let (own, criterion) = split_passthrough(args);
        let parsed = Args::parse(own, &[])?;
        parsed
            .reject_unknown_switches(&["summary"])
            .map_err(|e| format!("{e} (criterion options go after `--`)"))?;
        let summary = parsed.switch("summary");
        if summary && !(criterion.is_empty() && parsed.positional.is_empty()) {
            return Err(
                "--summary only prints the last run's table; filters and criterion options \
                 need a run (drop --summary)"
                    .into(),
            );
        }
        Ok(BenchArgs {
            summary,
            filters: parsed.positional,
            criterion: criterion.to_vec(),
        })
    }

    /// The arguments after `cargo bench`'s own `--`: the filters, then the criterion
    /// options.
    fn criterion_args(&self) -> Vec<String> {
        self.filters
            .iter()
            .chain(&self.criterion)
            .cloned()
            .collect()
    }

    /// Whether the testdev throughput sweep runs: with no filter, or a filter it
    /// matches as criterion would (a substring of its name).
    fn wants_throughput(&self) -> bool {
        self.filters.is_empty()
            || self
                .filters
                .iter()
                .any(|f| "throughput".contains(f.as_str()))
    }
}

/// Where the benches leave their results under `target_dir`: criterion's directory,
/// the testdev sweep's table, and the summary table.
fn result_paths(target_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        target_dir.join("criterion"),
        target_dir.join("testdev-throughput.md"),
        target_dir.join("bench-summary.md"),
    )
}

/// The error for a table with no results: after `--summary`, run the benches first.
fn no_results(criterion_dir: &Path, summary: bool) -> String {
    if summary {
        format!(
            "no benchmark results under {}: run the benches first with `cargo xtask bench` \
             (--summary only prints the table of the last run)",
            criterion_dir.display()
        )
    } else {
        format!(
            "no criterion results under {} (did a filter match no benchmark?)",
            criterion_dir.display()
        )
    }
}

/// Runs the benches (unless `--summary`) and prints the table, also written to
/// `bench-summary.md` in the target directory.
pub fn run(args: &[String]) -> Result<(), String> {
    let args = BenchArgs::parse(args)?;
    let (criterion_dir, throughput, out) = result_paths(&target_dir());
    if !args.summary {
        if criterion_dir.exists() {
            std::fs::remove_dir_all(&criterion_dir)
                .map_err(|e| format!("could not clear {}: {e}", criterion_dir.display()))?;
        }
        let _ = std::fs::remove_file(&throughput); // never report a stale sweep
        eprintln!(
            "xtask bench: building and running the criterion benches of {}",
            BENCH_CRATES.join(", ")
        );
        let mut command = cargo();
        command.args(["bench", "--bench", "*"]);
        for krate in BENCH_CRATES {
            command.args(["-p", krate]);
        }
        command.arg("--").args(args.criterion_args());
        run_checked(&mut command)?;
        if args.wants_throughput() {
            // The testdev sweep is not a criterion bench: it writes its own table.
            eprintln!("xtask bench: building and running the testdev throughput sweep");
            run_checked(
                cargo()
                    .args(["bench", "-p", "devpriv-testdev", "--bench", "throughput"])
                    .env("THROUGHPUT_OUT", &throughput),
            )?;
        }
    }
    let measurements = collect(&criterion_dir)?;
    if measurements.is_empty() {
        return Err(no_results(&criterion_dir, args.summary));
    }
    let mut table = render(&measurements);
    let _ = writeln!(
        table,
        "\nmetadata per 4 KiB device page: {} bytes (devpriv-pagemap, from size_of) vs 64 bytes \
         (Linux struct page)",
        devpriv_pagemap::METADATA_BYTES_PER_PAGE
    );
    if let Ok(sweep) = std::fs::read_to_string(&throughput) {
        let _ = writeln!(
            table,
            "\nmigration throughput (devpriv-testdev, memcpy copy engine vs bookkeeping alone):\n\n{sweep}"
        );
    }
    print!("{table}");
    std::fs::write(&out, &table).map_err(|e| format!("could not write {}: {e}", out.display()))?;
    eprintln!("(table written to {})", out.display());
    Ok(())
}

fn collect(dir: &Path) -> Result<Vec<Measurement>, String> {
    let mut found = Vec::new();
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                pending.push(p);
            } else if p.file_name().is_some_and(|n| n == "benchmark.json")
                && p.parent().is_some_and(|d| d.ends_with("new"))
            {
                found.push(read_measurement(&p)?);
            }
        }
    }
    Ok(found)
}

fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_measurement(benchmark_json: &Path) -> Result<Measurement, String> {
    let meta = read_json(benchmark_json)?;
    let estimates = read_json(&benchmark_json.with_file_name("estimates.json"))?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mean_ns = estimates["mean"]["point_estimate"]
        .as_f64()
        .ok_or_else(|| format!("{}: no mean estimate", benchmark_json.display()))?;
    let mut function = text(&meta["function_id"]);
    if let Some(value) = meta["value_str"].as_str() {
        function = format!("{function}/{value}");
    }
    Ok(Measurement {
        group: text(&meta["group_id"]),
        function,
        mean_ns,
    })
}

fn human(ns: f64) -> String {
    match ns {
        n if n >= 1e9 => format!("{:.2} s", n / 1e9),
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} µs", n / 1e3),
        n => format!("{n:.2} ns"),
    }
}

fn render(measurements: &[Measurement]) -> String {
    let mut rows: BTreeMap<&str, Vec<&Measurement>> = BTreeMap::new();
    for m in measurements {
        rows.entry(m.group.as_str()).or_default().push(m);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| benchmark | devpriv | compared with | its time | its time / devpriv |"
    );
    let _ = writeln!(out, "|---|---:|---|---:|---:|");
    for (group, functions) in rows {
        let ours = functions.iter().find(|m| m.function == "devpriv");
        let peers: Vec<_> = functions
            .iter()
            .filter(|m| m.function != "devpriv")
            .collect();
        let ours_text = ours.map_or("-".to_string(), |m| human(m.mean_ns));
        if peers.is_empty() {
            let _ = writeln!(out, "| {group} | {ours_text} | - | - | - |");
        }
        for peer in peers {
            let ratio = ours.map_or("-".to_string(), |m| {
                format!("{:.2}x", peer.mean_ns / m.mean_ns)
            });
            let _ = writeln!(
                out,
                "| {group} | {ours_text} | {}{} | {} | {ratio} |",
                peer.function,
                if peer.function.starts_with("devpriv-") {
                    " (variant)"
                } else {
                    ""
                },
                human(peer.mean_ns)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<BenchArgs, String> {
        let args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        BenchArgs::parse(&args)
    }

    #[test]
    fn criterion_options_after_double_dash_reach_the_benches() {
        let args = parse(&["--", "--warm-up-time", "1", "--measurement-time", "3"]).unwrap();
        assert!(!args.summary);
        assert!(args.filters.is_empty());
        assert_eq!(
            args.criterion_args(),
            ["--warm-up-time", "1", "--measurement-time", "3"]
        );
        assert!(args.wants_throughput());
    }

    #[test]
    fn filters_come_before_the_criterion_options() {
        let args = parse(&["decode", "--", "--sample-size", "10"]).unwrap();
        assert_eq!(args.criterion_args(), ["decode", "--sample-size", "10"]);
        assert!(!args.wants_throughput());
        assert!(parse(&["through"]).unwrap().wants_throughput());
    }

    #[test]
    fn criterion_options_without_double_dash_are_refused() {
        let err = parse(&["--warm-up-time", "1"]).unwrap_err();
        assert!(err.contains("--warm-up-time"), "{err}");
        assert!(err.contains("after `--`"), "{err}");
    }

    #[test]
    fn summary_takes_nothing_to_run() {
        assert_eq!(
            parse(&["--summary"]).unwrap(),
            BenchArgs {
                summary: true,
                filters: vec![],
                criterion: vec![]
            }
        );
        assert!(parse(&["--summary", "--", "--warm-up-time", "1"]).is_err());
        assert!(parse(&["--summary", "decode"]).is_err());
    }

    #[test]
    fn results_are_read_from_the_target_dir() {
        let (criterion, throughput, summary) = result_paths(Path::new("/tmp/custom-target"));
        assert_eq!(criterion, Path::new("/tmp/custom-target/criterion"));
        assert_eq!(
            throughput,
            Path::new("/tmp/custom-target/testdev-throughput.md")
        );
        assert_eq!(summary, Path::new("/tmp/custom-target/bench-summary.md"));
    }

    #[test]
    fn a_summary_without_results_says_to_run_the_benches_first() {
        let empty = std::env::temp_dir().join(format!("xtask-no-results-{}", std::process::id()));
        assert!(collect(&empty).unwrap().is_empty());
        let message = no_results(&empty, true);
        assert!(
            message.contains("run the benches first with `cargo xtask bench`"),
            "{message}"
        );
        assert!(message.contains(&empty.display().to_string()), "{message}");
    }

    #[test]
    fn criterion_results_become_table_rows() {
        let dir = std::env::temp_dir().join(format!("xtask-results-{}", std::process::id()));
        for (function, mean) in [("devpriv", 10.0), ("peer", 25.0)] {
            let new = dir.join("group").join(function).join("new");
            std::fs::create_dir_all(&new).unwrap();
            std::fs::write(
                new.join("benchmark.json"),
                serde_json::json!({"group_id": "group", "function_id": function}).to_string(),
            )
            .unwrap();
            std::fs::write(
                new.join("estimates.json"),
                serde_json::json!({"mean": {"point_estimate": mean}}).to_string(),
            )
            .unwrap();
        }
        let table = render(&collect(&dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            table.contains("| group | 10.00 ns | peer | 25.00 ns | 2.50x |"),
            "{table}"
        );
    }
}
