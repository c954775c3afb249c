//! Rules of control-plane messages beyond their types: Docker image reference syntax, env
//! limits, deployment ids, log tails. They run on decode (a provider never sees a message that
//! breaks them) and on encode (a client learns about its mistake before sending).
//!
//! Image references follow the Docker distribution grammar:
//! `[host[:port]/]path-component(/path-component)*[:tag][@algorithm:hex]`, where a path
//! component is lowercase alphanumerics joined by `.`, `_`, `__` or runs of `-`, a tag is
//! `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, and the first component is a host when it contains
//! `.` or `:`, is `localhost`, or has an uppercase letter.

use std::net::Ipv6Addr;

use super::messages::EnvVar;
use crate::name::NameError;

/// Longest image reference accepted, in bytes.
pub const MAX_IMAGE_REF: usize = 512;
/// Longest image name (host and path, without tag and digest), as Docker allows.
const MAX_IMAGE_NAME: usize = 255;
/// Most environment variables in one deploy request.
pub const MAX_ENV_VARS: usize = 64;
/// Most bytes of environment (`KEY=value\0` for every variable) in one deploy request.
pub const MAX_ENV_BYTES: usize = 32 * 1024;
/// Longest deployment id (or name) a request may carry.
pub const MAX_DEPLOYMENT_ID: usize = 128;
/// Largest `tail` of a logs request.
pub const MAX_LOG_TAIL: u32 = 100_000;

/// Why a message breaks a rule of the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    #[error("`{image}` is not a valid image reference: {reason}")]
    Image { image: String, reason: &'static str },
    #[error("invalid deployment name: {0}")]
    Name(#[from] NameError),
    #[error("port 0 cannot be published; give the port the container listens on")]
    PortZero,
    #[error("`{0}` is 0; leave it out to get the provider's default")]
    Zero(&'static str),
    #[error("environment variable #{index} has an empty key")]
    EnvKeyEmpty { index: usize },
    #[error("environment key {key:?} contains {ch:?}, which keys cannot contain")]
    EnvKeyChar { key: String, ch: char },
    #[error("the value of environment variable `{key}` contains a NUL byte")]
    EnvValueNul { key: String },
    #[error("environment variable `{key}` is given twice")]
    EnvDuplicate { key: String },
    #[error("{count} environment variables, at most {max} are allowed")]
    TooManyEnv { count: usize, max: usize },
    #[error("the environment is {bytes} bytes, at most {max} are allowed")]
    EnvTooLarge { bytes: usize, max: usize },
    #[error("{id:?} is not a deployment id: {reason}")]
    DeploymentId { id: String, reason: &'static str },
    #[error("tail of {tail} lines, at most {max} are allowed")]
    TailTooLarge { tail: u32, max: u32 },
    #[error("`{0}` is not a finite number")]
    NotFinite(&'static str),
    #[error("`{name}` is not a volume name: {reason}; use [a-z0-9][a-z0-9-]{{0,31}}")]
    VolumeName { name: String, reason: &'static str },
    #[error("`{path}` cannot be a mount path: {reason}")]
    MountPath { path: String, reason: &'static str },
    #[error("{count} volumes, at most {max} are allowed")]
    TooManyVolumes { count: usize, max: usize },
    #[error("volume `{name}` is given twice")]
    VolumeDuplicate { name: String },
    #[error("mount paths `{path}` and `{other}` overlap: volumes need distinct, non-nested paths")]
    VolumePathsOverlap { path: String, other: String },
    #[error(
        "volume `{volume}` asks for a share of {bytes} bytes, at least {min} (1M) are needed; leave the size out to get the provider's default"
    )]
    VolumeShareTooSmall {
        volume: String,
        bytes: u64,
        min: u64,
    },
    #[error("volume_exclusive is set but no volume is asked for")]
    ExclusiveWithoutVolumes,
    #[error(
        "`{name}` is not a device name: ask for a device by the name the provider's owner granted (e.g. --device arm); paths are never accepted"
    )]
    DevicePath { name: String },
    #[error("`{name}` is not a device name: {reason}")]
    DeviceName { name: String, reason: &'static str },
    #[error("{count} devices, at most {max} are allowed")]
    TooManyDevices { count: usize, max: usize },
    #[error("device `{name}` is given twice")]
    DeviceDuplicate { name: String },
    #[error("`{volume}` is not a volume: {reason}")]
    VolumeRef { volume: String, reason: String },
    #[error("`{0}` is not a SHA-256: give 64 lowercase hex digits")]
    Sha256(String),
}

/// Checks a Docker image reference (see the module docs for the grammar).
pub fn validate_image_ref(image: &str) -> Result<(), InvalidMessage> {
    image_problem(image).map_or(Ok(()), |reason| {
        Err(InvalidMessage::Image {
            image: image.to_owned(),
            reason,
        })
    })
}

fn image_problem(image: &str) -> Option<&'static str> {
    if image.is_empty() {
        return Some("it is empty");
    }
    if image.len() > MAX_IMAGE_REF {
        return Some("it is longer than 512 bytes");
    }
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if digest.is_some_and(|d| !digest_ok(d)) {
        return Some("the digest is not `algorithm:hex` with at least 32 hex digits");
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if tag.is_some_and(|t| !tag_ok(t)) {
        return Some("the tag is not [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
    }
    if name.is_empty() {
        return Some("the name is empty");
    }
    if name.len() > MAX_IMAGE_NAME {
        return Some("the name is longer than 255 bytes");
    }
    let mut components = name.split('/').peekable();
    let first = components.next().unwrap_or_default();
    let has_more = components.peek().is_some();
    let first_is_host = has_more
        && (first.contains(['.', ':'])
            || first == "localhost"
            || first.bytes().any(|b| b.is_ascii_uppercase()));
    if first_is_host {
        if !host_ok(first) {
            return Some("the registry host is not `host[:port]`");
        }
    } else if !path_component_ok(first) {
        return Some("a path component is not lowercase letters and digits joined by . _ __ or -");
    }
    if components.any(|c| !path_component_ok(c)) {
        return Some("a path component is not lowercase letters and digits joined by . _ __ or -");
    }
    None
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or `-+`.
fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) if lower_alnum(f) && lower_alnum(l) => {}
        _ => return false,
    }
    let mut i = 0;
    while i < b.len() {
        if lower_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !lower_alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `domain-name[:port]` or `[ipv6][:port]`.
fn host_ok(host: &str) -> bool {
    let (name, port) = if let Some(inner) = host.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return false;
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if let Some(port) = port {
        let digits =
            !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if !digits || port.parse::<u16>().is_err() {
            return false;
        }
    }
    name.is_empty() && host.starts_with('[') || name.split('.').all(domain_component_ok)
}

/// `[A-Za-z0-9]` or `[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]`.
fn domain_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
}

fn tag_ok(tag: &str) -> bool {
    let b = tag.as_bytes();
    let first_ok = b
        .first()
        .is_some_and(|f| f.is_ascii_alphanumeric() || *f == b'_');
    first_ok
        && b.len() <= 128
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || b"_.-".contains(x))
}

/// `algorithm:hex`, algorithm = `[A-Za-z][A-Za-z0-9]*` components joined by `+ . _ -`.
fn digest_ok(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['+', '.', '_', '-']).all(|c| {
        c.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && c.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Env rules: keys non-empty, without `=` or NUL, unique; values without NUL; at most
/// [`MAX_ENV_VARS`] variables and [`MAX_ENV_BYTES`] bytes in all.
pub(super) fn validate_env(env: &[EnvVar]) -> Result<(), InvalidMessage> {
    if env.len() > MAX_ENV_VARS {
        return Err(InvalidMessage::TooManyEnv {
            count: env.len(),
            max: MAX_ENV_VARS,
        });
    }
    let bytes: usize = env.iter().map(|v| v.key.len() + v.value.len() + 2).sum();
    if bytes > MAX_ENV_BYTES {
        return Err(InvalidMessage::EnvTooLarge {
            bytes,
            max: MAX_ENV_BYTES,
        });
    }
    for (index, var) in env.iter().enumerate() {
        if var.key.is_empty() {
            return Err(InvalidMessage::EnvKeyEmpty { index });
        }
        if let Some(ch) = var.key.chars().find(|c| *c == '=' || *c == '\0') {
            return Err(InvalidMessage::EnvKeyChar {
                key: var.key.clone(),
                ch,
            });
        }
        if var.value.contains('\0') {
            return Err(InvalidMessage::EnvValueNul {
                key: var.key.clone(),
            });
        }
        if env[..index].iter().any(|earlier| earlier.key == var.key) {
            return Err(InvalidMessage::EnvDuplicate {
                key: var.key.clone(),
            });
        }
    }
    Ok(())
}

/// A deployment id (or name) as requests carry it: 1 to [`MAX_DEPLOYMENT_ID`] bytes of
/// `[A-Za-z0-9_.-]`, not starting with `-` or `.`.
pub fn validate_deployment_id(id: &str) -> Result<(), InvalidMessage> {
    let reason = if id.is_empty() {
        Some("it is empty")
    } else if id.len() > MAX_DEPLOYMENT_ID {
        Some("it is longer than 128 bytes")
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        Some("only letters, digits, `_`, `.` and `-` are allowed")
    } else if id.starts_with(['-', '.']) {
        Some("it starts with `-` or `.`")
    } else {
        None
    };
    reason.map_or(Ok(()), |reason| {
        Err(InvalidMessage::DeploymentId {
            id: id.to_owned(),
            reason,
        })
    })
}

pub(super) fn validate_tail(tail: Option<u32>) -> Result<(), InvalidMessage> {
    match tail {
        Some(tail) if tail > MAX_LOG_TAIL => Err(InvalidMessage::TailTooLarge {
            tail,
            max: MAX_LOG_TAIL,
        }),
        _ => Ok(()),
    }
}

pub(super) fn validate_finite(
    field: &'static str,
    value: Option<f64>,
) -> Result<(), InvalidMessage> {
    match value {
        Some(v) if !v.is_finite() => Err(InvalidMessage::NotFinite(field)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let good = [
            "nginx",
            "nginx:1.27",
            "library/nginx:latest",
            "docker.io/library/nginx:1.27-alpine",
            "ghcr.io/owner/app_name/sub.part:v1.2.3",
            "localhost/app",
            "localhost:5000/app:dev",
            "127.0.0.1:5000/team/app",
            "[::1]:5000/app",
            "Registry.Example.com/app",
            "a__b/c--d/e.f",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "reg:443/app:tag@sha256:0123456789abcdef0123456789abcdef",
            "localhost:5000",
            "app:_tag",
        ];
        for image in good {
            assert_eq!(validate_image_ref(image), Ok(()), "{image}");
        }
        let bad = [
            "",
            "--privileged",
            "-app",
            "Nginx",
            "nginx:",
            "nginx:-tag",
            "nginx:.tag",
            "app:has/slash",
            "/app",
            "app/",
            "app//x",
            "a___b",
            "a..b",
            "a.-b",
            "app@sha256:short",
            "app@:0123456789abcdef0123456789abcdef",
            "app@sha256:0123456789abcdef0123456789abcdeg",
            "host:99999/app",
            "host:/app",
            "-host.com/app",
            "[::1/app",
            "[nothex]:5000/app",
            "app with space",
            "app\0",
            "émoji/app",
        ];
        for image in bad {
            assert!(
                validate_image_ref(image).is_err(),
                "{image:?} must be refused"
            );
        }
        let long_tag = format!("app:{}", "t".repeat(129));
        assert!(validate_image_ref(&long_tag).is_err());
        assert!(validate_image_ref(&format!("app:{}", "t".repeat(128))).is_ok());
        let long_name = "a".repeat(256);
        assert!(validate_image_ref(&long_name).is_err());
        assert!(validate_image_ref(&"a".repeat(255)).is_ok());
        assert!(validate_image_ref(&format!("a/{}", "b".repeat(600))).is_err());
    }

    #[test]
    fn deployment_ids() {
        for id in ["a", "blog", "d-1a2b3c", "ID_9.x", &"x".repeat(128)] {
            assert_eq!(validate_deployment_id(id), Ok(()), "{id}");
        }
        for id in [
            "",
            "-x",
            ".x",
            "../etc",
            "a/b",
            "a b",
            "x\n",
            &"x".repeat(129),
        ] {
            assert!(validate_deployment_id(id).is_err(), "{id:?}");
        }
    }

    fn var(key: &str, value: &str) -> EnvVar {
        EnvVar {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn env_rules() {
        assert_eq!(validate_env(&[var("A", "1"), var("PEM", "x\ny")]), Ok(()));
        let cases: Vec<(Vec<EnvVar>, InvalidMessage)> = vec![
            (vec![var("", "x")], InvalidMessage::EnvKeyEmpty { index: 0 }),
            (
                vec![var("A=B", "x")],
                InvalidMessage::EnvKeyChar {
                    key: "A=B".into(),
                    ch: '=',
                },
            ),
            (
                vec![var("A\0", "x")],
                InvalidMessage::EnvKeyChar {
                    key: "A\0".into(),
                    ch: '\0',
                },
            ),
            (
                vec![var("A", "x\0y")],
                InvalidMessage::EnvValueNul { key: "A".into() },
            ),
            (
                vec![var("A", "1"), var("A", "2")],
                InvalidMessage::EnvDuplicate { key: "A".into() },
            ),
            (
                (0..65).map(|i| var(&format!("K{i}"), "")).collect(),
                InvalidMessage::TooManyEnv { count: 65, max: 64 },
            ),
            (
                vec![var("BIG", &"x".repeat(MAX_ENV_BYTES - 4))],
                InvalidMessage::EnvTooLarge {
                    bytes: MAX_ENV_BYTES + 1,
                    max: MAX_ENV_BYTES,
                },
            ),
        ];
        for (env, expected) in cases {
            assert_eq!(validate_env(&env), Err(expected));
        }
        let exactly_max = [var("BIG", &"x".repeat(MAX_ENV_BYTES - 5))];
        assert_eq!(validate_env(&exactly_max), Ok(()));
        let max_count: Vec<_> = (0..64).map(|i| var(&format!("K{i}"), "")).collect();
        assert_eq!(validate_env(&max_count), Ok(()));
    }

    #[test]
    fn tail_and_floats() {
        assert_eq!(validate_tail(Some(MAX_LOG_TAIL)), Ok(()));
        assert!(validate_tail(Some(MAX_LOG_TAIL + 1)).is_err());
        assert_eq!(validate_finite("f", Some(1.5)), Ok(()));
        assert!(validate_finite("f", Some(f64::NAN)).is_err());
        assert!(validate_finite("f", Some(f64::INFINITY)).is_err());
    }
}
