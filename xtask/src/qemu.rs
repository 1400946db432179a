//! `cargo xtask qemu`: build the example kernels, boot them on QEMU, stream their
//! consoles, and exit with their status; and the QEMU step of `cargo xtask test`.
//!
//! On a fresh machine the missing rustup targets are installed, and a missing
//! `qemu-system-*` is installed with apt where that is possible (root on Debian or
//! Ubuntu), or the error says exactly what to run.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::{Args, cargo, parse_number, repo_root, run_checked};

pub use devpriv_demo::report::{EXIT_PREFIX, PASS_MARKER, SUMMARY_PREFIX};

/// Seconds a boot may take under software emulation before it counts as hung.
const TCG_TIMEOUT_SECS: u64 = 60;
/// Seconds a boot may take under KVM.
const KVM_TIMEOUT_SECS: u64 = 30;

/// The Debian packages that hold the two QEMU system emulators.
const QEMU_PACKAGES: [&str; 2] = ["qemu-system-x86", "qemu-system-arm"];

/// An example kernel's architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelArch {
    /// The PVH kernel in `examples/kernel-x86_64`.
    X86_64,
    /// The `-M virt` kernel in `examples/kernel-aarch64`.
    Aarch64,
}

impl KernelArch {
    /// Both, in boot order.
    pub const ALL: [KernelArch; 2] = [KernelArch::X86_64, KernelArch::Aarch64];

    /// `x86_64` or `aarch64`.
    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        }
    }

    /// The rustup target the kernel builds for.
    pub fn target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-none",
            Self::Aarch64 => "aarch64-unknown-none",
        }
    }

    /// The kernel's crate directory, relative to the repository root.
    pub fn crate_dir(self) -> &'static str {
        match self {
            Self::X86_64 => "examples/kernel-x86_64",
            Self::Aarch64 => "examples/kernel-aarch64",
        }
    }

    /// The QEMU binary.
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Self::X86_64 => "qemu-system-x86_64",
            Self::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The QEMU exit status of a kernel that finished: x86_64 writes 0x10 to
    /// isa-debug-exit (status `(0x10 << 1) | 1`); aarch64 powers off with PSCI
    /// `SYSTEM_OFF` (status 0) after its result line, which is then the verdict.
    pub fn success_status(self) -> i32 {
        match self {
            Self::X86_64 => 33,
            Self::Aarch64 => 0,
        }
    }

    /// The status that means the kernel reported failure (aarch64: none; its result
    /// line says so).
    pub fn failure_status(self) -> Option<i32> {
        match self {
            Self::X86_64 => Some(35),
            Self::Aarch64 => None,
        }
    }

    /// Whether this is the architecture xtask runs on (the only one KVM can run).
    pub fn is_host(self) -> bool {
        self.name() == std::env::consts::ARCH
    }

    /// QEMU's arguments, without the kernel.
    pub fn qemu_args(self, kvm: bool) -> Vec<&'static str> {
        let mut args = match self {
            Self::X86_64 => vec![
                "-machine",
                "q35",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
            ],
            Self::Aarch64 => vec!["-machine", "virt"],
        };
        args.extend([
            "-m",
            "128M",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ]);
        // x86_64 keeps QEMU's default CPU model (it has NX, PAT and PGE) under KVM too:
        // `-cpu host` aborts QEMU 7.2 on some hosts (it cannot set IA32_ARCH_CAPABILITIES).
        // aarch64 under KVM must use the host's CPU.
        match (self, kvm) {
            (Self::X86_64, true) => args.extend(["-accel", "kvm"]),
            (Self::X86_64, false) => {}
            (Self::Aarch64, true) => args.extend(["-accel", "kvm", "-cpu", "host"]),
            (Self::Aarch64, false) => args.extend(["-cpu", "cortex-a57"]),
        }
        args
    }

    fn parse(text: &str) -> Result<Vec<KernelArch>, String> {
        match text {
            "x86_64" => Ok(vec![Self::X86_64]),
            "aarch64" => Ok(vec![Self::Aarch64]),
            "all" => Ok(Self::ALL.to_vec()),
            other => Err(format!(
                "unknown --arch `{other}` (expected x86_64, aarch64 or all)"
            )),
        }
    }
}

/// How one boot ended.
#[derive(Debug)]
pub struct Boot {
    /// The architecture.
    pub arch: KernelArch,
    /// The console output, with `\r` removed.
    pub transcript: String,
    /// QEMU's exit status, or `None` if it was killed at the timeout.
    pub status: Option<ExitStatus>,
    /// How long QEMU ran.
    pub elapsed: Duration,
}

impl Boot {
    /// Ok if QEMU exited with the kernel's success status.
    pub fn exit_verdict(&self) -> Result<(), String> {
        let arch = self.arch;
        let Some(status) = self.status else {
            return Err(format!(
                "{}: timed out after {:.0} s (the kernel hung or QEMU could not exit)",
                arch.name(),
                self.elapsed.as_secs_f64()
            ));
        };
        let result = self
            .transcript
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(EXIT_PREFIX));
        match status.code() {
            Some(code) if code == arch.success_status() && result == Some("PASS") => Ok(()),
            Some(code)
                if Some(code) == arch.failure_status()
                    || (code == arch.success_status() && result == Some("FAIL")) =>
            {
                Err(format!(
                    "{}: the kernel reported failure (QEMU status {code}, `{EXIT_PREFIX}{}`)",
                    arch.name(),
                    result.unwrap_or("?")
                ))
            }
            Some(code) if code == arch.success_status() => Err(format!(
                "{}: QEMU exited with status {code} but the kernel printed no `{EXIT_PREFIX}` \
                 line (it stopped early)",
                arch.name()
            )),
            _ => Err(format!(
                "{}: QEMU exited with {status}, not the kernel's success status {} (a crash, \
                 a triple fault, or QEMU refused to start)",
                arch.name(),
                arch.success_status()
            )),
        }
    }
}

/// The demo's summary line in `transcript`.
pub fn summary_line(transcript: &str) -> Option<&str> {
    transcript
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(SUMMARY_PREFIX))
}

/// Ok with the summary line if `transcript` has a passing one, every step line of the
/// demo (`step N: title`, parts 1–4) and no failed check.
pub fn check_transcript(transcript: &str) -> Result<&str, String> {
    let lines: Vec<&str> = transcript.lines().map(str::trim).collect();
    let missing: Vec<String> = devpriv_demo::scenario::expected_step_lines()
        .map(|(n, title)| format!("step {n}: {title}"))
        .filter(|want| !lines.contains(&want.as_str()))
        .collect();
    if let Some(first) = missing.first() {
        return Err(format!(
            "{} expected line(s) missing, the first `{first}`",
            missing.len()
        ));
    }
    if let Some(failed) = lines.iter().find(|l| l.starts_with("FAIL ")) {
        return Err(format!("a check failed: `{failed}`"));
    }
    match summary_line(transcript) {
        Some(line) if line.ends_with(PASS_MARKER) => Ok(line),
        Some(line) => Err(format!("the demo did not pass: {line}")),
        None => Err(format!(
            "the transcript has no `{SUMMARY_PREFIX}` line (the demo did not finish)"
        )),
    }
}

/// `cargo xtask qemu [--arch x86_64|aarch64|all] [--accel kvm|tcg] [--timeout SECS]`.
pub fn run(args: &[String]) -> Result<(), String> {
    let parsed = Args::parse(args, &["arch", "accel", "timeout"])?;
    parsed.reject_unknown_switches(&[])?;
    if let Some(extra) = parsed.positional.first() {
        return Err(format!("unexpected argument `{extra}`"));
    }
    let arches = KernelArch::parse(parsed.option("arch").unwrap_or("all"))?;
    let kvm = match parsed.option("accel").unwrap_or("tcg") {
        "kvm" => true,
        "tcg" => false,
        other => return Err(format!("unknown --accel `{other}` (expected kvm or tcg)")),
    };
    let timeout = match parsed.option("timeout") {
        Some(text) => Some(Duration::from_secs(parse_number(text)?)),
        None => None,
    };
    crate::toolchain::ensure_targets()?;
    let mut failures = Vec::new();
    for arch in arches {
        let use_kvm = kvm && arch.is_host();
        if kvm && !use_kvm {
            eprintln!(
                "xtask qemu: KVM runs only {} guests here; booting {} under TCG",
                std::env::consts::ARCH,
                arch.name()
            );
        }
        let boot = build_and_boot(arch, use_kvm, timeout, &mut std::io::stdout())?;
        match boot.exit_verdict() {
            Ok(()) => eprintln!(
                "xtask qemu: {} exited successfully ({:.1} s)",
                arch.name(),
                boot.elapsed.as_secs_f64()
            ),
            Err(e) => {
                eprintln!("xtask qemu: {e}");
                failures.push(e);
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// The QEMU step of `cargo xtask test`: boots both kernels under TCG and succeeds only
/// if both exit with their success status and print a passing summary line. Returns a
/// one-line summary.
pub fn boot_and_check() -> Result<String, String> {
    crate::toolchain::ensure_targets()?;
    let mut parts = Vec::new();
    let mut failures = Vec::new();
    for arch in KernelArch::ALL {
        let boot = build_and_boot(arch, false, None, &mut std::io::stderr())?;
        let verdict = boot.exit_verdict().and_then(|()| {
            check_transcript(&boot.transcript).map_err(|e| format!("{}: {e}", arch.name()))
        });
        match verdict {
            Ok(line) => {
                let checks = line
                    .split_whitespace()
                    .find(|w| w.starts_with("checks="))
                    .unwrap_or("checks=?");
                parts.push(format!("{} {checks}", arch.name()));
            }
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        Ok(format!("both kernels passed ({})", parts.join(", ")))
    } else {
        Err(failures.join("; "))
    }
}

/// Builds the kernel for `arch` and returns the path of its ELF.
pub fn build_kernel(arch: KernelArch) -> Result<PathBuf, String> {
    build_kernel_with(arch, &[], "kernels")
}

/// Builds the kernel for `arch` with cargo `features` into `<target dir>/<target_dir>` and
/// returns the path of its ELF.
pub fn build_kernel_with(
    arch: KernelArch,
    features: &[&str],
    target_dir: &str,
) -> Result<PathBuf, String> {
    let root = repo_root();
    let target_dir = crate::cli::target_dir().join(target_dir);
    let manifest = root.join(arch.crate_dir()).join("Cargo.toml");
    eprintln!("xtask qemu: building the {} kernel", arch.name());
    let mut command = cargo();
    command.args(["build", "--release", "--target", arch.target()]);
    if !features.is_empty() {
        command.arg("--features").arg(features.join(","));
    }
    run_checked(
        command
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir),
    )
    .map_err(|e| format!("building the {} kernel: {e}", arch.name()))?;
    let elf = target_dir
        .join(arch.target())
        .join("release")
        .join(format!("devpriv-kernel-{}", arch.name()));
    if elf.is_file() {
        Ok(elf)
    } else {
        Err(format!("the build did not produce {}", elf.display()))
    }
}

/// Builds and boots `arch`, streaming the console to `console`.
pub fn build_and_boot(
    arch: KernelArch,
    kvm: bool,
    timeout: Option<Duration>,
    console: &mut dyn Write,
) -> Result<Boot, String> {
    let qemu = ensure_qemu(arch)?;
    if kvm && !Path::new("/dev/kvm").exists() {
        return Err("--accel kvm: /dev/kvm does not exist on this machine".into());
    }
    let elf = build_kernel(arch)?;
    let timeout = timeout.unwrap_or(Duration::from_secs(if kvm {
        KVM_TIMEOUT_SECS
    } else {
        TCG_TIMEOUT_SECS
    }));
    boot(arch, &qemu, &elf, kvm, timeout, console)
}

/// Boots `elf` on `qemu`, streams its console to `console`, and kills it after
/// `timeout`.
pub fn boot(
    arch: KernelArch,
    qemu: &Path,
    elf: &Path,
    kvm: bool,
    timeout: Duration,
    console: &mut dyn Write,
) -> Result<Boot, String> {
    let mut command = Command::new(qemu);
    command
        .args(arch.qemu_args(kvm))
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let _ = writeln!(
        console,
        "xtask qemu: {} {}",
        qemu.display(),
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", qemu.display()))?;
    let (sender, receiver) = mpsc::channel::<Vec<u8>>();
    let readers = [
        spawn_reader(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            sender.clone(),
        ),
        spawn_reader(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            sender,
        ),
    ];
    let mut transcript = Vec::new();
    let status = loop {
        while let Ok(chunk) = receiver.try_recv() {
            forward(&chunk, console, &mut transcript);
        }
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() >= timeout => {
                kill(&mut child);
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                kill(&mut child);
                return Err(format!("waiting for QEMU failed: {e}"));
            }
        }
    };
    let elapsed = start.elapsed();
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    while let Ok(chunk) = receiver.try_recv() {
        forward(&chunk, console, &mut transcript);
    }
    let _ = console.flush();
    Ok(Boot {
        arch,
        transcript: String::from_utf8_lossy(&transcript).replace('\r', ""),
        status,
        elapsed,
    })
}

fn spawn_reader(
    stream: Option<Box<dyn Read + Send>>,
    sender: mpsc::Sender<Vec<u8>>,
) -> Option<thread::JoinHandle<()>> {
    let mut stream = stream?;
    Some(thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender.send(buffer[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    }))
}

fn forward(chunk: &[u8], console: &mut dyn Write, transcript: &mut Vec<u8>) {
    let text: Vec<u8> = chunk.iter().copied().filter(|b| *b != b'\r').collect();
    let _ = console.write_all(&text);
    let _ = console.flush();
    transcript.extend_from_slice(chunk);
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The path of `qemu-system-<arch>`, installing QEMU with apt if it is missing and this
/// is root on Debian or Ubuntu; otherwise an error that says what to run.
pub fn ensure_qemu(arch: KernelArch) -> Result<PathBuf, String> {
    let binary = arch.qemu_binary();
    if let Some(path) = find_in_path(binary) {
        return Ok(path);
    }
    let manual = format!(
        "{binary} is not installed. On Debian or Ubuntu run:\n  sudo apt-get update && sudo \
         apt-get install -y --no-install-recommends --no-remove {}\n(on Debian bookworm with qemu-utils \
         from bookworm-backports, add bookworm-backports to apt's sources and add `-t \
         bookworm-backports`); elsewhere install QEMU's {binary} with the system package \
         manager (Fedora: sudo dnf install qemu-system-x86 qemu-system-aarch64; macOS: brew \
         install qemu)",
        QEMU_PACKAGES.join(" ")
    );
    if find_in_path("apt-get").is_none() || !is_root() {
        return Err(manual);
    }
    eprintln!(
        "xtask qemu: {binary} is missing; installing {} with apt-get",
        QEMU_PACKAGES.join(" ")
    );
    install_qemu_with_apt().map_err(|e| format!("{e}\n{manual}"))?;
    find_in_path(binary)
        .ok_or_else(|| format!("apt-get succeeded but {binary} is still missing\n{manual}"))
}

/// `apt-get update`, then the plain install; if that fails on Debian with the conflict a
/// backports `qemu-utils` causes, the same install from `<codename>-backports`.
fn install_qemu_with_apt() -> Result<(), String> {
    apt(&["update"])?;
    let first = apt_capture(&install_command(None))?;
    if first.success {
        return Ok(());
    }
    let conflict = first.output.contains("Breaks")
        || first.output.contains("held broken packages")
        || first.output.contains("generated breaks")
        || first.output.contains("unmet dependencies");
    let codename = os_release_field("VERSION_CODENAME");
    let (true, Some(codename)) = (conflict, codename) else {
        return Err("apt-get install failed".into());
    };
    let suite = format!("{codename}-backports");
    eprintln!("xtask qemu: the install conflicts with installed packages; retrying from {suite}");
    ensure_backports_source(&codename)?;
    apt(&["update"])?;
    apt(&install_command(Some(&suite)))
}

/// The `apt-get` arguments that install QEMU (from `suite`, if given). `--no-remove`
/// makes apt refuse rather than remove an installed package to resolve a conflict, and
/// without `--allow-downgrades` it never downgrades one: the installer only adds.
fn install_command(suite: Option<&str>) -> Vec<&str> {
    let mut install = vec!["install", "-y", "--no-install-recommends", "--no-remove"];
    if let Some(suite) = suite {
        install.extend(["-t", suite]);
    }
    install.extend(QEMU_PACKAGES);
    install
}

/// Adds `<codename>-backports` to apt's sources unless some source already has it. The
/// archive URI and keyring come from the stanza of `/etc/apt/sources.list.d/debian.sources`
/// that carries `<codename>` itself.
fn ensure_backports_source(codename: &str) -> Result<(), String> {
    let suite = format!("{codename}-backports");
    let dir = Path::new("/etc/apt/sources.list.d");
    let mut existing = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        existing.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    if existing
        .lines()
        .any(|l| !l.trim_start().starts_with('#') && l.contains(&suite))
    {
        return Ok(());
    }
    let debian_sources = std::fs::read_to_string(dir.join("debian.sources"))
        .map_err(|e| format!("cannot read /etc/apt/sources.list.d/debian.sources: {e}"))?;
    let stanza = backports_stanza(&debian_sources, codename).ok_or_else(|| {
        format!("debian.sources has no stanza for suite {codename} to derive {suite} from")
    })?;
    let path = dir.join(format!("devpriv-{suite}.sources"));
    std::fs::write(&path, stanza).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("xtask qemu: added {}", path.display());
    Ok(())
}

/// A deb822 stanza for `<codename>-backports`, copying `URIs`, `Components` and
/// `Signed-By` from the stanza of `debian_sources` whose `Suites` include `codename`.
pub fn backports_stanza(debian_sources: &str, codename: &str) -> Option<String> {
    for stanza in debian_sources.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim().to_string())
            })
        };
        let suites = field("Suites")?;
        if !suites.split_whitespace().any(|s| s == codename) {
            continue;
        }
        let uris = field("URIs")?;
        let uri = uris.split_whitespace().next()?;
        let mut out = format!(
            "Types: deb\nURIs: {uri}\nSuites: {codename}-backports\nComponents: {}\n",
            field("Components").unwrap_or_else(|| "main".into())
        );
        if let Some(key) = field("Signed-By") {
            out.push_str(&format!("Signed-By: {key}\n"));
        }
        return Some(out);
    }
    None
}

fn apt(args: &[&str]) -> Result<(), String> {
    run_checked(
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

struct AptOutput {
    success: bool,
    output: String,
}

fn apt_capture(args: &[&str]) -> Result<AptOutput, String> {
    let out = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("could not run apt-get: {e}"))?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    eprint!("{output}");
    Ok(AptOutput {
        success: out.status.success(),
        output,
    })
}

fn os_release_field(name: &str) -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix('=')?;
        Some(value.trim_matches('"').to_string()).filter(|v| !v.is_empty())
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn find_in_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_SOURCES: &str = "Types: deb\n# a snapshot comment\nURIs: http://archive.example/debian\n\
Suites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
Types: deb\nURIs: http://archive.example/debian-security\nSuites: bookworm-security\nComponents: main\n\
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

    #[test]
    fn backports_stanza_copies_the_main_archive() {
        let stanza = backports_stanza(DEBIAN_SOURCES, "bookworm").unwrap();
        assert_eq!(
            stanza,
            "Types: deb\nURIs: http://archive.example/debian\nSuites: bookworm-backports\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        );
    }

    #[test]
    fn the_installer_never_removes_or_downgrades() {
        for suite in [None, Some("bookworm-backports")] {
            let command = install_command(suite);
            assert!(command.contains(&"--no-remove"), "{command:?}");
            assert!(!command.iter().any(|a| a.contains("allow")), "{command:?}");
        }
        assert!(install_command(Some("bookworm-backports")).ends_with(&QEMU_PACKAGES));
    }

    #[test]
    fn backports_stanza_needs_the_codename_suite() {
        assert_eq!(backports_stanza(DEBIAN_SOURCES, "trixie"), None);
        assert_eq!(backports_stanza("", "bookworm"), None);
    }

    /// Every step line of a full run, then `tail`.
    fn transcript_with(tail: &str) -> String {
        let mut t: String = devpriv_demo::scenario::expected_step_lines()
            .map(|(n, title)| format!("step {n}: {title}\r\n  ok   something\n"))
            .collect();
        t.push_str(tail);
        t.replace('\r', "")
    }

    #[test]
    fn transcripts_pass_only_with_every_step_and_a_passing_summary() {
        let pass = "devpriv-demo: summary arch=x86_64 checks=20/20 faults=11 result=PASS\n";
        assert!(check_transcript(&transcript_with(pass)).is_ok());
        let fail = "devpriv-demo: summary arch=x86_64 checks=19/20 faults=11 result=FAIL\n";
        assert!(check_transcript(&transcript_with(fail)).is_err());
        assert!(check_transcript("devpriv-kernel: panic: oops\n").is_err());
        // A passing summary is not enough: a missing step or a failed check fails.
        let without_step_3 = transcript_with(pass).replace("step 3:", "stage 3:");
        let err = check_transcript(&without_step_3).unwrap_err();
        assert!(err.contains("step 3:"), "{err}");
        let with_failure = transcript_with(&format!("  FAIL a check\n{pass}"));
        assert!(check_transcript(&with_failure).is_err());
    }

    #[test]
    fn the_aarch64_verdict_is_its_result_line() {
        use std::os::unix::process::ExitStatusExt;
        let boot = |transcript: &str| Boot {
            arch: KernelArch::Aarch64,
            transcript: transcript.to_string(),
            status: Some(ExitStatus::from_raw(0)),
            elapsed: Duration::from_secs(1),
        };
        assert!(
            boot("devpriv-kernel: exit result=PASS\n")
                .exit_verdict()
                .is_ok()
        );
        let fail = boot("devpriv-kernel: exit result=FAIL\n")
            .exit_verdict()
            .unwrap_err();
        assert!(fail.contains("reported failure"), "{fail}");
        let early = boot("devpriv-kernel: panic\n").exit_verdict().unwrap_err();
        assert!(
            early.contains("no `devpriv-kernel: exit result=` line"),
            "{early}"
        );
    }

    #[test]
    fn arch_options_parse() {
        assert_eq!(KernelArch::parse("all").unwrap(), KernelArch::ALL.to_vec());
        assert_eq!(
            KernelArch::parse("aarch64").unwrap(),
            vec![KernelArch::Aarch64]
        );
        assert!(KernelArch::parse("riscv64").is_err());
    }

    /// Builds and boots both kernels (needs QEMU; run with `--ignored`).
    #[test]
    #[ignore = "boots QEMU; run with `cargo test -p xtask -- --ignored`"]
    fn both_kernels_boot_and_pass() {
        let summary = boot_and_check().unwrap();
        assert!(summary.starts_with("both kernels passed"), "{summary}");
    }

    /// A kernel that takes a fault nobody expected must exit with its failure status,
    /// and `boot_and_check`'s checks must reject it (needs QEMU; run with `--ignored`).
    #[test]
    #[ignore = "boots QEMU; run with `cargo test -p xtask -- --ignored`"]
    fn an_unexpected_fault_fails_the_boot() {
        for arch in KernelArch::ALL {
            let qemu = ensure_qemu(arch).unwrap();
            let elf = build_kernel_with(arch, &["unexpected-fault-selftest"], "kernels-selftest")
                .unwrap();
            let boot = boot(
                arch,
                &qemu,
                &elf,
                false,
                Duration::from_secs(TCG_TIMEOUT_SECS),
                &mut std::io::sink(),
            )
            .unwrap();
            let verdict = boot.exit_verdict().unwrap_err();
            assert!(verdict.contains("reported failure"), "{verdict}");
            assert!(
                boot.transcript.contains("UNEXPECTED"),
                "{}",
                boot.transcript
            );
        }
    }

    #[test]
    fn kvm_replaces_the_emulated_cpu() {
        let tcg = KernelArch::Aarch64.qemu_args(false);
        assert!(tcg.contains(&"cortex-a57") && !tcg.contains(&"kvm"));
        let kvm = KernelArch::Aarch64.qemu_args(true);
        assert!(kvm.contains(&"host") && kvm.contains(&"kvm") && !kvm.contains(&"cortex-a57"));
    }
}
