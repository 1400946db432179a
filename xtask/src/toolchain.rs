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

/// The toolchain Miri runs on (Miri exists only on nightly).
pub const MIRI_TOOLCHAIN: &str = "nightly";

/// The rustup command that installs [`MIRI_TOOLCHAIN`] with Miri and the standard
/// library's source (Miri builds its own sysroot from it).
pub const MIRI_INSTALL: [&str; 7] = [
    "toolchain",
    "install",
    MIRI_TOOLCHAIN,
    "--profile",
    "minimal",
    "--component",
    "miri,rust-src",
];

/// `cargo` of [`MIRI_TOOLCHAIN`] through rustup, run from the repository root.
///
/// The `cargo` that runs xtask is the pinned toolchain's own binary, not rustup's proxy,
/// so `cargo +nightly` would not work; and the variables cargo sets for xtask would
/// send the nightly cargo back to the pinned toolchain's tools, so they are removed.
pub fn nightly_cargo() -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", MIRI_TOOLCHAIN, "cargo"])
        .current_dir(crate::cli::repo_root());
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "RUSTC_WRAPPER",
    ] {
        command.env_remove(var);
    }
    command
}

/// Installs nightly with Miri when `cargo miri` does not run on it, then builds Miri's
/// sysroot (`cargo miri setup`, quick when it is already built).
pub fn ensure_miri() -> Result<(), String> {
    let has_miri = nightly_cargo()
        .args(["miri", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match has_miri {
        Ok(status) if status.success() => {}
        Ok(_) => {
            eprintln!("xtask: installing Miri: rustup {}", MIRI_INSTALL.join(" "));
            run_checked(Command::new("rustup").args(MIRI_INSTALL))?;
        }
        Err(_) => {
            return Err(format!(
                "rustup is not available; Miri needs it: rustup {}",
                MIRI_INSTALL.join(" ")
            ));
        }
    }
    run_checked(nightly_cargo().args(["miri", "setup"]))
}
