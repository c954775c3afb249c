//! Rules of what a deploy request may attach: named volumes and granted devices. Nothing here
//! can name a host path. A volume name is `[a-z0-9][a-z0-9-]{0,31}`, so `..`, `/`,
//! `docker.sock` and `:` are refused by construction; the provider derives the engine's
//! volume name from it, never uses it as a path. A mount path is absolute and normalized and
//! stays out of `/proc`, `/sys`, `/dev` and the files the engine manages in `/etc`; it is
//! printable ASCII without spaces, `\`, `:` or `,` (the runtime's rule for mount targets).
//! A volume's share is at least [`MIN_VOLUME_SHARE`]. A device
//! is asked for by the name the provider's owner granted (a DNS label), never by its path.

use super::messages::VolumeMount;
use super::validate::InvalidMessage;

/// Most volumes one deployment may mount.
pub const MAX_VOLUMES: usize = 8;
/// Most devices one deployment may ask for.
pub const MAX_DEVICES: usize = 8;
/// Longest volume or device name, in bytes.
pub const MAX_ATTACH_NAME: usize = 32;
/// Longest mount path, in bytes.
pub const MAX_MOUNT_PATH: usize = 255;
/// Smallest share a volume may ask for (1 MiB): an empty volume already takes a few KiB of
/// disk, so a smaller share would be over its share before the app wrote anything.
pub const MIN_VOLUME_SHARE: u64 = 1 << 20;

/// Trees a volume may not be mounted in or over (the kernel's and the engine's).
const FORBIDDEN_TREES: [&str; 3] = ["/proc", "/sys", "/dev"];
/// Files the engine writes into every container.
const FORBIDDEN_FILES: [&str; 3] = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

/// Checks a request's volumes, devices and `volume_exclusive` together.
pub(crate) fn validate_attachments(
    volumes: &[VolumeMount],
    devices: &[String],
    volume_exclusive: bool,
) -> Result<(), InvalidMessage> {
    if volumes.len() > MAX_VOLUMES {
        return Err(InvalidMessage::TooManyVolumes {
            count: volumes.len(),
            max: MAX_VOLUMES,
        });
    }
    for (i, volume) in volumes.iter().enumerate() {
        validate_volume_name(&volume.name)?;
        validate_mount_path(&volume.path)?;
        if let Some(bytes) = volume.size_bytes {
            validate_share(&volume.name, bytes)?;
        }
        for earlier in &volumes[..i] {
            if earlier.name == volume.name {
                return Err(InvalidMessage::VolumeDuplicate {
                    name: volume.name.clone(),
                });
            }
            if nested(&earlier.path, &volume.path) || nested(&volume.path, &earlier.path) {
                return Err(InvalidMessage::VolumePathsOverlap {
                    path: volume.path.clone(),
                    other: earlier.path.clone(),
                });
            }
        }
    }
    if volume_exclusive && volumes.is_empty() {
        return Err(InvalidMessage::ExclusiveWithoutVolumes);
    }
    if devices.len() > MAX_DEVICES {
        return Err(InvalidMessage::TooManyDevices {
            count: devices.len(),
            max: MAX_DEVICES,
        });
    }
    for (i, device) in devices.iter().enumerate() {
        validate_device_name(device)?;
        if devices[..i].contains(device) {
            return Err(InvalidMessage::DeviceDuplicate {
                name: device.clone(),
            });
        }
    }
    Ok(())
}

/// Checks a volume's share: at least [`MIN_VOLUME_SHARE`].
pub fn validate_share(volume: &str, bytes: u64) -> Result<(), InvalidMessage> {
    if bytes < MIN_VOLUME_SHARE {
        return Err(InvalidMessage::VolumeShareTooSmall {
            volume: volume.to_owned(),
            bytes,
            min: MIN_VOLUME_SHARE,
        });
    }
    Ok(())
}

/// Checks a volume name: `[a-z0-9][a-z0-9-]{0,31}`.
pub fn validate_volume_name(name: &str) -> Result<(), InvalidMessage> {
    name_problem(name, false).map_or(Ok(()), |reason| {
        Err(InvalidMessage::VolumeName {
            name: name.to_owned(),
            reason,
        })
    })
}

/// Checks a mount path (see the module docs).
pub fn validate_mount_path(path: &str) -> Result<(), InvalidMessage> {
    mount_path_problem(path).map_or(Ok(()), |reason| {
        Err(InvalidMessage::MountPath {
            path: path.to_owned(),
            reason,
        })
    })
}

fn mount_path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("it is not absolute (start it with `/`)");
    }
    if path == "/" {
        return Some("a volume cannot be mounted over the whole file system");
    }
    if path.len() > MAX_MOUNT_PATH {
        return Some("it is longer than 255 bytes");
    }
    // The runtime re-checks every target with this same rule (printable ASCII without space,
    // backslash, `:` or `,`), so a path the wire accepts never fails after the pull.
    if !path
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"\\:,".contains(&b))
    {
        return Some("only printable ASCII without spaces, `\\`, `:` or `,` is allowed");
    }
    if path.ends_with('/') {
        return Some("it ends with `/`");
    }
    for segment in path[1..].split('/') {
        match segment {
            "" => return Some("it contains `//`"),
            "." | ".." => return Some("it contains a `.` or `..` segment"),
            _ => {}
        }
    }
    if FORBIDDEN_TREES.iter().any(|tree| nested(tree, path)) {
        return Some("/proc, /sys and /dev belong to the kernel and the engine");
    }
    if FORBIDDEN_FILES.contains(&path) {
        return Some("the engine writes /etc/hosts, /etc/hostname and /etc/resolv.conf");
    }
    None
}

/// Checks a device name: a DNS label of at most 32 bytes. A path gets its own message.
pub fn validate_device_name(name: &str) -> Result<(), InvalidMessage> {
    if name.contains('/') {
        return Err(InvalidMessage::DevicePath {
            name: name.to_owned(),
        });
    }
    name_problem(name, true).map_or(Ok(()), |reason| {
        Err(InvalidMessage::DeviceName {
            name: name.to_owned(),
            reason,
        })
    })
}

/// `[a-z0-9][a-z0-9-]*` of at most 32 bytes; a DNS label (`dns`) does not end with `-` either.
fn name_problem(name: &str, dns: bool) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_ATTACH_NAME {
        Some("it is longer than 32 bytes")
    } else if !name.bytes().all(|b| lower_alnum(b) || b == b'-') {
        Some("only lowercase letters, digits and `-` are allowed (it is a name, not a path)")
    } else if name.starts_with('-') || (dns && name.ends_with('-')) {
        Some("it starts or ends with `-`")
    } else {
        None
    }
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Whether `inner` is `outer` or lies under it (normalized absolute paths).
fn nested(outer: &str, inner: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(name: &str, path: &str) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            path: path.into(),
            size_bytes: None,
        }
    }

    fn check(volumes: &[VolumeMount], devices: &[&str], exclusive: bool) -> Result<(), String> {
        let devices: Vec<String> = devices.iter().map(|d| (*d).to_owned()).collect();
        validate_attachments(volumes, &devices, exclusive).map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn volume_table() {
        let nine: Vec<VolumeMount> = (0..9)
            .map(|i| volume(&format!("v{i}"), &format!("/d{i}")))
            .collect();
        let eight = &nine[..8];
        let sized = |size| VolumeMount {
            size_bytes: Some(size),
            ..volume("data", "/data")
        };
        let ok: Vec<Vec<VolumeMount>> = vec![
            vec![],
            vec![volume("data", "/var/lib/notes")],
            vec![volume("0", "/a")],
            vec![volume("a-", "/a")],
            vec![volume(&"a".repeat(32), &format!("/{}", "p".repeat(254)))],
            vec![volume("a", "/data"), volume("b", "/data2")],
            vec![volume("a", "/etc/app"), volume("b", "/devices")],
            vec![volume("a", "/proc2"), volume("b", "/system")],
            vec![volume("a", "/etc/hosts.d")],
            vec![sized(MIN_VOLUME_SHARE)],
            vec![volume("a", "/srv/a_b.c-d~e@f+g=h")],
            eight.to_vec(),
        ];
        for volumes in ok {
            assert_eq!(check(&volumes, &[], false), Ok(()), "{volumes:?}");
        }
        let refused: Vec<(Vec<VolumeMount>, &str)> = vec![
            (vec![volume("..", "/x")], "VolumeName"),
            (vec![volume("../x", "/x")], "VolumeName"),
            (vec![volume("/abs", "/x")], "VolumeName"),
            (vec![volume("docker.sock", "/x")], "VolumeName"),
            (vec![volume("data:/x", "/x")], "VolumeName"),
            (vec![volume("Data", "/x")], "VolumeName"),
            (vec![volume("-a", "/x")], "VolumeName"),
            (vec![volume("", "/x")], "VolumeName"),
            (vec![volume(&"a".repeat(33), "/x")], "VolumeName"),
            (vec![volume("data", "relative")], "MountPath"),
            (vec![volume("data", "")], "MountPath"),
            (vec![volume("data", "/")], "MountPath"),
            (vec![volume("data", "/proc")], "MountPath"),
            (vec![volume("data", "/proc/x")], "MountPath"),
            (vec![volume("data", "/sys/fs/cgroup")], "MountPath"),
            (vec![volume("data", "/dev")], "MountPath"),
            (vec![volume("data", "/dev/shm")], "MountPath"),
            (vec![volume("data", "/etc/hosts")], "MountPath"),
            (vec![volume("data", "/etc/hostname")], "MountPath"),
            (vec![volume("data", "/etc/resolv.conf")], "MountPath"),
            (vec![volume("data", "/data/")], "MountPath"),
            (vec![volume("data", "//data")], "MountPath"),
            (vec![volume("data", "/a//b")], "MountPath"),
            (vec![volume("data", "/a/./b")], "MountPath"),
            (vec![volume("data", "/a/../proc")], "MountPath"),
            (vec![volume("data", "/a:b")], "MountPath"),
            (vec![volume("data", "/a\nb")], "MountPath"),
            (
                vec![volume("data", &format!("/{}", "p".repeat(255)))],
                "MountPath",
            ),
            (
                vec![volume("data", "/a"), volume("data", "/b")],
                "VolumeDuplicate",
            ),
            (
                vec![volume("a", "/data"), volume("b", "/data")],
                "VolumePathsOverlap",
            ),
            (
                vec![volume("a", "/data"), volume("b", "/data/sub")],
                "VolumePathsOverlap",
            ),
            (
                vec![volume("a", "/data/sub"), volume("b", "/data")],
                "VolumePathsOverlap",
            ),
            (nine.clone(), "TooManyVolumes"),
            (vec![sized(0)], "VolumeShareTooSmall"),
            (vec![sized(MIN_VOLUME_SHARE - 1)], "VolumeShareTooSmall"),
            (vec![volume("data", "/srv/my app")], "MountPath"),
            (vec![volume("data", "/srv/a\\b")], "MountPath"),
            (vec![volume("data", "/srv/a,b")], "MountPath"),
            (vec![volume("data", "/srv/caf\u{e9}")], "MountPath"),
        ];
        for (volumes, variant) in refused {
            let got = check(&volumes, &[], false);
            assert!(
                got.as_ref().is_err_and(|e| e.starts_with(variant)),
                "{volumes:?}: {got:?}, expected {variant}"
            );
        }
    }

    #[test]
    fn device_table() {
        let nine: Vec<String> = (0..9).map(|i| format!("d{i}")).collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        for devices in [
            &[][..],
            &["arm"],
            &["arm", "cam"],
            &["gpu0"],
            &["a-b"],
            &[&"a".repeat(32)],
            &nine[..8],
        ] {
            assert_eq!(check(&[], devices, false), Ok(()), "{devices:?}");
        }
        for (devices, variant) in [
            (&["/dev/kvm"][..], "DevicePath"),
            (&["ttyACM0/"], "DevicePath"),
            (&["../arm"], "DevicePath"),
            (&["ARM"], "DeviceName"),
            (&["arm-"], "DeviceName"),
            (&["-arm"], "DeviceName"),
            (&[""], "DeviceName"),
            (&["a.b"], "DeviceName"),
            (&[&"a".repeat(33)], "DeviceName"),
            (&["arm", "arm"], "DeviceDuplicate"),
            (&nine[..], "TooManyDevices"),
        ] {
            let got = check(&[], devices, false);
            assert!(
                got.as_ref().is_err_and(|e| e.starts_with(variant)),
                "{devices:?}: {got:?}, expected {variant}"
            );
        }
    }

    #[test]
    fn exclusive_needs_volumes() {
        assert_eq!(
            validate_attachments(&[], &["arm".into()], true),
            Err(InvalidMessage::ExclusiveWithoutVolumes)
        );
        assert_eq!(
            validate_attachments(&[volume("data", "/data")], &[], true),
            Ok(())
        );
    }

    #[test]
    fn a_device_path_is_answered_with_how_to_ask_for_a_device() {
        let err = validate_device_name("/dev/kvm").expect_err("a path");
        assert_eq!(
            err.to_string(),
            "`/dev/kvm` is not a device name: ask for a device by the name the provider's owner \
             granted (e.g. --device arm); paths are never accepted"
        );
    }
}
