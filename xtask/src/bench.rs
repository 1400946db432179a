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

use crate::cli::{Args, cargo, repo_root, run_checked};

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

/// Runs the benches (unless `--summary`) and prints the table, also written to
/// `target/bench-summary.md`.
pub fn run(args: &[String]) -> Result<(), String> {
    let args = Args::parse(args, &[])?;
    args.reject_unknown_switches(&["summary"])?;
    let criterion_dir = repo_root().join("target").join("criterion");
    if !args.switch("summary") {
        if criterion_dir.exists() {
            std::fs::remove_dir_all(&criterion_dir)
                .map_err(|e| format!("could not clear {}: {e}", criterion_dir.display()))?;
        }
        let mut command = cargo();
        command.args(["bench", "--bench", "*"]);
        for krate in BENCH_CRATES {
            command.args(["-p", krate]);
        }
        command.arg("--");
        command.args(&args.positional);
        run_checked(&mut command)?;
        let wanted = args.positional.is_empty()
            || args
                .positional
                .iter()
                .any(|f| "throughput".contains(f.as_str()));
        let throughput = repo_root().join("target").join("testdev-throughput.md");
        let _ = std::fs::remove_file(&throughput); // never report a stale sweep
        if wanted {
            // The testdev sweep is not a criterion bench: it writes its own table.
            run_checked(cargo().args(["bench", "-p", "devpriv-testdev", "--bench", "throughput"]))?;
        }
    }
    let measurements = collect(&criterion_dir)?;
    if measurements.is_empty() {
        return Err(format!(
            "no criterion results under {}",
            criterion_dir.display()
        ));
    }
    let mut table = render(&measurements);
    let _ = writeln!(
        table,
        "\nmetadata per 4 KiB device page: {} bytes (devpriv-pagemap, from size_of) vs 64 bytes \
         (Linux struct page)",
        devpriv_pagemap::METADATA_BYTES_PER_PAGE
    );
    let throughput = repo_root().join("target").join("testdev-throughput.md");
    if let Ok(sweep) = std::fs::read_to_string(&throughput) {
        let _ = writeln!(
            table,
            "\nmigration throughput (devpriv-testdev, memcpy copy engine vs bookkeeping alone):\n\n{sweep}"
        );
    }
    print!("{table}");
    let out = repo_root().join("target").join("bench-summary.md");
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
