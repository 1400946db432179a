//! `cargo xtask test`: every check CI runs, one summary line per step.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::cli::{cargo, repo_root, run_checked};
use crate::toolchain::{BARE_METAL_TARGETS, ensure_targets};

/// The `no_std` library crates, built and linted for every bare-metal target.
pub const NO_STD_CRATES: [&str; 5] = [
    "devpriv-pte",
    "devpriv-paging",
    "devpriv-pagemap",
    "devpriv-migrate",
    "devpriv-demo",
];

/// The example kernels: (manifest directory, target).
pub const KERNELS: [(&str, &str); 2] = [
    ("examples/kernel-x86_64", "x86_64-unknown-none"),
    ("examples/kernel-aarch64", "aarch64-unknown-none"),
];

struct Step {
    name: String,
    outcome: Result<String, String>,
    seconds: f64,
}

/// Runs every step, even after a failure, then prints the summary and fails if any step did.
pub fn run(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!(
            "`cargo xtask test` takes no arguments (got `{arg}`)"
        ));
    }
    let mut steps: Vec<Step> = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Result<String, String>| {
        eprintln!("\n=== xtask test: {name}");
        let start = Instant::now();
        let outcome = f();
        if let Err(e) = &outcome {
            eprintln!("=== {name} FAILED: {e}");
        }
        steps.push(Step {
            name: name.to_string(),
            outcome,
            seconds: start.elapsed().as_secs_f64(),
        });
    };

    step("rustup targets", &mut || {
        ensure_targets().map(|()| "installed".into())
    });
    step("rustfmt", &mut rustfmt);
    step("clippy host", &mut || {
        checked(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]))
    });
    for target in BARE_METAL_TARGETS {
        step(&format!("clippy {target}"), &mut || {
            clippy_bare_metal(target)
        });
    }
    step("host tests", &mut || {
        checked(cargo().args(["test", "--workspace", "--all-features"]))
    });
    step("loom models", &mut loom_models);
    step("miri (CI subset)", &mut || {
        crate::miri::run(&["--ci".to_string()]).map(|()| "passed".into())
    });
    for target in BARE_METAL_TARGETS {
        step(&format!("build {target}"), &mut || {
            let mut command = cargo();
            command.args(["build", "--target", target]);
            for krate in NO_STD_CRATES {
                command.args(["-p", krate]);
            }
            checked(&mut command)
        });
    }
    step("docs.rs builds", &mut docs_rs_builds);
    step("qemu boots", &mut || crate::qemu::boot_and_check());

    eprintln!("\nxtask test summary");
    let mut failed = 0;
    for s in &steps {
        let (mark, detail) = match &s.outcome {
            Ok(d) => ("ok  ", d.clone()),
            Err(e) => {
                failed += 1;
                ("FAIL", e.lines().next().unwrap_or("").to_string())
            }
        };
        eprintln!("  {mark} {:<28} {:>6.1}s  {detail}", s.name, s.seconds);
    }
    let passed = steps.len() - failed;
    println!("xtask: {passed} passed, {failed} failed");
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} step(s) failed"))
    }
}

/// How docs.rs builds one crate: its `[package.metadata.docs.rs]`.
#[derive(Debug, PartialEq, Eq)]
struct DocsRs {
    krate: String,
    targets: Vec<String>,
    all_features: bool,
    features: Vec<String>,
}

/// The docs.rs settings of every workspace package that has them, from
/// `cargo metadata`'s JSON.
fn docs_rs_settings(metadata: &serde_json::Value) -> Vec<DocsRs> {
    let strings = |v: Option<&serde_json::Value>| -> Vec<String> {
        v.and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    packages
        .iter()
        .filter_map(|p| {
            let docs = p.get("metadata")?.get("docs")?.get("rs")?;
            let mut targets = strings(docs.get("targets"));
            if targets.is_empty() {
                targets = docs
                    .get("default-target")
                    .and_then(|t| t.as_str())
                    .map(|t| vec![t.to_string()])
                    .unwrap_or_default();
            }
            Some(DocsRs {
                krate: p["name"].as_str()?.to_string(),
                targets,
                all_features: docs
                    .get("all-features")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
                features: strings(docs.get("features")),
            })
        })
        .collect()
}

/// Builds every crate's documentation the way docs.rs will: its targets, its features,
/// warnings denied.
fn docs_rs_builds() -> Result<String, String> {
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata output: {e}"))?;
    let settings = docs_rs_settings(&metadata);
    for docs in &settings {
        for target in &docs.targets {
            let mut command = cargo();
            command
                .args(["doc", "--no-deps", "-p", &docs.krate, "--target", target])
                .env("RUSTDOCFLAGS", "-D warnings --cfg docsrs");
            if docs.all_features {
                command.arg("--all-features");
            } else if !docs.features.is_empty() {
                command.arg("--features").arg(docs.features.join(","));
            }
            run_checked(&mut command).map_err(|e| format!("{} on {target}: {e}", docs.krate))?;
        }
    }
    Ok(format!("{} crates as docs.rs builds them", settings.len()))
}

/// Runs `command` (see [`run_checked`]); Ok("passed") on success, for the summary.
pub fn checked(command: &mut Command) -> Result<String, String> {
    run_checked(command).map(|()| "passed".into())
}

fn kernel_manifests() -> impl Iterator<Item = (String, &'static str)> {
    let root = repo_root();
    KERNELS.into_iter().filter_map(move |(dir, target)| {
        let manifest = root.join(dir).join("Cargo.toml");
        manifest
            .exists()
            .then(|| (manifest.to_string_lossy().into_owned(), target))
    })
}

fn rustfmt() -> Result<String, String> {
    checked(cargo().args(["fmt", "--all", "--check"]))?;
    for (manifest, _) in kernel_manifests() {
        checked(cargo().args(["fmt", "--check", "--manifest-path", &manifest]))?;
    }
    Ok("formatted".into())
}

fn clippy_bare_metal(target: &str) -> Result<String, String> {
    let mut command = cargo();
    command.args(["clippy", "--lib", "--target", target]);
    for krate in NO_STD_CRATES {
        command.args(["-p", krate]);
    }
    command.args(["--", "-D", "warnings"]);
    checked(&mut command)?;
    let kernels_dir = crate::cli::target_dir().join("kernels");
    for (manifest, kernel_target) in kernel_manifests() {
        if kernel_target != target {
            continue;
        }
        checked(
            cargo()
                .args([
                    "clippy",
                    "--release",
                    "--manifest-path",
                    &manifest,
                    "--target",
                    target,
                ])
                .arg("--target-dir")
                .arg(&kernels_dir)
                .args(["--", "-D", "warnings"]),
        )?;
    }
    Ok("no warnings".into())
}

/// Crates that carry loom models in `tests/loom.rs`.
fn loom_crates() -> Vec<String> {
    let crates_dir = repo_root().join("crates");
    let mut found: Vec<String> = std::fs::read_dir(&crates_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| Path::new(&e.path()).join("tests").join("loom.rs").exists())
        .map(|e| format!("devpriv-{}", e.file_name().to_string_lossy()))
        .collect();
    found.sort();
    found
}

fn loom_models() -> Result<String, String> {
    let crates = loom_crates();
    if crates.is_empty() {
        return Ok("no loom models".into());
    }
    let mut command = cargo();
    command
        .args(["test", "--release", "--test", "loom"])
        .env("RUSTFLAGS", "--cfg loom")
        .env("LOOM_MAX_PREEMPTIONS", "2")
        .arg("--target-dir")
        .arg(crate::cli::target_dir().join("loom"));
    for krate in &crates {
        command.args(["-p", krate]);
    }
    checked(&mut command).map(|_| format!("passed ({})", crates.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_rs_settings_are_read_from_cargo_metadata() {
        let metadata = serde_json::json!({
            "packages": [
                {"name": "a", "metadata": {"docs": {"rs": {
                    "default-target": "x86_64-unknown-none",
                    "targets": ["x86_64-unknown-none", "aarch64-unknown-none"],
                    "all-features": true
                }}}},
                {"name": "b", "metadata": {"docs": {"rs": {
                    "default-target": "x86_64-unknown-none",
                    "features": ["alloc"]
                }}}},
                {"name": "c", "metadata": null}
            ]
        });
        assert_eq!(
            docs_rs_settings(&metadata),
            vec![
                DocsRs {
                    krate: "a".into(),
                    targets: vec!["x86_64-unknown-none".into(), "aarch64-unknown-none".into()],
                    all_features: true,
                    features: vec![],
                },
                DocsRs {
                    krate: "b".into(),
                    targets: vec!["x86_64-unknown-none".into()],
                    all_features: false,
                    features: vec!["alloc".into()],
                },
            ]
        );
    }
}
