//! devpriv's task runner: `cargo xtask <command>`.
//!
//! - `test`: every check CI runs (format, lints for three targets, host tests, loom
//!   models, Miri's CI subset, bare-metal builds, docs.rs builds, QEMU boots), with one
//!   summary line per step.
//! - `qemu`: build and boot the example kernels.
//! - `bench`: run the criterion benches and the testdev throughput sweep, and print
//!   one summary table.
//! - `miri`: the host test suites under Miri (`--ci`: the subset `test` runs).
//! - `testdev`: a readable run of the simulated device and the throughput sweep.
//! - `pte`: decode and encode raw page-table entries.

mod bench;
mod cli;
mod miri;
mod pte_tool;
mod qemu;
mod test;
mod testdev;
mod toolchain;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  test                      run every check CI runs (fmt, clippy x3 targets, host tests,
                            loom models, Miri (CI subset), bare-metal builds, QEMU boots)
  qemu [--arch x86_64|aarch64|all] [--accel kvm]
                            build and boot the example kernels
  bench [--summary] [FILTER ...] [-- CRITERION OPTIONS]
                            run the benchmarks and print one summary table
                            (--summary: only print the table from the last run;
                            e.g. `-- --warm-up-time 1 --measurement-time 3`)
  miri [--ci] [--jobs N] [CRATE ...] [-- TEST ARGS]
                            the host test suites under Miri (installs nightly with
                            miri when missing; --ci: the subset `test` runs)
  testdev [--full]          a transcript of one run of the simulated device, then the
                            migration throughput sweep (--full: up to 256 MiB)
  pte decode --arch ARCH --level N [--profile NAME] [--lenient] [--json] HEX
  pte encode --arch ARCH --level N [--profile NAME] --kind KIND [OPTIONS]
                            decode or encode one page-table entry, devpriv's or a
                            Linux guest's (`cargo xtask pte --help`: every option)
";

fn main() -> ExitCode {
    let args = match cli::utf8_args(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            // `pte ... --json` promises JSON errors, even for an argument it cannot read.
            if std::env::args_os().any(|a| a == "--json") {
                println!("{}", serde_json::json!({ "error": message }));
            }
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "test" => test::run(rest),
        "qemu" => qemu::run(rest),
        "bench" => bench::run(rest),
        "miri" => miri::run(rest),
        "testdev" => testdev::run(rest),
        "pte" => pte_tool::run(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
