//! `cargo xtask testdev`: a readable transcript of one run of the simulated device
//! (devpriv-testdev's `transcript` example), then the throughput sweep with a progress
//! bar.

use crate::cli::{Args, cargo, run_checked};

/// Runs the transcript example in release mode, passing `--full` on.
pub fn run(args: &[String]) -> Result<(), String> {
    let args = Args::parse(args, &[])?;
    args.reject_unknown_switches(&["full"])?;
    args.reject_positional()?;
    // Cargo's own progress shows while the release build runs (the first one takes a
    // while); the transcript follows it.
    eprintln!("xtask testdev: building and running devpriv-testdev's transcript (release)");
    let mut command = cargo();
    command.args([
        "run",
        "--release",
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
