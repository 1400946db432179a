//! Migration throughput (Linux's `benchmark_thp_migration`): buffers of 512 KiB to
//! 256 MiB moved to the simulated device and back, with 4 KiB and 2 MiB folios, with
//! the copy engine copying and with it idle (the bookkeeping alone), side by side in
//! one run. Prints a Markdown table and writes it to `testdev-throughput.md` in the
//! target directory for `cargo xtask bench` (`THROUGHPUT_OUT` names another file).
//!
//! `THROUGHPUT_ITERATIONS` sets the timed round trips per configuration (default 5,
//! as hmm-tests).

use std::io::Write as _;

use devpriv_pte::arch::x86_64::X86_64;
use devpriv_testdev::throughput::{SIZES, sweep, table};

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once, small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let iterations = std::env::var("THROUGHPUT_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let sizes: &[u64] = if quick { &SIZES[..3] } else { &SIZES };
    let rows = sweep::<X86_64>(sizes, iterations, |done, total| {
        eprint!("\rthroughput: {done}/{total} configurations");
        let _ = std::io::stderr().flush();
    });
    eprintln!();
    let table = table(&rows);
    println!("{table}");
    if !quick {
        let out = std::env::var_os("THROUGHPUT_OUT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                let target = std::env::var_os("CARGO_TARGET_DIR")
                    .map(std::path::PathBuf::from)
                    .unwrap_or_else(|| {
                        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
                    });
                target.join("testdev-throughput.md")
            });
        if let Err(e) = std::fs::write(&out, &table) {
            eprintln!("could not write {}: {e}", out.display());
        }
    }
}
