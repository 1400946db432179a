//! Small helpers shared by the commands: argument parsing and running cargo.

use std::path::PathBuf;
use std::process::Command;

/// The repository root (the parent of xtask's manifest directory).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The directory cargo builds into: `target_directory` from `cargo metadata` (which
/// honours `CARGO_TARGET_DIR` and `build.target-dir`), or, when cargo cannot say,
/// [`target_dir_from_env`]. Asked of cargo once per xtask run (the commands ask often).
pub fn target_dir() -> PathBuf {
    static TARGET_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TARGET_DIR.get_or_init(target_dir_from_cargo).clone()
}

/// [`target_dir`], asked of `cargo metadata`.
fn target_dir_from_cargo() -> PathBuf {
    let metadata = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok());
    metadata
        .as_ref()
        .and_then(target_dir_from_metadata)
        .unwrap_or_else(|| target_dir_from_env(std::env::var_os("CARGO_TARGET_DIR"), &repo_root()))
}

/// `target_directory` from `cargo metadata`'s JSON.
pub fn target_dir_from_metadata(metadata: &serde_json::Value) -> Option<PathBuf> {
    metadata["target_directory"].as_str().map(PathBuf::from)
}

/// The target directory as the cargo commands xtask runs from `root` pick it from the
/// environment: `CARGO_TARGET_DIR` (relative to `root` when relative) if set and not
/// empty, else `root/target`.
pub fn target_dir_from_env(
    cargo_target_dir: Option<std::ffi::OsString>,
    root: &std::path::Path,
) -> PathBuf {
    match cargo_target_dir {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Splits `args` at the first `--`: xtask's own arguments, then the ones it passes on
/// untouched (to criterion, to the test harness). Without `--` the second part is empty.
pub fn split_passthrough(args: &[String]) -> (&[String], &[String]) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    }
}

/// A `cargo` command run from the repository root, with the same cargo binary that runs
/// xtask.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(repo_root());
    command
}

/// Runs `command` with the console inherited; the error names the command and its exit
/// status.
pub fn run_checked(command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("could not start `{}`: {e}", command_line(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", command_line(command)))
    }
}

/// The program and its arguments, as a shell line for messages.
fn command_line(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Parsed `--flag value` options, `--switch` flags and positional arguments.
#[derive(Debug, Default)]
pub struct Args {
    options: Vec<(String, String)>,
    switches: Vec<String>,
    /// Arguments that are neither options nor switches, in order.
    pub positional: Vec<String>,
}

impl Args {
    /// Parses `args`; names in `with_value` take the next argument (or what follows
    /// `=`) as their value. `--name=value` for any other name is an error; other
    /// `--name`s are switches, checked by
    /// [`reject_unknown_switches`](Self::reject_unknown_switches).
    pub fn parse(args: &[String], with_value: &[&str]) -> Result<Self, String> {
        let mut parsed = Args::default();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if let Some(name) = arg.strip_prefix("--") {
                let (name, value) = if let Some((name, value)) = name.split_once('=') {
                    if !with_value.contains(&name) {
                        return Err(format!("unknown option --{name}"));
                    }
                    (name, value.to_string())
                } else if with_value.contains(&name) {
                    let value = iter
                        .next()
                        .ok_or_else(|| format!("--{name} needs a value"))?;
                    (name, value.clone())
                } else {
                    parsed.switches.push(name.to_string());
                    continue;
                };
                // A second value would silently win: say so instead.
                if parsed.option(name).is_some() {
                    return Err(format!("--{name} is given twice"));
                }
                parsed.options.push((name.to_string(), value));
            } else {
                parsed.positional.push(arg.clone());
            }
        }
        Ok(parsed)
    }

    /// The value of `--name`, if given.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `--name` was given.
    pub fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    /// Fails if any positional argument was given.
    pub fn reject_positional(&self) -> Result<(), String> {
        match self.positional.first() {
            Some(arg) => Err(format!("unexpected argument `{arg}`")),
            None => Ok(()),
        }
    }

    /// Fails on any switch not in `known`.
    pub fn reject_unknown_switches(&self, known: &[&str]) -> Result<(), String> {
        match self.switches.iter().find(|s| !known.contains(&s.as_str())) {
            Some(s) => Err(format!("unknown flag --{s}")),
            None => Ok(()),
        }
    }
}

/// Parses a number written in hex (`0x` prefix) or decimal.
pub fn parse_number(text: &str) -> Result<u64, String> {
    let cleaned: String = text.chars().filter(|c| *c != '_').collect();
    let parsed = match cleaned
        .strip_prefix("0x")
        .or_else(|| cleaned.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => cleaned.parse::<u64>(),
    };
    parsed.map_err(|e| format!("`{text}` is not a 64-bit number: {e}"))
}

/// The command line after the program name, as strings: a non-UTF-8 argument is an
/// error naming it, not a panic.
pub fn utf8_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<Vec<String>, String> {
    args.into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|bad| format!("argument `{}` is not UTF-8", bad.to_string_lossy()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn an_option_given_twice_is_an_error() {
        let args = strings(&["--level", "1", "--level=2"]);
        assert_eq!(
            Args::parse(&args, &["level"]).err(),
            Some("--level is given twice".to_string())
        );
        let once = Args::parse(&strings(&["--level", "1", "x"]), &["level"]).unwrap();
        assert_eq!(once.option("level"), Some("1"));
    }

    #[test]
    fn arguments_after_the_first_double_dash_pass_through_untouched() {
        let args = strings(&[
            "--summary",
            "decode",
            "--",
            "--warm-up-time",
            "1",
            "--",
            "x",
        ]);
        let (own, rest) = split_passthrough(&args);
        assert_eq!(own, strings(&["--summary", "decode"]));
        assert_eq!(rest, strings(&["--warm-up-time", "1", "--", "x"]));
    }

    #[test]
    fn without_a_double_dash_nothing_passes_through() {
        let args = strings(&["--summary", "decode"]);
        let (own, rest) = split_passthrough(&args);
        assert_eq!(own, args.as_slice());
        assert!(rest.is_empty());
        let (own, rest) = split_passthrough(&[]);
        assert!(own.is_empty() && rest.is_empty());
    }

    #[test]
    fn cargo_target_dir_wins_and_is_relative_to_the_repository() {
        let root = Path::new("/home/me/devpriv");
        assert_eq!(
            target_dir_from_env(Some("/tmp/t".into()), root),
            Path::new("/tmp/t")
        );
        assert_eq!(
            target_dir_from_env(Some("out".into()), root),
            Path::new("/home/me/devpriv/out")
        );
        assert_eq!(
            target_dir_from_env(Some("".into()), root),
            Path::new("/home/me/devpriv/target")
        );
        assert_eq!(
            target_dir_from_env(None, root),
            Path::new("/home/me/devpriv/target")
        );
    }

    #[test]
    fn the_target_dir_is_read_from_cargo_metadata() {
        let metadata = serde_json::json!({"packages": [], "target_directory": "/work/t"});
        assert_eq!(
            target_dir_from_metadata(&metadata),
            Some(PathBuf::from("/work/t"))
        );
        assert_eq!(target_dir_from_metadata(&serde_json::json!({})), None);
    }

    #[test]
    fn the_real_target_dir_honours_cargo_target_dir() {
        // Cargo runs xtask's tests with the environment it was given, so the answer
        // must agree with CARGO_TARGET_DIR when that is set.
        let dir = target_dir();
        assert!(dir.is_absolute(), "{}", dir.display());
        if let Some(env) = std::env::var_os("CARGO_TARGET_DIR").filter(|e| !e.is_empty()) {
            assert_eq!(dir, repo_root().join(env));
        }
    }
}
