//! Making sure the bare-metal targets are installed.

use std::process::Command;

use crate::cli::run_checked;

/// The bare-metal targets every check builds for.
pub const BARE_METAL_TARGETS: [&str; 2] = ["x86_64-unknown-none", "aarch64-unknown-none"];

/// Installs any of [`BARE_METAL_TARGETS`] that rustup reports missing for the pinned
/// toolchain. Without rustup, says which targets must be present.
pub fn ensure_targets() -> Result<(), String> {
    let root = crate::cli::repo_root();
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(&root)
        .output();
    let installed = match installed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => {
            return Err(format!(
                "rustup is not available; install the targets {} for the toolchain in \
                 rust-toolchain.toml",
                BARE_METAL_TARGETS.join(" ")
            ));
        }
    };
    let missing: Vec<&str> = BARE_METAL_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing rustup targets {}", missing.join(" "));
    run_checked(
        Command::new("rustup")
            .args(["target", "add"])
            .args(&missing)
            .current_dir(&root),
    )
}
