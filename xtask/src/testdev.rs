//! `cargo xtask testdev`: a readable transcript of one run of the simulated device
//! (devpriv-testdev's `transcript` example), then the throughput sweep with a progress
//! bar.

use crate::cli::{Args, cargo, run_checked};

/// Runs the transcript example in release mode, passing `--full` on.
pub fn run(args: &[String]) -> Result<(), String> {
    let args = Args::parse(args, &[])?;
    args.reject_unknown_switches(&["full"])?;
    args.reject_positional()?;
    let mut command = cargo();
    command.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "devpriv-testdev",
        "--example",
        "transcript",
    ]);
    if args.switch("full") {
        command.args(["--", "--full"]);
    }
    run_checked(&mut command)
}
