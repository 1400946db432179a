//! Small helpers shared by the commands: argument parsing and running cargo.

use std::path::PathBuf;
use std::process::Command;

/// The repository root (the parent of xtask's manifest directory).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
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
                if let Some((name, value)) = name.split_once('=') {
                    if !with_value.contains(&name) {
                        return Err(format!("unknown option --{name}"));
                    }
                    parsed.options.push((name.to_string(), value.to_string()));
                } else if with_value.contains(&name) {
                    let value = iter
                        .next()
                        .ok_or_else(|| format!("--{name} needs a value"))?;
                    parsed.options.push((name.to_string(), value.clone()));
                } else {
                    parsed.switches.push(name.to_string());
                }
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
