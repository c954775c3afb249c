//! Parsing and printing of resource quantities as people type them on a command line:
//! CPU as millicores (`500m`) or cores (`0.5`, `2`), memory as a size with a unit
//! (`256M`, `4GB`, `1GiB`). Like Docker's `--memory`, every memory unit is a power of 1024
//! (`M`, `MB` and `MiB` all mean 2^20 bytes), so `--memory 256M` means what a Docker user
//! expects. Pure functions, no I/O. They live here, beside [`DeployRequest`]'s
//! `cpu_millis` and `memory_bytes` fields they fill, so that `peerctl` (which parses
//! `--cpu`/`--memory`) and the provider (its limits, its admission messages, printed with the
//! same units) share one definition without the client linking the container runtime.
//!
//! A volume argument (`NAME:/PATH[:SIZE]`) is parsed here too, with the same sizes.
//!
//! [`DeployRequest`]: crate::DeployRequest

use crate::control_plane::{
    InvalidMessage, VolumeMount, validate_mount_path, validate_share, validate_volume_name,
};

/// A CPU or memory quantity that could not be understood. The message quotes the input
/// and shows the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a number with an accepted unit.
    #[error("{kind} {input:?} is not understood: use {forms}")]
    Syntax {
        /// `"CPU"` or `"memory"`.
        kind: &'static str,
        /// What was given.
        input: String,
        /// The accepted forms.
        forms: &'static str,
    },
    /// The quantity is zero.
    #[error("{kind} {input:?} is zero: ask for more than nothing")]
    Zero {
        /// `"CPU"` or `"memory"`.
        kind: &'static str,
        /// What was given.
        input: String,
    },
    /// The quantity is finer than one millicore.
    #[error("CPU {input:?} is finer than 1m (a thousandth of a core): round it")]
    TooFine {
        /// What was given.
        input: String,
    },
    /// The quantity does not fit the type that carries it.
    #[error("{kind} {input:?} is too large")]
    TooLarge {
        /// `"CPU"` or `"memory"`.
        kind: &'static str,
        /// What was given.
        input: String,
    },
}

const CPU_FORMS: &str = "millicores like 500m or cores like 0.5 or 2";
const MEMORY_FORMS: &str = "a size like 256M, 512MiB, 4GB or 1GiB (powers of 1024)";

/// Parses a CPU quantity into millicores: `500m` → 500, `0.5` → 500, `2` → 2000.
///
/// ```
/// use peercompute_tunnel_proto::parse_cpu;
/// assert_eq!(parse_cpu("250m"), Ok(250));
/// assert_eq!(parse_cpu("1.5"), Ok(1500));
/// ```
pub fn parse_cpu(input: &str) -> Result<u32, QuantityError> {
    let syntax = || QuantityError::Syntax {
        kind: "CPU",
        input: input.to_owned(),
        forms: CPU_FORMS,
    };
    let text = input.trim();
    let millis: u128 = if let Some(number) = text.strip_suffix('m') {
        if !is_digits(number) {
            return Err(syntax());
        }
        number.parse().map_err(|_| too_large("CPU", input))?
    } else {
        let (whole, frac) = split_decimal(text).ok_or_else(syntax)?;
        if frac.len() > 3 && frac[3..].bytes().any(|b| b != b'0') {
            return Err(QuantityError::TooFine {
                input: input.to_owned(),
            });
        }
        let whole: u128 = whole.parse().map_err(|_| too_large("CPU", input))?;
        let frac_millis = fraction_of(frac, 1000);
        whole
            .checked_mul(1000)
            .and_then(|w| w.checked_add(frac_millis))
            .ok_or_else(|| too_large("CPU", input))?
    };
    if millis == 0 {
        return Err(QuantityError::Zero {
            kind: "CPU",
            input: input.to_owned(),
        });
    }
    u32::try_from(millis).map_err(|_| too_large("CPU", input))
}

/// Parses a memory size into bytes. Units (case-insensitive): none or `B` (bytes), `K`,
/// `M`, `G`, `T`, each optionally followed by `B` or `iB`; all are powers of 1024.
/// Fractions are allowed (`1.5G`) and rounded down to a whole byte.
///
/// ```
/// use peercompute_tunnel_proto::parse_memory;
/// assert_eq!(parse_memory("256M"), Ok(256 << 20));
/// assert_eq!(parse_memory("1GiB"), Ok(1 << 30));
/// ```
pub fn parse_memory(input: &str) -> Result<u64, QuantityError> {
    let syntax = || QuantityError::Syntax {
        kind: "memory",
        input: input.to_owned(),
        forms: MEMORY_FORMS,
    };
    let text = input.trim();
    let unit_start = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_start);
    let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(syntax()),
    };
    let (whole, frac) = split_decimal(number.trim_end()).ok_or_else(syntax)?;
    let whole: u128 = whole.parse().map_err(|_| too_large("memory", input))?;
    let bytes = whole
        .checked_mul(multiplier)
        .and_then(|w| w.checked_add(fraction_of(frac, multiplier)))
        .ok_or_else(|| too_large("memory", input))?;
    if bytes == 0 {
        return Err(QuantityError::Zero {
            kind: "memory",
            input: input.to_owned(),
        });
    }
    u64::try_from(bytes).map_err(|_| too_large("memory", input))
}

/// A `--volume` argument that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeArgError {
    #[error("--volume {input:?} is not NAME:/PATH or NAME:/PATH:SIZE (e.g. data:/var/lib/app:2G)")]
    Syntax { input: String },
    #[error("--volume {input:?}: {source}")]
    Invalid {
        input: String,
        source: InvalidMessage,
    },
    #[error("--volume {input:?}: the size: {source}")]
    Size {
        input: String,
        source: QuantityError,
    },
}

/// Parses a volume argument: `NAME:/PATH` or `NAME:/PATH:SIZE` (SIZE as [`parse_memory`]
/// reads it), checked by the wire rules, so a bad one fails before anything is signed.
///
/// ```
/// use peercompute_tunnel_proto::parse_volume;
/// let v = parse_volume("data:/var/lib/notes:2G").unwrap();
/// assert_eq!((v.name.as_str(), v.path.as_str(), v.size_bytes), ("data", "/var/lib/notes", Some(2 << 30)));
/// assert_eq!(parse_volume("data:/data").unwrap().size_bytes, None);
/// ```
pub fn parse_volume(input: &str) -> Result<VolumeMount, VolumeArgError> {
    let mut parts = input.split(':');
    let (Some(name), Some(path), size, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VolumeArgError::Syntax {
            input: input.to_owned(),
        });
    };
    let invalid = |source| VolumeArgError::Invalid {
        input: input.to_owned(),
        source,
    };
    validate_volume_name(name).map_err(invalid)?;
    validate_mount_path(path).map_err(invalid)?;
    let size_bytes = size
        .map(|size| {
            parse_memory(size).map_err(|source| VolumeArgError::Size {
                input: input.to_owned(),
                source,
            })
        })
        .transpose()?;
    if let Some(bytes) = size_bytes {
        validate_share(name, bytes).map_err(invalid)?;
    }
    Ok(VolumeMount {
        name: name.to_owned(),
        path: path.to_owned(),
        size_bytes,
    })
}

/// Prints millicores the way [`parse_cpu`] reads them: `1500m`.
pub fn format_cpu(millis: u64) -> String {
    format!("{millis}m")
}

/// Prints a byte count with the largest binary unit that keeps it readable:
/// `512 MiB`, `1.5 GiB`, `4 GiB`, `100 B`.
pub fn format_memory(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if bytes >= size {
            let tenths = (u128::from(bytes) * 10 / u128::from(size)) as u64;
            return if tenths.is_multiple_of(10) {
                format!("{} {name}", tenths / 10)
            } else {
                format!("{}.{} {name}", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{bytes} B")
}

fn too_large(kind: &'static str, input: &str) -> QuantityError {
    QuantityError::TooLarge {
        kind,
        input: input.to_owned(),
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Splits `12.345` into `("12", "345")`; `12` into `("12", "")`; `.5` into `("0", "5")`.
/// Refuses signs, exponents, empty parts and anything but ASCII digits.
fn split_decimal(s: &str) -> Option<(&str, &str)> {
    match s.split_once('.') {
        None => is_digits(s).then_some((s, "")),
        Some((whole, frac)) => {
            let whole = if whole.is_empty() { "0" } else { whole };
            (is_digits(whole) && is_digits(frac)).then_some((whole, frac))
        }
    }
}

/// `0.<frac>` × `scale`, rounded down, computed exactly on integers. Only the first 18
/// digits count: 10^18 × 2^40 fits a u128, and no quantity here resolves finer.
fn fraction_of(frac: &str, scale: u128) -> u128 {
    let digits = &frac[..frac.len().min(18)];
    let mut numerator: u128 = 0;
    let mut denominator: u128 = 1;
    for b in digits.bytes() {
        numerator = numerator * 10 + u128::from(b - b'0');
        denominator *= 10;
    }
    numerator * scale / denominator
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_table() {
        let cases: &[(&str, Option<u32>)] = &[
            ("500m", Some(500)),
            ("1m", Some(1)),
            ("4000m", Some(4000)),
            ("0.5", Some(500)),
            (".25", Some(250)),
            ("2", Some(2000)),
            ("1.25", Some(1250)),
            ("1.500", Some(1500)),
            ("1.5000", Some(1500)),
            (" 750m ", Some(750)),
            ("0", None),
            ("0m", None),
            ("0.0", None),
            ("0.0005", None),
            ("1.2345", None),
            ("-1", None),
            ("+1", None),
            ("1e3", None),
            ("m", None),
            ("", None),
            ("1.", None),
            ("1 core", None),
            ("500M", None),
            ("5000000000m", None),
            ("4294967", Some(4_294_967_000)),
            ("4294968", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_cpu(input).ok(), *expected, "input {input:?}");
        }
    }

    #[test]
    fn memory_table() {
        const K: u64 = 1 << 10;
        const M: u64 = 1 << 20;
        const G: u64 = 1 << 30;
        let cases: &[(&str, Option<u64>)] = &[
            ("256M", Some(256 * M)),
            ("256m", Some(256 * M)),
            ("256MB", Some(256 * M)),
            ("256MiB", Some(256 * M)),
            ("256mib", Some(256 * M)),
            ("4GB", Some(4 * G)),
            ("4G", Some(4 * G)),
            ("1GiB", Some(G)),
            ("1.5G", Some(3 * G / 2)),
            ("0.5GiB", Some(G / 2)),
            ("64k", Some(64 * K)),
            ("1T", Some(1 << 40)),
            ("1048576", Some(M)),
            ("100B", Some(100)),
            ("256 M", Some(256 * M)),
            ("0.1K", Some(102)),
            ("0", None),
            ("0M", None),
            ("M", None),
            ("", None),
            ("-1G", None),
            ("1X", None),
            ("1GiBs", None),
            ("1.2.3G", None),
            ("99999999999T", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_memory(input).ok(), *expected, "input {input:?}");
        }
    }

    #[test]
    fn errors_quote_the_input_and_the_forms() {
        let err = parse_memory("lots").expect_err("not a size");
        assert!(err.to_string().contains("\"lots\""), "{err}");
        assert!(err.to_string().contains("256M"), "{err}");
        let err = parse_cpu("0.0001").expect_err("finer than 1m");
        assert!(err.to_string().contains("finer than 1m"), "{err}");
    }

    #[test]
    fn volume_table() {
        let ok = [
            ("data:/data", ("data", "/data", None)),
            (
                "data:/var/lib/notes:2G",
                ("data", "/var/lib/notes", Some(2 << 30)),
            ),
            ("db-1:/srv/db:512MiB", ("db-1", "/srv/db", Some(512 << 20))),
        ];
        for (input, (name, path, size)) in ok {
            let v = parse_volume(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                (v.name.as_str(), v.path.as_str(), v.size_bytes),
                (name, path, size)
            );
        }
        for (input, kind) in [
            ("data", "Syntax"),
            ("", "Syntax"),
            ("data:/x:1G:extra", "Syntax"),
            ("../x:/x", "Invalid"),
            ("/abs:/x", "Invalid"),
            ("docker.sock:/x", "Invalid"),
            ("data:relative", "Invalid"),
            ("data:/proc/x", "Invalid"),
            ("data:/", "Invalid"),
            ("data:/x/", "Invalid"),
            (":/x", "Invalid"),
            ("data:/x:0", "Size"),
            ("data:/x:512K", "Invalid"),
            ("data:/my data", "Invalid"),
            ("data:/x:lots", "Size"),
            ("data:/x:", "Size"),
        ] {
            let got = parse_volume(input);
            assert!(
                got.as_ref()
                    .is_err_and(|e| format!("{e:?}").starts_with(kind)),
                "{input}: {got:?}, expected {kind}"
            );
        }
        let msg = parse_volume("data:/proc/x")
            .expect_err("refused")
            .to_string();
        assert!(
            msg.contains("/proc") && msg.contains("data:/proc/x"),
            "{msg}"
        );
    }

    #[test]
    fn format_round_trips_through_parse() {
        assert_eq!(format_memory(4 << 30), "4 GiB");
        assert_eq!(format_memory(3 << 29), "1.5 GiB");
        assert_eq!(format_memory(512 << 20), "512 MiB");
        assert_eq!(format_memory(100), "100 B");
        assert_eq!(format_cpu(1500), "1500m");
        for bytes in [1u64 << 20, 256 << 20, 4 << 30, 3 << 29] {
            let printed = format_memory(bytes).replace(' ', "");
            assert_eq!(parse_memory(&printed), Ok(bytes), "{printed}");
        }
        assert_eq!(parse_cpu(&format_cpu(1500)), Ok(1500));
    }
}
