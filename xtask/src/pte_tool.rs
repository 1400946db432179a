//! `cargo xtask pte decode|encode`: one page-table entry to and from its raw value, in
//! the layout of a profile (devpriv's own, or a Linux guest's).
//!
//! Raw values, frame numbers, device indices and offsets are hex with or without `0x`
//! (as dumps print them); swap types, levels and widths are decimal.

use devpriv_pte::arch::{aarch64, aarch64::Aarch64, x86_64, x86_64::X86_64};
use devpriv_pte::profile::LINUX_MAIR_VALUE;
use devpriv_pte::{
    AttributeTable, DeviceAccess, DeviceIndex, Entry, LeafAttributes, Level, MainlineOptions,
    Marker, MemoryType, MigrationAccess, PageProperty, PageSize, Pfn, Profile, PteFormat, SideBits,
    SoftwareEntry, SoftwareKind, SwapType, TypeNumbering,
};
use serde_json::{Map, Value, json};

use crate::cli::Args;

/// The options of `pte decode|encode` that take a value.
const VALUED_OPTIONS: [&str; 13] = [
    "arch",
    "level",
    "arm-level",
    "kind",
    "pfn",
    "index",
    "offset",
    "swap-type",
    "memory",
    "profile",
    "phys-bits",
    "numbering",
    "without",
];

/// Every kind `encode --kind` takes (and `decode` prints), with what it needs.
const KINDS: [(&str, &str); 16] = [
    ("absent", ""),
    ("table", "--pfn HEX"),
    ("leaf", "--pfn HEX [PERMISSIONS] [--memory TYPE]"),
    (
        "prot-none",
        "--pfn HEX [PERMISSIONS but --global] [--memory TYPE]",
    ),
    ("swap", "--offset HEX [--swap-type N]"),
    ("migration-read", "--pfn HEX [--young] [--dirty]"),
    ("migration-read-exclusive", "--pfn HEX [--young] [--dirty]"),
    ("migration-write", "--pfn HEX [--young] [--dirty]"),
    (
        "device-private-migration-read",
        "--index HEX [--young] [--dirty]",
    ),
    (
        "device-private-migration-read-exclusive",
        "--index HEX [--young] [--dirty]",
    ),
    (
        "device-private-migration-write",
        "--index HEX [--young] [--dirty]",
    ),
    ("device-private-read", "--index HEX"),
    ("device-private-write", "--index HEX"),
    ("device-exclusive", "--pfn HEX"),
    ("hw-poison", "--pfn HEX"),
    (
        "marker",
        "--offset HEX (bit 0 uffd-wp, 1 poisoned, 2 guard)",
    ),
];

/// The kernel options `--without` turns off, in [`MainlineOptions`] order.
const KERNEL_OPTIONS: [&str; 4] = [
    "device-private",
    "migration",
    "memory-failure",
    "pte-marker",
];

/// The `--memory` names: (short name, long name, memory type). Decoding prints the long
/// name; encoding takes either.
const MEMORY_TYPES: [(&str, &str, MemoryType); 7] = [
    ("wb", "write-back", MemoryType::WriteBack),
    ("wc", "write-combining", MemoryType::WriteCombining),
    ("uc", "uncached", MemoryType::Uncached),
    ("uc-minus", "device", MemoryType::Device),
    ("wt", "write-through", MemoryType::WriteThrough),
    ("wp", "write-protect", MemoryType::WriteProtect),
    ("tagged", "tagged", MemoryType::Tagged),
];

/// The switches that set a leaf's portable attributes (with `--dirty`, which migration
/// kinds share).
const PERMISSION_SWITCHES: [&str; 5] = ["writable", "user", "executable", "global", "accessed"];

/// Dispatches `pte decode` and `pte encode`. With `--json`, an error is also printed on
/// stdout as `{"error": "..."}`; either way it is returned, so the command fails.
pub fn run(args: &[String]) -> Result<(), String> {
    match execute(args) {
        Ok(text) => {
            print!("{text}");
            Ok(())
        }
        Err(message) => {
            if args.iter().any(|a| a == "--json") {
                println!("{}", json_error(&message));
            }
            Err(message)
        }
    }
}

/// `{"error": message}`.
fn json_error(message: &str) -> Value {
    json!({ "error": message })
}

/// What `pte ...` prints on stdout (with its final newline), or the error.
fn execute(args: &[String]) -> Result<String, String> {
    let Some((verb, rest)) = args.split_first() else {
        return Err(format!("a subcommand is needed\n{}", usage(None)));
    };
    let verb = match verb.as_str() {
        "help" | "--help" | "-h" => return Ok(usage(None)),
        "decode" => Verb::Decode,
        "encode" => Verb::Encode,
        other => {
            return Err(format!(
                "unknown pte command `{other}` (decode or encode; --help lists every option)"
            ));
        }
    };
    // Help wins wherever it stands, even after an option that wanted a value.
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(usage(Some(verb)));
    }
    let args = Args::parse(rest, &VALUED_OPTIONS)?;
    let setup = Setup::from_args(&args)?;
    match args.option("arch") {
        Some("x86_64") => verb.run::<X86_64>(&args, &setup),
        Some("aarch64") => verb.run::<Aarch64>(&args, &setup),
        Some(other) => Err(format!("unknown --arch `{other}` (x86_64 or aarch64)")),
        None => Err("--arch x86_64|aarch64 is required".into()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Decode,
    Encode,
}

impl Verb {
    fn run<F: Format>(self, args: &Args, setup: &Setup) -> Result<String, String> {
        let level = level_of::<F>(args)?;
        match self {
            Verb::Decode => decode::<F>(args, level, setup),
            Verb::Encode => encode::<F>(args, level, setup),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Help

/// The usage text of `pte` (`None`), `pte decode` or `pte encode`.
fn usage(verb: Option<Verb>) -> String {
    const DECODE_USAGE: &str = "\
cargo xtask pte decode --arch x86_64|aarch64 (--level N | --arm-level N)
                              [PROFILE OPTIONS] [--lenient] [--json] RAW
";
    const ENCODE_USAGE: &str = "\
cargo xtask pte encode --arch x86_64|aarch64 (--level N | --arm-level N)
                              [PROFILE OPTIONS] --kind KIND [KIND OPTIONS] [--json]
";
    const COMMON: &str = "
options:
  --arch ARCH         x86_64 or aarch64
  --level N           the level the entry sits at, decimal: 1 (PTE, 4 KiB), 2 (PMD,
                      2 MiB), 3 (PUD, 1 GiB), 4, 5 (x86_64 with LA57)
  --arm-level N       aarch64 only, instead of --level: Arm's numbering, 0..=3 (Arm
                      level 3 is level 1, Arm level 0 is level 4)
  --help, -h          this text
";
    const DECODE: &str = "
decode: prints what one raw page-table entry means
  RAW                 the raw entry, hex with or without 0x (as dumps print it: 40000f43
                      is 0x40000f43); `_` separators are allowed
  --lenient           read any value (as a hypervisor reading a guest must): bits a
                      strict decode refuses are taken out and reported as
                      unexpected=0x.., with the strict decode's error
  --json              one JSON object of named fields; an error is {\"error\": \"...\"}
";
    const ENCODE: &str = "
encode: prints the raw value of one page-table entry
  --kind KIND         what to encode (the kinds are below)
  --pfn HEX, --index HEX, --offset HEX
                      frame number, device index, swap offset or marker payload: hex
                      with or without 0x (1000 is 0x1000)
  --swap-type N       decimal, below the profile's first special type (default 0)
  PERMISSIONS         leaf and prot-none: --writable --user --executable --global
                      --accessed --dirty (each off unless given)
  --memory TYPE       leaf and prot-none: wb (write-back, the default), wc
                      (write-combining), uc (uncached), uc-minus (device), wt
                      (write-through), wp (write-protect), tagged; the profile's PAT
                      (x86_64) or MAIR (aarch64) table must have it
  --young, --dirty    migration kinds: the mapping was young / dirty (--dirty on a
                      leaf is its dirty bit)
  --exclusive --uffd-wp --soft-dirty
                      software kinds: the side bits (--soft-dirty: x86_64 only)
  --json              the entry decoded back, as `decode --json` prints it; an error
                      is {\"error\": \"...\"}
";
    let mut text = String::new();
    match verb {
        None => {
            text.push_str("usage: ");
            text.push_str(DECODE_USAGE);
            text.push_str("       ");
            text.push_str(ENCODE_USAGE);
            text.push_str(COMMON);
            text.push_str(DECODE);
            text.push_str(ENCODE);
        }
        Some(Verb::Decode) => {
            text.push_str("usage: ");
            text.push_str(DECODE_USAGE);
            text.push_str(COMMON);
            text.push_str(DECODE);
        }
        Some(Verb::Encode) => {
            text.push_str("usage: ");
            text.push_str(ENCODE_USAGE);
            text.push_str(COMMON);
            text.push_str(ENCODE);
        }
    }
    text.push_str(&kinds_help(verb));
    text.push_str(&profile_help());
    text
}

fn kinds_help(verb: Option<Verb>) -> String {
    let mut text = match verb {
        Some(Verb::Decode) => String::from("\nkinds decode prints:\n"),
        _ => String::from("\nkinds (--kind KIND, then what it takes):\n"),
    };
    let width = KINDS.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (kind, takes) in KINDS {
        if verb == Some(Verb::Decode) || takes.is_empty() {
            text.push_str(&format!("  {kind}\n"));
        } else {
            text.push_str(&format!("  {kind:width$}  {takes}\n"));
        }
    }
    text
}

fn profile_help() -> String {
    let mut text = String::from(
        "
profile options (the kernel-dependent layout of software entries and memory types):
  --profile NAME      a preset (default devpriv):
",
    );
    let width = Profile::PRESETS
        .iter()
        .map(|p| p.name().len())
        .max()
        .unwrap_or(0);
    for p in Profile::PRESETS {
        text.push_str(&format!(
            "    {:width$}  {}\n",
            p.name(),
            describe_profile(&p)
        ));
    }
    text.push_str(
        "  --phys-bits N       the physical-address width (Linux MAX_PHYSMEM_BITS), decimal,
                      32..=52; migration entries keep young/dirty just above the frame
  --numbering devpriv|mainline|series
                      the type numbering: devpriv's own, mainline Linux, or the
                      device-private address-space series
  --without LIST      with mainline or series numbering: the kernel options turned off,
                      comma-separated: device-private, migration, memory-failure,
                      pte-marker (their types go to swap devices)
",
    );
    text
}

/// `46-bit PA, mainline numbering (swap types 0..=23), Linux's MAIR`.
fn describe_profile(p: &Profile) -> String {
    let numbering = match describe_numbering(p.types()) {
        Some((family, without)) if without.is_empty() => format!("{family} numbering"),
        Some((family, without)) => format!("{family} numbering without {}", without.join(",")),
        None => "custom numbering".into(),
    };
    let mair = if *p.mair() == AttributeTable::from_mair(LINUX_MAIR_VALUE) {
        "Linux's MAIR"
    } else if *p.mair() == *Profile::DEVPRIV.mair() {
        "devpriv's MAIR"
    } else {
        "a custom MAIR"
    };
    format!(
        "{}-bit PA, {numbering} (swap types 0..={}), {mair}",
        p.physical_address_bits(),
        p.types().swap_types().saturating_sub(1)
    )
}

// ---------------------------------------------------------------------------------------
// Profiles

/// The profile the options chose, with how to name its type numbering.
#[derive(Clone, Debug)]
struct Setup {
    profile: Profile,
    numbering: &'static str,
    without: Vec<&'static str>,
}

impl Setup {
    /// `--profile`, then `--phys-bits`, `--numbering` and `--without` on top of it.
    fn from_args(args: &Args) -> Result<Self, String> {
        let name = args.option("profile").unwrap_or("devpriv");
        let mut profile = Profile::preset(name).ok_or_else(|| {
            let names: Vec<&str> = Profile::PRESETS.iter().map(|p| p.name()).collect();
            format!(
                "unknown --profile `{name}` (the presets are {})",
                names.join(", ")
            )
        })?;
        if let Some(text) = args.option("phys-bits") {
            let bits = text
                .parse::<u32>()
                .map_err(|_| format!("--phys-bits takes a decimal width, got `{text}`"))?;
            profile = profile
                .with_physical_address_bits(bits)
                .map_err(|e| format!("--phys-bits {bits}: {e}"))?;
        }
        let (preset_family, preset_without) =
            describe_numbering(profile.types()).unwrap_or(("custom", Vec::new()));
        let family = match args.option("numbering") {
            None => preset_family,
            Some("devpriv") => "devpriv",
            Some("mainline") => "mainline",
            Some("series") => "series",
            Some(other) => {
                return Err(format!(
                    "unknown --numbering `{other}` (devpriv, mainline or series)"
                ));
            }
        };
        // Options the preset already has off stay off unless --numbering starts afresh.
        let mut without = if args.option("numbering").is_some() {
            Vec::new()
        } else {
            preset_without
        };
        if let Some(list) = args.option("without") {
            if !matches!(family, "mainline" | "series") {
                return Err(format!(
                    "--without applies to mainline or series numbering; profile {} has {family} \
                     numbering (add --numbering mainline or --numbering series)",
                    profile.name()
                ));
            }
            for item in list.split(',') {
                let option = KERNEL_OPTIONS.iter().find(|o| **o == item).ok_or_else(|| {
                    format!(
                        "unknown kernel option `{item}` in --without (the options are {})",
                        KERNEL_OPTIONS.join(", ")
                    )
                })?;
                if !without.contains(option) {
                    without.push(option);
                }
            }
            without.sort_by_key(|o| KERNEL_OPTIONS.iter().position(|k| k == o));
        }
        let options = MainlineOptions {
            device_private: !without.contains(&"device-private"),
            migration: !without.contains(&"migration"),
            memory_failure: !without.contains(&"memory-failure"),
            pte_marker: !without.contains(&"pte-marker"),
        };
        match (
            args.option("numbering").is_some() || args.option("without").is_some(),
            family,
        ) {
            (false, _) => {}
            (true, "devpriv") => profile = profile.with_types(TypeNumbering::DEVPRIV),
            (true, "mainline") => profile = profile.with_types(TypeNumbering::mainline(options)),
            (true, _) => {
                profile = profile.with_types(TypeNumbering::device_private_series(options))
            }
        }
        Ok(Self {
            profile,
            numbering: family,
            without,
        })
    }

    #[cfg(test)]
    fn devpriv() -> Self {
        Self {
            profile: Profile::DEVPRIV,
            numbering: "devpriv",
            without: Vec::new(),
        }
    }

    /// `profile linux-x86_64-4level (mainline numbering without migration)`.
    fn describe(&self) -> String {
        let mut text = format!(
            "profile {} ({} numbering",
            self.profile.name(),
            self.numbering
        );
        if !self.without.is_empty() {
            text.push_str(&format!(" without {}", self.without.join(",")));
        }
        text.push(')');
        text
    }
}

/// Which family a numbering belongs to (`devpriv`, `mainline`, `series`) and which kernel
/// options it has off, or `None` for a numbering none of them builds.
fn describe_numbering(types: &TypeNumbering) -> Option<(&'static str, Vec<&'static str>)> {
    if *types == TypeNumbering::DEVPRIV {
        return Some(("devpriv", Vec::new()));
    }
    type Build = fn(MainlineOptions) -> TypeNumbering;
    let builders: [(&'static str, Build); 2] = [
        ("mainline", TypeNumbering::mainline),
        ("series", TypeNumbering::device_private_series),
    ];
    for (family, build) in builders {
        for off in 0..16u8 {
            let options = MainlineOptions {
                device_private: off & 1 == 0,
                migration: off & 2 == 0,
                memory_failure: off & 4 == 0,
                pte_marker: off & 8 == 0,
            };
            if build(options) == *types {
                let without = (0..4)
                    .filter(|i| off & (1 << i) != 0)
                    .map(|i| KERNEL_OPTIONS[i])
                    .collect();
                return Some((family, without));
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Numbers and levels

/// Parses a hex number as dumps print it: with or without `0x`, `_` separators allowed.
fn parse_hex(text: &str) -> Result<u64, String> {
    let cleaned: String = text.chars().filter(|c| *c != '_').collect();
    let digits = cleaned
        .strip_prefix("0x")
        .or_else(|| cleaned.strip_prefix("0X"))
        .unwrap_or(&cleaned);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "`{text}` is not a hex number (hex digits, with or without 0x)"
        ));
    }
    u64::from_str_radix(digits, 16).map_err(|_| format!("`{text}` is wider than 64 bits"))
}

/// The level from `--level N` or, on aarch64, `--arm-level N`.
fn level_of<F: Format>(args: &Args) -> Result<Level, String> {
    let top = F::MAX_ROOT_LEVEL.number();
    match (args.option("level"), args.option("arm-level")) {
        (Some(_), Some(_)) => Err("give --level or --arm-level, not both".into()),
        (None, None) if F::ARCH == devpriv_pte::Arch::Aarch64 => {
            Err("--level N (1..=4) or --arm-level N (Arm's numbering, 0..=3) is required".into())
        }
        (None, None) => Err(format!("--level N (1..={top}) is required")),
        (Some(text), None) => text
            .parse::<u8>()
            .ok()
            .filter(|n| (1..=top).contains(n))
            .and_then(Level::from_number)
            .ok_or_else(|| format!("--level must be 1..={top} for {}, got `{text}`", F::NAME)),
        (None, Some(_)) if F::ARCH != devpriv_pte::Arch::Aarch64 => Err(format!(
            "--arm-level is Arm's level numbering, for --arch aarch64 only; {} takes --level \
             1..={top}",
            F::NAME
        )),
        (None, Some(text)) => text
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= 3)
            .and_then(|n| Level::from_number(4 - n))
            .ok_or_else(|| format!("--arm-level must be 0..=3, got `{text}`")),
    }
}

/// `level 1`, or on aarch64 `level 1 (Arm level 3)`.
fn level_text<F: Format>(level: Level) -> String {
    match arm_level::<F>(level) {
        Some(arm) => format!("level {} (Arm level {arm})", level.number()),
        None => format!("level {}", level.number()),
    }
}

/// Arm's number for `level` on aarch64.
fn arm_level<F: Format>(level: Level) -> Option<u8> {
    (F::ARCH == devpriv_pte::Arch::Aarch64).then(|| 4u8.saturating_sub(level.number()))
}

// ---------------------------------------------------------------------------------------
// Architecture-only attributes as JSON

/// What the tool needs of a format beyond [`PteFormat`]: its name, its attributes as
/// named JSON fields, its memory-attribute table.
trait Format: PteFormat {
    const NAME: &'static str;
    /// The architecture-only fields of a leaf (the portable ones are printed beside).
    fn leaf_attributes(attrs: &Self::LeafAttributes) -> Map<String, Value>;
    /// Every field of a table entry's attributes.
    fn table_attributes(attrs: &Self::TableAttributes) -> Map<String, Value>;
    /// The table memory types are read through, and its register's name.
    fn memory_table(profile: &Profile) -> (&'static str, &AttributeTable);
}

impl Format for X86_64 {
    const NAME: &'static str = "x86_64";

    fn leaf_attributes(a: &x86_64::PageAttributes) -> Map<String, Value> {
        fields([
            ("pwt", json!(a.write_through())),
            ("pcd", json!(a.cache_disable())),
            ("pat", json!(a.pat())),
            ("pat_index", json!(a.pat_index())),
            ("protection_key", json!(a.protection_key())),
            ("no_execute", json!(a.no_execute())),
            ("software_low", json!(a.available_low())),
            ("software_high", json!(a.available_high())),
        ])
    }

    fn table_attributes(a: &x86_64::TableAttributes) -> Map<String, Value> {
        fields([
            ("writable", json!(a.writable())),
            ("user", json!(a.user())),
            ("pwt", json!(a.write_through())),
            ("pcd", json!(a.cache_disable())),
            ("accessed", json!(a.accessed())),
            ("dirty_ignored", json!(a.dirty_ignored())),
            ("global_ignored", json!(a.global_ignored())),
            ("no_execute", json!(a.no_execute())),
            ("software_low", json!(a.available_low())),
            ("software_high", json!(a.available_high())),
        ])
    }

    fn memory_table(profile: &Profile) -> (&'static str, &AttributeTable) {
        ("PAT", profile.pat())
    }
}

impl Format for Aarch64 {
    const NAME: &'static str = "aarch64";

    fn leaf_attributes(a: &aarch64::PageAttributes) -> Map<String, Value> {
        let shareability = match a.shareability() {
            aarch64::Shareability::NonShareable => "non-shareable",
            aarch64::Shareability::Reserved => "reserved",
            aarch64::Shareability::OuterShareable => "outer-shareable",
            aarch64::Shareability::InnerShareable => "inner-shareable",
        };
        fields([
            ("attr_index", json!(a.attr_indx())),
            ("shareability", json!(shareability)),
            ("ns", json!(a.ns())),
            ("dbm", json!(a.dbm())),
            ("guarded", json!(a.guarded())),
            ("contiguous", json!(a.contiguous())),
            ("pxn", json!(a.pxn())),
            ("uxn", json!(a.uxn())),
            ("software", json!(a.software())),
        ])
    }

    fn table_attributes(a: &aarch64::TableAttributes) -> Map<String, Value> {
        fields([
            ("accessed", json!(a.accessed())),
            ("pxn_table", json!(a.pxn_table())),
            ("uxn_table", json!(a.uxn_table())),
            ("no_el0_table", json!(a.no_el0_table())),
            ("read_only_table", json!(a.read_only_table())),
            ("ns_table", json!(a.ns_table())),
            ("software", json!(a.software())),
        ])
    }

    fn memory_table(profile: &Profile) -> (&'static str, &AttributeTable) {
        ("MAIR", profile.mair())
    }
}

fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

fn memory_name(memory: MemoryType) -> &'static str {
    MEMORY_TYPES
        .iter()
        .find(|(_, _, m)| *m == memory)
        .map_or("unknown", |(_, long, _)| long)
}

fn size_name(size: PageSize) -> &'static str {
    match size {
        PageSize::Size4KiB => "4KiB",
        PageSize::Size2MiB => "2MiB",
        PageSize::Size1GiB => "1GiB",
    }
}

// ---------------------------------------------------------------------------------------
// decode

fn decode<F: Format>(args: &Args, level: Level, setup: &Setup) -> Result<String, String> {
    args.reject_unknown_switches(&["json", "lenient"])?;
    let [raw_text] = args.positional.as_slice() else {
        return Err("pte decode takes exactly one raw value".into());
    };
    let raw = parse_hex(raw_text)?;
    let fields = decode_fields::<F>(raw, level, setup, args.switch("lenient"))?;
    Ok(if args.switch("json") {
        format!("{}\n", Value::Object(fields))
    } else {
        format!("{}\n", one_line(&fields))
    })
}

/// The decoded entry as ordered fields: `kind`, the numbers, the flags, the
/// architecture's attributes; then `arch`, `level` (and `arm_level`), `raw`, the profile;
/// with `lenient`, `unexpected` and `strict_error`.
fn decode_fields<F: Format>(
    raw: u64,
    level: Level,
    setup: &Setup,
    lenient: bool,
) -> Result<Map<String, Value>, String> {
    let profile = &setup.profile;
    let (entry, lenient_report) = if lenient {
        let seen = F::decode_lenient(raw, level, profile);
        (seen.entry, Some((seen.unexpected_bits, seen.strict_error)))
    } else {
        let entry = F::decode_in(raw, level, profile).map_err(|e| {
            format!(
                "{raw:#018x} is not a valid entry at {} under {}: {e} (--lenient reads it \
                 anyway)",
                level_text::<F>(level),
                setup.describe()
            )
        })?;
        (entry, None)
    };
    let mut fields = describe(&entry, profile);
    fields.insert("arch".into(), json!(F::NAME));
    fields.insert("level".into(), json!(level.number()));
    if let Some(arm) = arm_level::<F>(level) {
        fields.insert("arm_level".into(), json!(arm));
    }
    fields.insert("raw".into(), json!(format!("{raw:#x}")));
    fields.insert("profile".into(), json!(profile.name()));
    fields.insert("phys_bits".into(), json!(profile.physical_address_bits()));
    fields.insert("numbering".into(), json!(setup.numbering));
    fields.insert("without".into(), json!(setup.without));
    if let Some((unexpected, strict_error)) = lenient_report {
        fields.insert("unexpected".into(), json!(format!("{unexpected:#x}")));
        fields.insert(
            "strict_error".into(),
            strict_error.map_or(Value::Null, |e| json!(e.to_string())),
        );
    }
    Ok(fields)
}

/// The entry as ordered (name, value) fields: `kind` first, then the number, then flags,
/// then the architecture's attributes as an object.
fn describe<F: Format>(entry: &Entry<F>, profile: &Profile) -> Map<String, Value> {
    let mut f = Map::new();
    f.insert("kind".into(), json!(entry.kind_name()));
    match entry {
        Entry::Absent => {}
        Entry::Table { next, attrs } => {
            f.insert("pfn".into(), json!(next.number()));
            f.insert(
                "attributes".into(),
                Value::Object(F::table_attributes(attrs)),
            );
        }
        Entry::Leaf { pfn, size, attrs } | Entry::ProtNone { pfn, size, attrs } => {
            let p = attrs.property_in(profile);
            f.insert("pfn".into(), json!(pfn.number()));
            f.insert("size".into(), json!(size_name(*size)));
            f.insert("writable".into(), json!(p.writable));
            f.insert("user".into(), json!(p.user));
            f.insert("executable".into(), json!(p.executable));
            f.insert("global".into(), json!(p.global));
            f.insert("accessed".into(), json!(p.accessed));
            f.insert("dirty".into(), json!(p.dirty));
            f.insert("memory".into(), json!(memory_name(p.memory)));
            f.insert(
                "attributes".into(),
                Value::Object(F::leaf_attributes(attrs)),
            );
        }
        Entry::Software(sw) => {
            match sw.kind {
                SoftwareKind::Swap { swap_type, offset } => {
                    f.insert("swap_type".into(), json!(swap_type.number()));
                    f.insert("offset".into(), json!(offset));
                }
                SoftwareKind::Migration {
                    pfn, young, dirty, ..
                } => {
                    f.insert("pfn".into(), json!(pfn.number()));
                    f.insert("young".into(), json!(young));
                    f.insert("dirty".into(), json!(dirty));
                }
                SoftwareKind::DeviceMigration {
                    index,
                    young,
                    dirty,
                    ..
                } => {
                    f.insert("index".into(), json!(index.number()));
                    f.insert("young".into(), json!(young));
                    f.insert("dirty".into(), json!(dirty));
                }
                SoftwareKind::DevicePrivate { index, .. } => {
                    f.insert("index".into(), json!(index.number()));
                }
                SoftwareKind::DeviceExclusive { pfn } | SoftwareKind::HwPoison { pfn } => {
                    f.insert("pfn".into(), json!(pfn.number()));
                }
                SoftwareKind::Marker(m) => {
                    f.insert("marker_uffd_wp".into(), json!(m.uffd_wp));
                    f.insert("poisoned".into(), json!(m.poisoned));
                    f.insert("guard".into(), json!(m.guard));
                }
            }
            // A decoded kind always has a number in the profile it was decoded with.
            if let Ok(number) = sw.kind.type_number_in(profile.types()) {
                f.insert("type".into(), json!(number));
            }
            f.insert("exclusive".into(), json!(sw.side.exclusive));
            f.insert("uffd_wp".into(), json!(sw.side.uffd_wp));
            f.insert("soft_dirty".into(), json!(sw.side.soft_dirty));
        }
    }
    f
}

/// Fields the one-line form leaves out (the command line said them) or prints apart.
const NOT_ON_THE_LINE: [&str; 10] = [
    "arch",
    "level",
    "arm_level",
    "raw",
    "profile",
    "phys_bits",
    "numbering",
    "without",
    "unexpected",
    "strict_error",
];

/// `kind pfn=0x.. size=4KiB writable ... memory=write-back pat-index=3`: numbers in hex
/// (type numbers and attribute fields in decimal), true flags by name, false flags and
/// zero attribute fields left out; on aarch64 `at level N (Arm level M)`; with
/// `--lenient`, `unexpected=0x..` and the strict decode's error.
fn one_line(fields: &Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for (name, value) in fields {
        let label = name.replace('_', "-");
        match value {
            _ if NOT_ON_THE_LINE.contains(&name.as_str()) => {}
            Value::Bool(true) => parts.push(label),
            Value::Bool(false) => {}
            Value::Number(n) if name == "type" || name == "swap_type" => {
                parts.push(format!("{label}={n}"))
            }
            Value::Number(n) => parts.push(format!("{label}={:#x}", n.as_u64().unwrap_or(0))),
            Value::String(s) if name == "kind" => parts.push(s.clone()),
            Value::String(s) => parts.push(format!("{label}={s}")),
            Value::Object(attributes) => {
                for (name, value) in attributes {
                    let label = name.replace('_', "-");
                    match value {
                        Value::Bool(true) => parts.push(label),
                        Value::Bool(false) => {}
                        Value::Number(n) if n.as_u64() == Some(0) => {}
                        Value::String(s) => parts.push(format!("{label}={s}")),
                        other => parts.push(format!("{label}={other}")),
                    }
                }
            }
            other => parts.push(format!("{label}={other}")),
        }
    }
    let mut line = parts.join(" ");
    if let Some(arm) = fields.get("arm_level") {
        line.push_str(&format!(" at level {} (Arm level {arm})", fields["level"]));
    }
    if let Some(Value::String(unexpected)) = fields.get("unexpected") {
        line.push_str(&format!(" unexpected={unexpected}"));
    }
    if let Some(Value::String(error)) = fields.get("strict_error") {
        line.push_str(&format!(" (strict decode: {error})"));
    }
    line
}

// ---------------------------------------------------------------------------------------
// encode

fn encode<F: Format>(args: &Args, level: Level, setup: &Setup) -> Result<String, String> {
    let raw = encode_raw::<F>(args, level, setup)?;
    if args.switch("json") {
        let fields = decode_fields::<F>(raw, level, setup, false)?;
        Ok(format!("{}\n", Value::Object(fields)))
    } else {
        Ok(format!("{raw:#x}\n"))
    }
}

/// The raw value `pte encode` prints for `args`.
fn encode_raw<F: Format>(args: &Args, level: Level, setup: &Setup) -> Result<u64, String> {
    let mut known = vec![
        "json",
        "young",
        "dirty",
        "exclusive",
        "uffd-wp",
        "soft-dirty",
    ];
    known.extend(PERMISSION_SWITCHES);
    args.reject_unknown_switches(&known)?;
    args.reject_positional()?;
    let profile = &setup.profile;
    let kind = args.option("kind").ok_or("--kind KIND is required")?;
    if !KINDS.iter().any(|(k, _)| *k == kind) {
        let names: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
        return Err(format!(
            "unknown --kind `{kind}` (the kinds are {})",
            names.join(", ")
        ));
    }
    let number = |name: &str| -> Result<u64, String> {
        let text = args
            .option(name)
            .ok_or_else(|| format!("--kind {kind} needs --{name} HEX"))?;
        parse_hex(text).map_err(|e| format!("--{name}: {e}"))
    };
    let pfn = || number("pfn").map(Pfn::new);
    let index = || number("index").map(DeviceIndex::new);
    let (young, dirty) = (args.switch("young"), args.switch("dirty"));
    let is_leaf = matches!(kind, "leaf" | "prot-none");
    let is_migration = kind.contains("migration");
    let is_software = !matches!(kind, "absent" | "table" | "leaf" | "prot-none");
    if !is_leaf {
        if let Some(switch) = PERMISSION_SWITCHES.iter().find(|s| args.switch(s)) {
            return Err(format!(
                "--{switch} applies to --kind leaf and prot-none only"
            ));
        }
        if args.option("memory").is_some() {
            return Err("--memory applies to --kind leaf and prot-none only".into());
        }
    }
    if young && !is_migration {
        return Err("--young applies to migration kinds only".into());
    }
    if dirty && !is_migration && !is_leaf {
        return Err("--dirty applies to migration kinds, leaf and prot-none only".into());
    }
    let side_switch = ["exclusive", "uffd-wp", "soft-dirty"]
        .iter()
        .find(|s| args.switch(s));
    if let (false, Some(switch)) = (is_software, side_switch) {
        return Err(format!("--{switch} applies to software kinds only"));
    }
    for name in ["pfn", "index", "offset", "swap-type"] {
        let takes = KINDS
            .iter()
            .find(|(k, _)| *k == kind)
            .is_some_and(|(_, takes)| takes.contains(&format!("--{name} ")));
        if args.option(name).is_some() && !takes {
            return Err(format!("--kind {kind} does not take --{name}"));
        }
    }
    let migration = |access| -> Result<SoftwareKind, String> {
        Ok(SoftwareKind::Migration {
            access,
            pfn: pfn()?,
            young,
            dirty,
        })
    };
    let device_migration = |access| -> Result<SoftwareKind, String> {
        Ok(SoftwareKind::DeviceMigration {
            access,
            index: index()?,
            young,
            dirty,
        })
    };
    let software = match kind {
        "absent" => None,
        "table" => {
            return raw_of(
                &Entry::<F>::Table {
                    next: pfn()?,
                    attrs: Default::default(),
                },
                level,
                setup,
            );
        }
        "leaf" | "prot-none" => {
            let size = level
                .leaf_size()
                .ok_or_else(|| format!("there is no leaf at {}", level_text::<F>(level)))?;
            let attrs = leaf_attributes::<F>(args, setup, kind == "prot-none")?;
            let pfn = pfn()?;
            let entry = if kind == "leaf" {
                Entry::<F>::Leaf { pfn, size, attrs }
            } else {
                Entry::<F>::ProtNone { pfn, size, attrs }
            };
            return raw_of(&entry, level, setup);
        }
        "swap" => {
            let text = args.option("swap-type").unwrap_or("0");
            let t = text
                .parse::<u8>()
                .ok()
                .and_then(SwapType::new)
                .ok_or_else(|| {
                    format!("--swap-type takes a decimal type number 0..=31, got `{text}`")
                })?;
            let types = profile.types();
            if t.number() >= types.swap_types() {
                return Err(format!(
                    "swap type {} is not a swap device under {}: swap devices are 0..={}, \
                     type {} is {}",
                    t.number(),
                    setup.describe(),
                    types.swap_types().saturating_sub(1),
                    t.number(),
                    types.meaning(t.number()).name()
                ));
            }
            Some(SoftwareKind::Swap {
                swap_type: t,
                offset: number("offset")?,
            })
        }
        "migration-read" => Some(migration(MigrationAccess::Read)?),
        "migration-read-exclusive" => Some(migration(MigrationAccess::ReadExclusive)?),
        "migration-write" => Some(migration(MigrationAccess::Write)?),
        "device-private-migration-read" => Some(device_migration(MigrationAccess::Read)?),
        "device-private-migration-read-exclusive" => {
            Some(device_migration(MigrationAccess::ReadExclusive)?)
        }
        "device-private-migration-write" => Some(device_migration(MigrationAccess::Write)?),
        "device-private-read" => Some(SoftwareKind::DevicePrivate {
            access: DeviceAccess::Read,
            index: index()?,
        }),
        "device-private-write" => Some(SoftwareKind::DevicePrivate {
            access: DeviceAccess::Write,
            index: index()?,
        }),
        "device-exclusive" => Some(SoftwareKind::DeviceExclusive { pfn: pfn()? }),
        "hw-poison" => Some(SoftwareKind::HwPoison { pfn: pfn()? }),
        "marker" => {
            let bits = number("offset")?;
            let marker = Marker::from_bits(bits).ok_or_else(|| {
                format!(
                    "marker payload bits are 0 (uffd-wp), 1 (poisoned), 2 (guard); got {bits:#x}"
                )
            })?;
            Some(SoftwareKind::Marker(marker))
        }
        other => return Err(format!("unknown --kind `{other}`")),
    };
    if let Some(kind) = software.filter(|k| k.type_number_in(profile.types()).is_err()) {
        return Err(format!(
            "--kind {} has no type number under {}",
            kind.name(),
            setup.describe()
        ));
    }
    let entry = match software {
        None => Entry::<F>::Absent,
        Some(kind) => Entry::Software(SoftwareEntry {
            kind,
            side: SideBits {
                exclusive: args.switch("exclusive"),
                uffd_wp: args.switch("uffd-wp"),
                soft_dirty: args.switch("soft-dirty"),
            },
        }),
    };
    raw_of(&entry, level, setup)
}

/// The attributes `--writable ... --memory TYPE` ask for, through the profile's table.
fn leaf_attributes<F: Format>(
    args: &Args,
    setup: &Setup,
    prot_none: bool,
) -> Result<F::LeafAttributes, String> {
    let memory = match args.option("memory") {
        None => MemoryType::WriteBack,
        Some(name) => MEMORY_TYPES
            .iter()
            .find(|(short, long, _)| *short == name || *long == name)
            .map(|(_, _, m)| *m)
            .ok_or_else(|| {
                let names: Vec<&str> = MEMORY_TYPES.iter().map(|(s, _, _)| *s).collect();
                format!(
                    "unknown --memory `{name}` (the types are {})",
                    names.join(", ")
                )
            })?,
    };
    if prot_none && args.switch("global") {
        return Err(
            "--kind prot-none cannot be --global: the bit that would say global marks the \
             entry PROT_NONE"
                .into(),
        );
    }
    let property = PageProperty {
        writable: args.switch("writable"),
        user: args.switch("user"),
        executable: args.switch("executable"),
        global: args.switch("global"),
        accessed: args.switch("accessed"),
        dirty: args.switch("dirty"),
        memory,
    };
    let profile = &setup.profile;
    let attrs = F::LeafAttributes::from_property_in(property, profile).ok_or_else(|| {
        let (register, table) = F::memory_table(profile);
        let mut has: Vec<String> = Vec::new();
        for index in 0..8 {
            let memory = table.memory_type(index);
            if let Some((short, long, _)) = MEMORY_TYPES.iter().find(|(_, _, m)| *m == memory) {
                let name = if short == long {
                    long.to_string()
                } else {
                    format!("{short} ({long})")
                };
                if !has.contains(&name) {
                    has.push(name);
                }
            }
        }
        format!(
            "memory type {} has no index in the {register} table of profile {} (it has {})",
            args.option("memory").unwrap_or("wb"),
            profile.name(),
            has.join(", ")
        )
    })?;
    if attrs.property_in(profile) != property {
        return Err(format!(
            "{} cannot express these permissions together (a dirty aarch64 page must be \
             --writable)",
            F::NAME
        ));
    }
    Ok(attrs)
}

fn raw_of<F: Format>(entry: &Entry<F>, level: Level, setup: &Setup) -> Result<u64, String> {
    F::encode_in(entry, level, &setup.profile).map_err(|e| {
        format!(
            "cannot encode {} at {} under {}: {e}",
            entry.kind_name(),
            level_text::<F>(level),
            setup.describe()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    fn args(text: &str) -> Args {
        Args::parse(&words(text), &VALUED_OPTIONS).unwrap()
    }

    /// The JSON object `pte ...` prints for `text`.
    fn json_of(text: &str) -> Map<String, Value> {
        let out = execute(&words(text)).unwrap();
        match serde_json::from_str(&out).unwrap() {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn devpriv() -> Setup {
        Setup::devpriv()
    }

    // --- kept from before (hex input made `--index 1` etc. read the same) ---

    #[test]
    fn unknown_options_stray_arguments_and_non_utf8_are_errors() {
        assert_eq!(
            Args::parse(&words("--arch=x86_64 --colour=red"), &VALUED_OPTIONS).err(),
            Some("unknown option --colour".into())
        );
        let stray = args("--kind device-private-write --index 1 0x5");
        assert_eq!(
            encode_raw::<X86_64>(&stray, Level::L1, &devpriv()),
            Err("unexpected argument `0x5`".into())
        );
        assert_eq!(
            execute(&words("decode --arch x86_64 --level 1 0x1 0x2")),
            Err("pte decode takes exactly one raw value".into())
        );
        use std::os::unix::ffi::OsStringExt;
        let bad = std::ffi::OsString::from_vec(vec![b'-', b'-', 0xff]);
        let err = crate::cli::utf8_args([std::ffi::OsString::from("pte"), bad]).unwrap_err();
        assert!(err.contains("not UTF-8"), "{err}");
    }

    #[test]
    fn device_private_write_matches_linux_formula() {
        // x86_64: type 28 in bits 59..63, offset 0x1234 inverted into bits 9..58:
        // (!0x1234 << 14 >> 5) | 28 << 59 = 0xe7ff_ffff_ffdb_9600.
        let raw = encode_raw::<X86_64>(
            &args("--kind device-private-write --index 0x1234"),
            Level::L1,
            &devpriv(),
        );
        assert_eq!(raw, Ok(0xe7ff_ffff_ffdb_9600));
        let fields =
            decode_fields::<X86_64>(0xe7ff_ffff_ffdb_9600, Level::L1, &devpriv(), false).unwrap();
        assert_eq!(fields["kind"], "device-private-write");
        assert_eq!(fields["index"], 0x1234);
        assert_eq!(fields["exclusive"], false);
        assert_eq!(fields.keys().next().map(String::as_str), Some("kind"));
        assert_eq!(
            one_line(&fields),
            "device-private-write index=0x1234 type=28"
        );
    }

    #[test]
    fn every_software_kind_round_trips_through_the_tool_on_both_arches() {
        let kinds = [
            ("swap", "--offset 0x3ffffffffff --swap-type 20"),
            ("migration-read", "--pfn 0xfffffffff --young"),
            ("migration-read-exclusive", "--pfn 7 --dirty --exclusive"),
            ("migration-write", "--pfn 7 --young --dirty --uffd-wp"),
            ("device-private-migration-read", "--index 9"),
            (
                "device-private-migration-read-exclusive",
                "--index 9 --young",
            ),
            (
                "device-private-migration-write",
                "--index 0xffffffffff --dirty",
            ),
            ("device-private-read", "--index 1"),
            ("device-private-write", "--index 2 --exclusive"),
            ("device-exclusive", "--pfn 3"),
            ("hw-poison", "--pfn 4"),
            ("marker", "--offset 5"),
        ];
        let setup = devpriv();
        for level in [Level::L1, Level::L2] {
            for (kind, rest) in kinds {
                let a = args(&format!("--kind {kind} {rest}"));
                let x86 = encode_raw::<X86_64>(&a, level, &setup).unwrap();
                assert_eq!(
                    decode_fields::<X86_64>(x86, level, &setup, false).unwrap()["kind"],
                    kind
                );
                let arm = encode_raw::<Aarch64>(&a, level, &setup).unwrap();
                let fields = decode_fields::<Aarch64>(arm, level, &setup, false).unwrap();
                assert_eq!(fields["kind"], kind);
                if let Some(young) = fields.get("young") {
                    assert_eq!(young, rest.contains("--young"), "{kind} {rest}");
                    assert_eq!(fields["dirty"], rest.contains("--dirty"), "{kind} {rest}");
                }
                assert_eq!(
                    fields["exclusive"],
                    rest.contains("--exclusive"),
                    "{kind} {rest}"
                );
            }
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let setup = devpriv();
        let x86 = |text: &str, level| encode_raw::<X86_64>(&args(text), level, &setup);
        assert!(
            x86(
                "--kind device-private-write --index 0x10000000000",
                Level::L1
            )
            .is_err()
        );
        assert!(
            encode_raw::<Aarch64>(
                &args("--kind swap --offset 1 --soft-dirty"),
                Level::L1,
                &setup
            )
            .is_err()
        );
        assert!(x86("--kind device-private-write --index 1", Level::L3).is_err());
        assert!(x86("--kind hw-poison --pfn 1 --young", Level::L1).is_err());
        assert!(x86("--kind nonsense --pfn 1", Level::L1).is_err());
        assert!(x86("--kind swap --offset xyz", Level::L1).is_err());
        assert!(x86("--kind swap --offset 1 --swap-type 0x3", Level::L1).is_err());
        assert!(x86("--kind swap --offset 1 --swap-type 99", Level::L1).is_err());
        assert!(decode_fields::<X86_64>(0x10, Level::L1, &setup, false).is_err());
        for text in [
            "decode --arch x86_64 --level 1 0x1_0000_0000_0000_0000",
            "decode --arch x86_64 --level 9 0x0",
            "decode --arch aarch64 --level 5 0x0",
            "decode --arch x86_64 --level 1",
            "decode --arch sparc --level 1 0",
            "decode --level 1 0",
            "frobnicate",
            "",
        ] {
            assert!(execute(&words(text)).is_err(), "{text}");
        }
    }

    // --- 1. profile options ---

    #[test]
    fn profile_options_choose_the_layout() {
        let setup = |text: &str| Setup::from_args(&args(text));
        let default = setup("").unwrap();
        assert_eq!(default.profile, Profile::DEVPRIV);
        for preset in Profile::PRESETS {
            let chosen = setup(&format!("--profile {}", preset.name())).unwrap();
            assert_eq!(chosen.profile, preset);
        }
        let err = setup("--profile linux").unwrap_err();
        assert!(err.contains("linux-arm64-48bit"), "{err}");

        let wide = setup("--profile linux-x86_64-4level --phys-bits 52").unwrap();
        assert_eq!(wide.profile.physical_address_bits(), 52);
        assert_eq!(wide.profile.types(), &TypeNumbering::MAINLINE);
        assert!(setup("--phys-bits 53").unwrap_err().contains("53"));
        assert!(setup("--phys-bits 0x30").is_err());

        let mainline = setup("--numbering mainline").unwrap();
        assert_eq!(mainline.profile.types(), &TypeNumbering::MAINLINE);
        assert_eq!(mainline.profile.physical_address_bits(), 52);
        let series = setup("--profile linux-x86_64-4level --numbering series").unwrap();
        assert_eq!(
            series.profile.types(),
            &TypeNumbering::DEVICE_PRIVATE_SERIES
        );
        assert_eq!(
            setup("--profile series-x86_64-4level --numbering devpriv")
                .unwrap()
                .profile
                .types(),
            &TypeNumbering::DEVPRIV
        );
        assert!(setup("--numbering linux").is_err());

        // --without: with mainline or series numbering, named or from the preset.
        let without =
            setup("--numbering mainline --without device-private,memory-failure").unwrap();
        let expected = TypeNumbering::mainline(MainlineOptions {
            device_private: false,
            memory_failure: false,
            ..MainlineOptions::ALL
        });
        assert_eq!(without.profile.types(), &expected);
        assert_eq!(without.without, ["device-private", "memory-failure"]);
        assert_eq!(
            setup("--profile linux-arm64-48bit --without migration,pte-marker")
                .unwrap()
                .profile
                .types(),
            &TypeNumbering::mainline(MainlineOptions {
                migration: false,
                pte_marker: false,
                ..MainlineOptions::ALL
            })
        );
        assert_eq!(
            setup("--numbering series --without pte-marker")
                .unwrap()
                .profile
                .types(),
            &TypeNumbering::device_private_series(MainlineOptions {
                pte_marker: false,
                ..MainlineOptions::ALL
            })
        );
        assert!(
            setup("--without migration")
                .unwrap_err()
                .contains("--numbering")
        );
        assert!(
            setup("--numbering devpriv --without migration")
                .unwrap_err()
                .contains("mainline or series")
        );
        assert!(
            setup("--numbering mainline --without swap")
                .unwrap_err()
                .contains("pte-marker")
        );
    }

    #[test]
    fn the_profile_decides_decode_and_encode() {
        // Mainline without device-private support: the three device types go to swap,
        // which takes 0..=26.
        let text = "--arch x86_64 --level 1 --numbering mainline --without device-private";
        let raw = execute(&words(&format!(
            "encode {text} --kind swap --swap-type 26 --offset 5"
        )))
        .unwrap();
        let fields = json_of(&format!("decode {text} --json {}", raw.trim()));
        assert_eq!(fields["kind"], "swap");
        assert_eq!(fields["swap_type"], 26);
        assert_eq!(fields["numbering"], "mainline");
        assert_eq!(fields["without"], json!(["device-private"]));
        // The same raw value under devpriv's numbering is a migration entry.
        let fields = json_of(&format!(
            "decode --arch x86_64 --level 1 --json {}",
            raw.trim()
        ));
        assert_eq!(fields["kind"], "migration-read-exclusive");
        // A kind the profile has no number for is refused, naming the profile.
        let err = execute(&words(&format!(
            "encode {text} --kind device-private-read --index 1"
        )))
        .unwrap_err();
        assert!(err.contains("no type number"), "{err}");
        assert!(err.contains("without device-private"), "{err}");
        // An x86_64 4-level young migration entry: young at offset bit 34 (not 40).
        let young = execute(&words(
            "encode --arch x86_64 --level 1 --profile linux-x86_64-4level --kind \
             migration-read --pfn 12345 --young --dirty",
        ))
        .unwrap();
        let fields = json_of(&format!(
            "decode --arch x86_64 --level 1 --profile linux-x86_64-4level --json {}",
            young.trim()
        ));
        assert_eq!(fields["pfn"], 0x12345);
        assert_eq!(fields["young"], true);
        assert_eq!(fields["dirty"], true);
        assert_eq!(fields["profile"], "linux-x86_64-4level");
        assert_eq!(fields["phys_bits"], 46);
        // The same bits read with the default profile are a different frame.
        let fields = json_of(&format!(
            "decode --arch x86_64 --level 1 --json {}",
            young.trim()
        ));
        assert_ne!(fields["pfn"], 0x12345);
    }

    #[test]
    fn the_linux_arm64_user_page_is_write_back() {
        let fields = json_of(
            "decode --arch aarch64 --level 1 --profile linux-arm64-48bit --json \
             0x00e8000040000f43",
        );
        assert_eq!(fields["kind"], "leaf");
        assert_eq!(fields["pfn"], 0x40000);
        assert_eq!(fields["memory"], "write-back");
        assert_eq!(fields["user"], true);
        assert_eq!(fields["writable"], true);
        assert_eq!(fields["dirty"], true);
        assert_eq!(fields["executable"], false);
        assert_eq!(fields["profile"], "linux-arm64-48bit");
        // The whole chain: the profile's MAIR says AttrIndx 0 is normal write-back.
        let Ok(Entry::Leaf { attrs, .. }) = Aarch64::decode_in(
            0x00e8_0000_4000_0f43,
            Level::L1,
            &Profile::LINUX_ARM64_48BIT,
        ) else {
            panic!("not a leaf")
        };
        assert_eq!(
            attrs.property_in(&Profile::LINUX_ARM64_48BIT).memory,
            MemoryType::WriteBack
        );
        // Under devpriv's own MAIR, index 0 is uncached: the profile is what changes it.
        let fields = json_of("decode --arch aarch64 --level 1 --json 00e8000040000f43");
        assert_eq!(fields["memory"], "uncached");
    }

    #[test]
    fn swap_type_21_is_a_swap_device_on_linux_but_not_under_devpriv() {
        let linux = execute(&words(
            "encode --arch x86_64 --level 1 --profile linux-x86_64-4level --kind swap \
             --swap-type 21 --offset 0x100",
        ))
        .unwrap();
        let fields = json_of(&format!(
            "decode --arch x86_64 --level 1 --profile linux-x86_64-4level --json {}",
            linux.trim()
        ));
        assert_eq!(fields["kind"], "swap");
        assert_eq!(fields["swap_type"], 21);
        assert_eq!(fields["offset"], 0x100);
        assert_eq!(
            execute(&words(&format!(
                "decode --arch x86_64 --level 1 --profile linux-x86_64-4level {}",
                linux.trim()
            ))),
            Ok("swap swap-type=21 offset=0x100 type=21\n".into())
        );
        let err = execute(&words(
            "encode --arch x86_64 --level 1 --kind swap --swap-type 21 --offset 0x100",
        ))
        .unwrap_err();
        assert!(err.contains("not a swap device"), "{err}");
        assert!(err.contains("0..=20"), "{err}");
        assert!(err.contains("device-private-migration-read"), "{err}");
        // Both arches, both levels.
        for arch in ["x86_64", "aarch64"] {
            for level in [1, 2] {
                assert!(
                    execute(&words(&format!(
                        "encode --arch {arch} --level {level} --profile linux-arm64-48bit \
                         --kind swap --swap-type 23 --offset 1"
                    )))
                    .is_ok()
                );
            }
        }
    }

    // --- 2. --lenient ---

    #[test]
    fn lenient_decode_reports_unexpected_bits_and_the_strict_error() {
        // A device-private write with a reserved x86_64 swap bit 4 (in the low bits no
        // software entry uses).
        let raw = 0xe7ff_ffff_ffdb_9600u64 | 0x10;
        let strict = execute(&words(&format!("decode --arch x86_64 --level 1 {raw:#x}")));
        assert!(strict.unwrap_err().contains("--lenient"));
        let fields = json_of(&format!(
            "decode --arch x86_64 --level 1 --lenient --json {raw:#x}"
        ));
        assert_eq!(fields["kind"], "device-private-write");
        assert_eq!(fields["index"], 0x1234);
        assert_eq!(fields["unexpected"], "0x10");
        let error = fields["strict_error"].as_str().unwrap();
        assert!(error.contains("0x10"), "{error}");
        let text = execute(&words(&format!(
            "decode --arch x86_64 --level 1 --lenient {raw:#x}"
        )))
        .unwrap();
        assert!(
            text.starts_with("device-private-write index=0x1234 type=28 unexpected=0x10 ("),
            "{text}"
        );
        assert!(text.contains(error), "{text}");
        // A valid entry: nothing unexpected, no strict error.
        let fields = json_of("decode --arch x86_64 --level 1 --lenient --json e7ffffffffdb9600");
        assert_eq!(fields["unexpected"], "0x0");
        assert_eq!(fields["strict_error"], Value::Null);
        let text = execute(&words(
            "decode --arch x86_64 --level 1 --lenient e7ffffffffdb9600",
        ))
        .unwrap();
        assert_eq!(
            text,
            "device-private-write index=0x1234 type=28 unexpected=0x0\n"
        );
        // Without --lenient the JSON has neither field.
        assert!(!json_of("decode --arch x86_64 --level 1 --json 0").contains_key("unexpected"));
    }

    // --- 3. bare hex input ---

    #[test]
    fn raw_values_and_numbers_are_hex_with_or_without_0x() {
        assert_eq!(parse_hex("40000f43"), Ok(0x4000_0f43));
        assert_eq!(parse_hex("0x40000f43"), Ok(0x4000_0f43));
        assert_eq!(parse_hex("0X4000_0F43"), Ok(0x4000_0f43));
        assert_eq!(parse_hex("10"), Ok(16));
        assert_eq!(parse_hex("ffffffffffffffff"), Ok(u64::MAX));
        assert!(
            parse_hex("1_0000_0000_0000_0000")
                .unwrap_err()
                .contains("64 bits")
        );
        assert!(parse_hex("0x").is_err());
        assert!(parse_hex("").is_err());
        assert!(parse_hex("12g").is_err());
        assert!(parse_hex("-1").is_err());
        assert_eq!(
            execute(&words("decode --arch x86_64 --level 1 e7ffffffffdb9600")),
            execute(&words(
                "decode --arch x86_64 --level 1 0xe7ff_ffff_ffdb_9600"
            ))
        );
        let setup = devpriv();
        for option in ["--pfn", "--index"] {
            let kind = if option == "--pfn" {
                "hw-poison"
            } else {
                "device-private-read"
            };
            let bare = encode_raw::<X86_64>(
                &args(&format!("--kind {kind} {option} 1000")),
                Level::L1,
                &setup,
            );
            let prefixed = encode_raw::<X86_64>(
                &args(&format!("--kind {kind} {option} 0x1000")),
                Level::L1,
                &setup,
            );
            assert_eq!(bare, prefixed, "{option}");
        }
        let fields = json_of("encode --arch x86_64 --level 1 --kind swap --offset 10 --json");
        assert_eq!(fields["offset"], 16);
        // --swap-type and levels stay decimal.
        let fields =
            json_of("encode --arch x86_64 --level 2 --kind swap --swap-type 10 --offset 1 --json");
        assert_eq!(fields["swap_type"], 10);
        assert_eq!(fields["level"], 2);
        assert!(execute(&words("decode --arch x86_64 --level 0x1 0")).is_err());
        // --help says so.
        let help = usage(None);
        assert!(help.contains("hex with or without 0x"), "{help}");
        assert!(help.contains("--swap-type N       decimal"), "{help}");
        assert!(help.contains("--level N           the level the entry sits at, decimal"));
    }

    // --- 4. --help ---

    #[test]
    fn help_lists_every_kind_flag_and_preset_and_succeeds() {
        let decode_flags = [
            "--arch",
            "--level",
            "--arm-level",
            "--lenient",
            "--json",
            "--help",
            "-h",
        ];
        let encode_flags = [
            "--arch",
            "--level",
            "--arm-level",
            "--kind",
            "--pfn",
            "--index",
            "--offset",
            "--swap-type",
            "--writable",
            "--user",
            "--executable",
            "--global",
            "--accessed",
            "--dirty",
            "--memory",
            "--young",
            "--exclusive",
            "--uffd-wp",
            "--soft-dirty",
            "--json",
            "--help",
        ];
        let profile_flags = ["--profile", "--phys-bits", "--numbering", "--without"];
        let cases: [(&str, Vec<&str>); 7] = [
            ("--help", [&decode_flags[..], &encode_flags].concat()),
            ("-h", [&decode_flags[..], &encode_flags].concat()),
            ("help", [&decode_flags[..], &encode_flags].concat()),
            ("decode --help", decode_flags.to_vec()),
            ("decode -h", decode_flags.to_vec()),
            ("encode --help", encode_flags.to_vec()),
            ("encode --arch x86_64 -h", encode_flags.to_vec()),
        ];
        for (command, flags) in cases {
            let help = execute(&words(command)).unwrap();
            for flag in flags.iter().chain(&profile_flags) {
                assert!(help.contains(flag), "`{command}` lacks {flag}");
            }
            for (kind, _) in KINDS {
                assert!(
                    help.contains(&format!("  {kind}")),
                    "`{command}` lacks {kind}"
                );
            }
            for preset in Profile::PRESETS {
                assert!(
                    help.contains(preset.name()),
                    "`{command}` lacks {}",
                    preset.name()
                );
            }
            for option in KERNEL_OPTIONS {
                assert!(help.contains(option), "`{command}` lacks {option}");
            }
            for (short, long, _) in MEMORY_TYPES {
                if command.contains("encode") {
                    assert!(help.contains(short) && help.contains(long), "{short}");
                }
            }
        }
        // Help wins over an otherwise broken command line.
        assert!(execute(&words("encode --kind --help")).is_ok());
        assert!(execute(&words("decode --colour=red --help")).is_ok());
        // The preset lines are generated from the presets' values.
        for preset in Profile::PRESETS {
            let line = format!(" {} ", preset.name());
            let help = usage(None);
            let line = help.lines().find(|l| l.contains(&line)).unwrap();
            assert!(line.ends_with(&describe_profile(&preset)), "{line}");
        }
        // Every line fits a terminal.
        for verb in [None, Some(Verb::Decode), Some(Verb::Encode)] {
            for line in usage(verb).lines() {
                assert!(line.len() <= 100, "{line}");
            }
        }
        assert!(describe_profile(&Profile::LINUX_X86_64_4LEVEL).contains("46-bit"));
        assert!(describe_profile(&Profile::SERIES_ARM64_48BIT).contains("series numbering"));
    }

    // --- 5. leaf permission and memory flags ---

    #[test]
    fn leaf_flags_set_permissions_and_memory_type_through_the_profile() {
        let fields = json_of(
            "encode --arch x86_64 --level 1 --kind leaf --pfn 12345 --writable --user \
             --executable --global --accessed --dirty --memory wc --json",
        );
        for flag in [
            "writable",
            "user",
            "executable",
            "global",
            "accessed",
            "dirty",
        ] {
            assert_eq!(fields[flag], true, "{flag}");
        }
        assert_eq!(fields["memory"], "write-combining");
        assert_eq!(fields["attributes"]["pat_index"], 1);
        assert_eq!(fields["raw"], "0x1234516f");
        // Defaults: read-only, kernel, no-execute, write-back.
        let fields = json_of("encode --arch x86_64 --level 1 --kind leaf --pfn 1 --json");
        for flag in [
            "writable",
            "user",
            "executable",
            "global",
            "accessed",
            "dirty",
        ] {
            assert_eq!(fields[flag], false, "{flag}");
        }
        assert_eq!(fields["memory"], "write-back");
        // Every memory type on x86_64 but tagged, every one on aarch64 the MAIR has.
        for (short, long, _) in MEMORY_TYPES {
            let x86 = execute(&words(&format!(
                "encode --arch x86_64 --level 2 --kind leaf --pfn 200 --memory {short} --json"
            )));
            if short == "tagged" {
                let err = x86.unwrap_err();
                assert!(err.contains("no index in the PAT table"), "{err}");
                assert!(err.contains("profile devpriv"), "{err}");
            } else {
                let out: Value = serde_json::from_str(&x86.unwrap()).unwrap();
                assert_eq!(out["memory"], long);
            }
            let arm = execute(&words(&format!(
                "encode --arch aarch64 --level 1 --profile linux-arm64-48bit --kind leaf \
                 --pfn 1 --memory {long}"
            )));
            let linux_mair = ["wb", "tagged", "wc", "uc", "uc-minus"];
            assert_eq!(arm.is_ok(), linux_mair.contains(&short), "{short}");
            if let Err(err) = arm {
                assert!(
                    err.contains("MAIR table of profile linux-arm64-48bit"),
                    "{err}"
                );
            }
        }
        // The Linux arm64 user page, rebuilt from flags.
        let raw = execute(&words(
            "encode --arch aarch64 --level 1 --profile linux-arm64-48bit --kind leaf --pfn \
             40000 --writable --user --accessed --dirty",
        ))
        .unwrap();
        let fields = json_of(&format!(
            "decode --arch aarch64 --level 1 --profile linux-arm64-48bit --json {}",
            raw.trim()
        ));
        assert_eq!(fields["memory"], "write-back");
        assert_eq!(fields["dirty"], true);
        // A dirty read-only aarch64 page has no encoding.
        assert!(
            execute(&words(
                "encode --arch aarch64 --level 1 --kind leaf --pfn 1 --dirty"
            ))
            .unwrap_err()
            .contains("--writable")
        );
        assert!(
            execute(&words(
                "encode --arch x86_64 --level 1 --kind leaf --pfn 1 --memory purple"
            ))
            .is_err()
        );
        // Flags that belong to other kinds are refused.
        for text in [
            "--kind swap --offset 1 --writable",
            "--kind swap --offset 1 --memory wb",
            "--kind hw-poison --pfn 1 --dirty",
            "--kind leaf --pfn 1 --young",
            "--kind leaf --pfn 1 --exclusive",
            "--kind leaf --pfn 1 --index 1",
            "--kind swap --offset 1 --pfn 1",
        ] {
            assert!(
                execute(&words(&format!("encode --arch x86_64 --level 1 {text}"))).is_err(),
                "{text}"
            );
        }
        // --dirty keeps its migration meaning.
        let fields =
            json_of("encode --arch x86_64 --level 1 --kind migration-write --pfn 5 --dirty --json");
        assert_eq!(fields["dirty"], true);
        assert_eq!(fields["young"], false);
    }

    #[test]
    fn prot_none_entries_encode_and_decode() {
        for arch in ["x86_64", "aarch64"] {
            for level in [1, 2, 3] {
                let pfn = 0x40000;
                let raw = execute(&words(&format!(
                    "encode --arch {arch} --level {level} --profile linux-arm64-48bit --kind \
                     prot-none --pfn {pfn:x} --writable --user --accessed --dirty"
                )))
                .unwrap();
                let fields = json_of(&format!(
                    "decode --arch {arch} --level {level} --profile linux-arm64-48bit --json {}",
                    raw.trim()
                ));
                assert_eq!(fields["kind"], "prot-none", "{arch} {level}");
                assert_eq!(fields["pfn"], pfn);
                assert_eq!(fields["writable"], true);
                assert_eq!(fields["memory"], "write-back");
                assert!(fields["attributes"].is_object());
            }
            let err = execute(&words(&format!(
                "encode --arch {arch} --level 1 --kind prot-none --pfn 1 --global"
            )))
            .unwrap_err();
            assert!(err.contains("PROT_NONE"), "{err}");
        }
        assert!(
            execute(&words(
                "encode --arch x86_64 --level 4 --kind prot-none --pfn 1"
            ))
            .unwrap_err()
            .contains("no leaf at level 4")
        );
    }

    // --- 6. structured JSON and JSON errors ---

    #[test]
    fn json_has_named_fields_and_no_debug_strings() {
        let x86 = json_of(
            "decode --arch x86_64 --level 2 --profile linux-x86_64-5level --json \
             0x8000_0000_4020_10e7",
        );
        assert_eq!(x86["kind"], "leaf");
        assert_eq!(x86["size"], "2MiB");
        assert_eq!(x86["memory"], "write-back");
        assert_eq!(x86["profile"], "linux-x86_64-5level");
        let attrs = x86["attributes"].as_object().unwrap();
        for key in [
            "pwt",
            "pcd",
            "pat",
            "pat_index",
            "protection_key",
            "no_execute",
            "software_low",
            "software_high",
        ] {
            assert!(attrs.contains_key(key), "x86_64 leaf lacks {key}");
        }
        assert_eq!(attrs["pat"], true);
        assert_eq!(attrs["pat_index"], 4);
        assert_eq!(attrs["no_execute"], true);

        let arm = json_of(
            "decode --arch aarch64 --arm-level 3 --profile linux-arm64-48bit --json \
             0x0068000040000f53",
        );
        let attrs = arm["attributes"].as_object().unwrap();
        for key in [
            "attr_index",
            "shareability",
            "ns",
            "guarded",
            "contiguous",
            "pxn",
            "uxn",
            "software",
        ] {
            assert!(attrs.contains_key(key), "aarch64 leaf lacks {key}");
        }
        assert_eq!(attrs["shareability"], "inner-shareable");
        assert_eq!(attrs["attr_index"], 4);
        assert_eq!(arm["memory"], "device");

        let table = json_of("decode --arch x86_64 --level 4 --json 0x8000000012345067");
        assert_eq!(table["kind"], "table");
        assert_eq!(table["attributes"]["no_execute"], true);
        assert_eq!(table["attributes"]["writable"], true);
        let table = json_of("decode --arch aarch64 --level 2 --json 0x4000000012345003");
        assert_eq!(table["attributes"]["read_only_table"], true);

        // Nothing anywhere looks like Rust's Debug output.
        for fields in [&x86, &arm, &table] {
            let text = Value::Object((*fields).clone()).to_string();
            for debug in ["Size", "WriteBack", "Attributes", "{ ", "Shareable"] {
                assert!(!text.contains(debug), "{debug} in {text}");
            }
        }
        // The text form flattens the attributes.
        let text = execute(&words(
            "decode --arch x86_64 --level 2 --profile linux-x86_64-5level \
             0x8000_0000_4020_10e7",
        ))
        .unwrap();
        assert_eq!(
            text,
            "leaf pfn=0x40200 size=2MiB writable user accessed dirty memory=write-back pat \
             pat-index=4 no-execute\n"
        );
    }

    #[test]
    fn json_errors_are_objects_and_the_command_fails() {
        let line = json_error("reserved bits 0x10 are set");
        assert_eq!(
            line.to_string(),
            r#"{"error":"reserved bits 0x10 are set"}"#
        );
        let failing = words("decode --arch x86_64 --level 1 --json 0x10");
        let err = execute(&failing).unwrap_err();
        assert!(
            err.contains("0x0000000000000010 is not a valid entry"),
            "{err}"
        );
        // run prints the object on stdout (checked by hand: the harness captures it) and
        // still fails, so the exit status is non-zero.
        assert_eq!(run(&failing), Err(err));
        assert!(
            run(&words(
                "decode --arch x86_64 --level 1 --json --colour=red 0"
            ))
            .is_err()
        );
        assert!(run(&words("decode --arch x86_64 --level 1 --json 0")).is_ok());
    }

    // --- 7. Arm's level numbering ---

    #[test]
    fn arm_levels_are_an_alternative_on_aarch64_only() {
        for (arm, ours) in [(3, 1), (2, 2), (1, 3), (0, 4)] {
            let setup = devpriv();
            let a = args(&format!("--arm-level {arm}"));
            assert_eq!(
                level_of::<Aarch64>(&a).map(Level::number),
                Ok(ours),
                "Arm level {arm}"
            );
            let fields =
                decode_fields::<Aarch64>(0, Level::from_number(ours).unwrap(), &setup, false)
                    .unwrap();
            assert_eq!(fields["arm_level"], arm);
            assert_eq!(fields["level"], ours);
        }
        assert!(level_of::<Aarch64>(&args("--arm-level 4")).is_err());
        assert!(level_of::<Aarch64>(&args("--arm-level -1")).is_err());
        assert!(
            level_of::<Aarch64>(&args("--arm-level 3 --level 1"))
                .unwrap_err()
                .contains("not both")
        );
        let err = execute(&words("decode --arch x86_64 --arm-level 3 0")).unwrap_err();
        assert!(err.contains("aarch64 only"), "{err}");
        assert!(
            execute(&words("decode --arch aarch64 0"))
                .unwrap_err()
                .contains("--arm-level")
        );
        // Both numberings in the output, text and JSON; x86_64 has no arm_level.
        let text = execute(&words(
            "decode --arch aarch64 --arm-level 3 --profile linux-arm64-48bit 00e8000040000f43",
        ))
        .unwrap();
        assert!(
            text.trim_end().ends_with("at level 1 (Arm level 3)"),
            "{text}"
        );
        assert_eq!(
            text,
            execute(&words(
                "decode --arch aarch64 --level 1 --profile linux-arm64-48bit 00e8000040000f43"
            ))
            .unwrap()
        );
        assert!(!json_of("decode --arch x86_64 --level 1 --json 0").contains_key("arm_level"));
        // Errors name both too.
        let err = execute(&words("decode --arch aarch64 --arm-level 3 0x1")).unwrap_err();
        assert!(err.contains("level 1 (Arm level 3)"), "{err}");
        // Encode takes it as well.
        assert_eq!(
            execute(&words(
                "encode --arch aarch64 --arm-level 2 --kind hw-poison --pfn 4"
            )),
            execute(&words(
                "encode --arch aarch64 --level 2 --kind hw-poison --pfn 4"
            ))
        );
    }

    // --- 9. the documentation's transcripts are what the tool prints ---

    #[test]
    fn documented_transcripts_match_the_tool() {
        let mut checked = 0;
        for doc in ["README.md", "docs/pte-layout.md"] {
            let path = crate::cli::repo_root().join(doc);
            let text = std::fs::read_to_string(&path).unwrap();
            let mut lines = text.lines().peekable();
            while let Some(line) = lines.next() {
                let Some(command) = line.strip_prefix("$ cargo xtask pte ") else {
                    continue;
                };
                let mut expected = String::new();
                while let Some(out) = lines.next_if(|l| !l.starts_with("$ ") && *l != "```") {
                    expected.push_str(out);
                    expected.push('\n');
                }
                let got = match execute(&words(command)) {
                    Ok(out) => out,
                    Err(e) => format!("error: {e}\n"),
                };
                assert_eq!(got, expected, "{doc}: {command}");
                checked += 1;
            }
        }
        assert!(checked >= 8, "only {checked} transcripts found");
    }
}
