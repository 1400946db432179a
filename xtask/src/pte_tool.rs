//! `cargo xtask pte decode|encode`: one page-table entry to and from its raw value.

use devpriv_pte::arch::{aarch64::Aarch64, x86_64::X86_64};
use devpriv_pte::{
    DeviceAccess, DeviceIndex, Entry, LeafAttributes, Level, Marker, MigrationAccess, Pfn,
    PteFormat, SideBits, SoftwareEntry, SoftwareKind, SwapType,
};
use serde_json::{Map, Value, json};

use crate::cli::{Args, parse_number};

/// The options of `pte decode|encode` that take a value.
const VALUED_OPTIONS: [&str; 7] = [
    "arch",
    "level",
    "kind",
    "pfn",
    "index",
    "offset",
    "swap-type",
];

/// Dispatches `pte decode` and `pte encode`.
pub fn run(args: &[String]) -> Result<(), String> {
    let Some((verb, rest)) = args.split_first() else {
        return Err("usage: cargo xtask pte decode|encode ...".into());
    };
    let args = Args::parse(rest, &VALUED_OPTIONS)?;
    let arch = args
        .option("arch")
        .ok_or("--arch x86_64|aarch64 is required")?;
    let level_text = args.option("level").ok_or("--level N is required")?;
    let level = level_text
        .parse::<u8>()
        .ok()
        .and_then(Level::from_number)
        .ok_or_else(|| format!("--level must be 1..=5, got `{level_text}`"))?;
    match (verb.as_str(), arch) {
        ("decode", "x86_64") => decode::<X86_64>(&args, level),
        ("decode", "aarch64") => decode::<Aarch64>(&args, level),
        ("encode", "x86_64") => encode::<X86_64>(&args, level),
        ("encode", "aarch64") => encode::<Aarch64>(&args, level),
        ("decode" | "encode", other) => {
            Err(format!("unknown --arch `{other}` (x86_64 or aarch64)"))
        }
        (other, _) => Err(format!("unknown pte command `{other}` (decode or encode)")),
    }
}

fn decode<F: PteFormat>(args: &Args, level: Level) -> Result<(), String> {
    args.reject_unknown_switches(&["json"])?;
    let [raw_text] = args.positional.as_slice() else {
        return Err("pte decode takes exactly one raw value".into());
    };
    let raw = parse_number(raw_text)?;
    let fields = decode_fields::<F>(raw, level)?;
    if args.switch("json") {
        println!("{}", Value::Object(fields));
    } else {
        println!("{}", one_line(&fields));
    }
    Ok(())
}

/// The decoded entry as ordered fields: `kind`, the number, the flags; then `arch`,
/// `level` and `raw`.
fn decode_fields<F: PteFormat>(raw: u64, level: Level) -> Result<Map<String, Value>, String> {
    let entry = F::decode(raw, level).map_err(|e| {
        format!(
            "{raw:#018x} is not a valid entry at level {}: {e}",
            level.number()
        )
    })?;
    let mut fields = describe(&entry);
    fields.insert("arch".into(), json!(arch_name::<F>()));
    fields.insert("level".into(), json!(level.number()));
    fields.insert("raw".into(), json!(format!("{raw:#x}")));
    Ok(fields)
}

fn arch_name<F: PteFormat>() -> &'static str {
    match F::ARCH {
        devpriv_pte::Arch::X86_64 => "x86_64",
        devpriv_pte::Arch::Aarch64 => "aarch64",
    }
}

/// The entry as ordered (name, value) fields: `kind` first, then the number, then flags.
fn describe<F: PteFormat>(entry: &Entry<F>) -> Map<String, Value> {
    let mut f = Map::new();
    f.insert("kind".into(), json!(entry.kind_name()));
    match entry {
        Entry::Absent => {}
        Entry::Table { next, attrs } => {
            f.insert("pfn".into(), json!(next.number()));
            f.insert("attributes".into(), json!(format!("{attrs:?}")));
        }
        Entry::Leaf { pfn, size, attrs } | Entry::ProtNone { pfn, size, attrs } => {
            let p = attrs.property();
            f.insert("pfn".into(), json!(pfn.number()));
            f.insert(
                "size".into(),
                json!(format!("{size:?}").trim_start_matches("Size").to_string()),
            );
            f.insert("writable".into(), json!(p.writable));
            f.insert("user".into(), json!(p.user));
            f.insert("executable".into(), json!(p.executable));
            f.insert("global".into(), json!(p.global));
            f.insert("accessed".into(), json!(p.accessed));
            f.insert("dirty".into(), json!(p.dirty));
            f.insert("memory".into(), json!(format!("{:?}", p.memory)));
            f.insert("attributes".into(), json!(format!("{attrs:?}")));
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
            f.insert("type".into(), json!(sw.kind.type_number()));
            f.insert("exclusive".into(), json!(sw.side.exclusive));
            f.insert("uffd_wp".into(), json!(sw.side.uffd_wp));
            f.insert("soft_dirty".into(), json!(sw.side.soft_dirty));
        }
    }
    f
}

/// `kind pfn=0x.. size=4KiB writable ...`: numbers in hex, true flags by name, false
/// flags left out.
fn one_line(fields: &Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for (name, value) in fields {
        match value {
            Value::Bool(true) => parts.push(name.replace('_', "-")),
            Value::Bool(false) => {}
            Value::Number(_) | Value::String(_)
                if name == "level" || name == "arch" || name == "raw" => {}
            Value::Number(n) if name == "type" || name == "swap_type" => {
                parts.push(format!("{name}={n}"))
            }
            Value::Number(n) => parts.push(format!("{name}={:#x}", n.as_u64().unwrap_or(0))),
            Value::String(s) if name == "kind" => parts.push(s.clone()),
            Value::String(s) => parts.push(format!("{name}={s}")),
            other => parts.push(format!("{name}={other}")),
        }
    }
    parts.join(" ")
}

fn encode<F: PteFormat>(args: &Args, level: Level) -> Result<(), String> {
    let raw = encode_raw::<F>(args, level)?;
    println!("{raw:#x}");
    Ok(())
}

/// The raw value `pte encode` prints for `args`.
fn encode_raw<F: PteFormat>(args: &Args, level: Level) -> Result<u64, String> {
    args.reject_unknown_switches(&["young", "dirty", "exclusive", "uffd-wp", "soft-dirty"])?;
    args.reject_positional()?;
    let kind = args.option("kind").ok_or("--kind KIND is required")?;
    let number = |name: &str| -> Result<u64, String> {
        let text = args
            .option(name)
            .ok_or_else(|| format!("--kind {kind} needs --{name}"))?;
        parse_number(text)
    };
    let pfn = || number("pfn").map(Pfn::new);
    let index = || number("index").map(DeviceIndex::new);
    let (young, dirty) = (args.switch("young"), args.switch("dirty"));
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
            );
        }
        "leaf" => {
            let size = level
                .leaf_size()
                .ok_or_else(|| format!("no leaf at level {}", level.number()))?;
            return raw_of(
                &Entry::<F>::Leaf {
                    pfn: pfn()?,
                    size,
                    attrs: Default::default(),
                },
                level,
            );
        }
        "swap" => {
            let t = args.option("swap-type").map_or(Ok(0), parse_number)?;
            let swap_type = u8::try_from(t)
                .ok()
                .and_then(SwapType::new)
                .ok_or_else(|| format!("--swap-type must be 0..=20, got {t}"))?;
            Some(SoftwareKind::Swap {
                swap_type,
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
            if bits & !0b111 != 0 {
                return Err(format!(
                    "marker payload bits are 0 (uffd-wp), 1 (poisoned), 2 (guard); got {bits:#x}"
                ));
            }
            Some(SoftwareKind::Marker(Marker {
                uffd_wp: bits & 1 != 0,
                poisoned: bits & 2 != 0,
                guard: bits & 4 != 0,
            }))
        }
        other => return Err(format!("unknown --kind `{other}`")),
    };
    if !matches!(
        software,
        Some(SoftwareKind::Migration { .. } | SoftwareKind::DeviceMigration { .. })
    ) && (young || dirty)
    {
        return Err("--young and --dirty apply to migration kinds only".into());
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
    raw_of(&entry, level)
}

fn raw_of<F: PteFormat>(entry: &Entry<F>, level: Level) -> Result<u64, String> {
    F::encode(entry, level).map_err(|e| {
        format!(
            "cannot encode {} at level {}: {e}",
            entry.kind_name(),
            level.number()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Args {
        let words: Vec<String> = text.split_whitespace().map(String::from).collect();
        Args::parse(&words, &VALUED_OPTIONS).unwrap()
    }

    #[test]
    fn unknown_options_stray_arguments_and_non_utf8_are_errors() {
        let words =
            |text: &str| -> Vec<String> { text.split_whitespace().map(String::from).collect() };
        assert_eq!(
            Args::parse(&words("--arch=x86_64 --colour=red"), &VALUED_OPTIONS).err(),
            Some("unknown option --colour".into())
        );
        let stray = args("--kind device-private-write --index 1 0x5");
        assert_eq!(
            encode_raw::<X86_64>(&stray, Level::L1),
            Err("unexpected argument `0x5`".into())
        );
        assert_eq!(
            run(&words("decode --arch x86_64 --level 1 0x1 0x2")),
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
        );
        assert_eq!(raw, Ok(0xe7ff_ffff_ffdb_9600));
        let fields = decode_fields::<X86_64>(0xe7ff_ffff_ffdb_9600, Level::L1).unwrap();
        assert_eq!(fields["kind"], "device-private-write");
        assert_eq!(fields["index"], 0x1234);
        assert_eq!(fields["exclusive"], false);
        assert_eq!(fields.keys().next().map(String::as_str), Some("kind"));
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
        for level in [Level::L1, Level::L2] {
            for (kind, rest) in kinds {
                let a = args(&format!("--kind {kind} {rest}"));
                let x86 = encode_raw::<X86_64>(&a, level).unwrap();
                assert_eq!(decode_fields::<X86_64>(x86, level).unwrap()["kind"], kind);
                let arm = encode_raw::<Aarch64>(&a, level).unwrap();
                let fields = decode_fields::<Aarch64>(arm, level).unwrap();
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
        assert!(
            encode_raw::<X86_64>(
                &args("--kind device-private-write --index 0x10000000000"),
                Level::L1
            )
            .is_err()
        );
        assert!(
            encode_raw::<Aarch64>(&args("--kind swap --offset 1 --soft-dirty"), Level::L1).is_err()
        );
        assert!(
            encode_raw::<X86_64>(&args("--kind device-private-write --index 1"), Level::L3)
                .is_err()
        );
        assert!(
            encode_raw::<X86_64>(&args("--kind hw-poison --pfn 1 --young"), Level::L1).is_err()
        );
        assert!(encode_raw::<X86_64>(&args("--kind nonsense --pfn 1"), Level::L1).is_err());
        assert!(decode_fields::<X86_64>(0x10, Level::L1).is_err());
    }
}
