//! Looking at a device node the machine's owner granted before it is mapped into a container:
//! [`probe_device`] resolves symlinks (`/dev/serial/by-id/…` → `/dev/ttyACM0`, at each
//! deploy, since USB devices come and go), accepts only character devices (a block device is
//! a disk, and a disk is never passed through), and refuses the nodes that would open the
//! host itself whatever the owner wrote: memory (`mem`, `kmem`, `port`), the kernel log, the
//! consoles and virtual terminals, and other sessions' terminals. What remains is mapped with
//! a device-cgroup rule for its own major:minor only (see the `sandbox` module).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::spec::{DeviceAccess, DeviceBinding};

/// A character device node as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedDevice {
    /// The node, all symlinks resolved.
    pub path: PathBuf,
    /// Major device number.
    pub major: u64,
    /// Minor device number.
    pub minor: u64,
    /// The node's group (e.g. `dialout`, `video`).
    pub gid: u32,
    /// What it most likely is, from its major number (for messages and logs only).
    pub kind: DeviceKind,
}

/// What a character device most likely is, going by the Linux major numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A serial port: `ttyACM*` (166), `ttyUSB*` (188), `ttyAMA*`/`ttyS*` on boards (204).
    Serial,
    /// A video4linux device (81): cameras, capture cards.
    Video,
    /// A GPU node: DRI (226) or NVIDIA (195).
    Gpu,
    /// Anything else.
    Other,
}

/// A node that is not mapped.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Nothing at the path (or a dangling symlink): unplugged, or a typo.
    #[error("device {path} is not present on this machine now ({source})")]
    Missing {
        /// The path as configured.
        path: PathBuf,
        /// What the lookup said.
        #[source]
        source: std::io::Error,
    },
    /// A regular file, directory, fifo or socket.
    #[error("{path} is a {what}, not a device node: grant a character device such as /dev/ttyACM0")]
    NotCharDevice {
        /// The resolved path.
        path: PathBuf,
        /// `regular file`, `directory`, …
        what: &'static str,
    },
    /// A block device: disks are never passed through.
    #[error(
        "{path} is a block device (a disk): block devices are never passed into a container; give apps data through volumes"
    )]
    Block {
        /// The resolved path.
        path: PathBuf,
    },
    /// A node on the denylist.
    #[error(
        "{path} ({major}:{minor}, {what}) would give a container access to the host itself and is never passed through"
    )]
    Denied {
        /// The resolved path.
        path: PathBuf,
        /// Major number.
        major: u64,
        /// Minor number.
        minor: u64,
        /// What it is.
        what: &'static str,
    },
}

impl ProbedDevice {
    /// The binding that maps this node at `container_path` with `access`; its group goes
    /// along when it is not root's.
    pub fn binding(&self, container_path: String, access: DeviceAccess) -> DeviceBinding {
        DeviceBinding {
            host_path: self.path.clone(),
            container_path,
            access,
            gid: (self.gid != 0).then_some(self.gid),
        }
    }
}

/// Resolves `path` and checks that it is a character device that may be passed through.
pub fn probe_device(path: &Path) -> Result<ProbedDevice, DeviceError> {
    let missing = |source| DeviceError::Missing {
        path: path.to_path_buf(),
        source,
    };
    let resolved = std::fs::canonicalize(path).map_err(missing)?;
    let meta = std::fs::metadata(&resolved).map_err(missing)?;
    let file_type = meta.file_type();
    if file_type.is_block_device() {
        return Err(DeviceError::Block { path: resolved });
    }
    if !file_type.is_char_device() {
        let what = if file_type.is_dir() {
            "directory"
        } else if file_type.is_fifo() {
            "fifo"
        } else if file_type.is_socket() {
            "socket"
        } else {
            "regular file"
        };
        return Err(DeviceError::NotCharDevice {
            path: resolved,
            what,
        });
    }
    let rdev = meta.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    if let Some(what) = denied(major, minor) {
        return Err(DeviceError::Denied {
            path: resolved,
            major,
            minor,
            what,
        });
    }
    Ok(ProbedDevice {
        path: resolved,
        major,
        minor,
        gid: meta.gid(),
        kind: kind_of(major),
    })
}

/// Why the character device `major:minor` is never passed through, if it is not.
fn denied(major: u64, minor: u64) -> Option<&'static str> {
    match (major, minor) {
        (1, 1) => Some("mem: physical memory"),
        (1, 2) => Some("kmem: kernel memory"),
        (1, 4) => Some("port: I/O ports"),
        (1, 11) => Some("kmsg: the kernel log"),
        (4, _) => Some("a virtual console or legacy terminal"),
        (5, 0) => Some("tty: the controlling terminal"),
        (5, 1) => Some("console: the system console"),
        (5, 2) => Some("ptmx: the host's pseudo-terminal multiplexer"),
        (136..=143, _) => Some("a pseudo-terminal of a session on the host"),
        _ => None,
    }
}

fn kind_of(major: u64) -> DeviceKind {
    match major {
        166 | 188 | 204 => DeviceKind::Serial,
        81 => DeviceKind::Video,
        195 | 226 => DeviceKind::Gpu,
        _ => DeviceKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_denylist_table() {
        for (major, minor) in [
            (1, 1),
            (1, 2),
            (1, 4),
            (1, 11),
            (4, 0),
            (4, 64),
            (5, 0),
            (5, 1),
            (5, 2),
            (136, 3),
        ] {
            assert!(denied(major, minor).is_some(), "{major}:{minor}");
        }
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 8),
            (1, 9),
            (166, 0),
            (188, 0),
            (81, 0),
            (226, 128),
            (10, 232),
        ] {
            assert_eq!(denied(major, minor), None, "{major}:{minor}");
        }
    }

    #[test]
    fn host_nodes_probe_as_expected() {
        // /dev/null (1:3) and /dev/zero (1:5) are on every Linux host.
        let null = probe_device(Path::new("/dev/null")).expect("/dev/null is a char device");
        assert_eq!((null.major, null.minor), (1, 3));
        assert_eq!(null.path, Path::new("/dev/null"));
        assert_eq!(null.kind, DeviceKind::Other);
        let binding = null.binding("/dev/sink".into(), DeviceAccess::Rw);
        assert_eq!(binding.gid, (null.gid != 0).then_some(null.gid));
        assert_eq!(binding.container_path, "/dev/sink");
        assert!(matches!(
            probe_device(Path::new("/dev/mem")),
            Err(DeviceError::Denied {
                major: 1,
                minor: 1,
                ..
            }) | Err(DeviceError::Missing { .. })
        ));
        assert!(matches!(
            probe_device(Path::new("/dev/console")),
            Err(DeviceError::Denied { .. }) | Err(DeviceError::Missing { .. })
        ));
        let missing = probe_device(Path::new("/dev/peercompute-no-such-node"));
        assert!(
            matches!(&missing, Err(DeviceError::Missing { .. })),
            "{missing:?}"
        );
        let message = missing.expect_err("missing").to_string();
        assert!(
            message.contains("not present on this machine now"),
            "{message}"
        );
        let dir = probe_device(Path::new("/dev"));
        assert!(matches!(
            dir,
            Err(DeviceError::NotCharDevice {
                what: "directory",
                ..
            })
        ));
        let file = probe_device(Path::new("/proc/self/status"));
        assert!(matches!(
            file,
            Err(DeviceError::NotCharDevice {
                what: "regular file",
                ..
            })
        ));
    }

    #[test]
    fn fake_nodes_symlinks_resolved_block_devices_refused() {
        use crate::testsupport::FakeDevice;
        let arm = FakeDevice::char("arm", 1, 5).unwrap_or_else(|err| panic!("{err}"));
        let link = arm.dir().join("by-id-arm");
        std::os::unix::fs::symlink(arm.path(), &link).expect("symlink");
        let probed = probe_device(&link).expect("a char device");
        assert_eq!(probed.path, arm.path().canonicalize().expect("resolved"));
        assert_eq!((probed.major, probed.minor), (1, 5));
        arm.set_group(4242, 0o660)
            .unwrap_or_else(|err| panic!("{err}"));
        let probed = probe_device(arm.path()).expect("a char device");
        assert_eq!(probed.gid, 4242);
        assert_eq!(
            probed.binding("/dev/arm".into(), DeviceAccess::R).gid,
            Some(4242)
        );
        let disk = FakeDevice::block("disk", 7, 0).unwrap_or_else(|err| panic!("{err}"));
        let refused = probe_device(disk.path());
        assert!(
            matches!(refused, Err(DeviceError::Block { .. })),
            "{refused:?}"
        );
        let kmem = FakeDevice::char("kmem", 1, 2).unwrap_or_else(|err| panic!("{err}"));
        let refused = probe_device(kmem.path())
            .expect_err("kmem is denied")
            .to_string();
        assert!(refused.contains("1:2, kmem"), "{refused}");
        let dangling = arm.dir().join("gone");
        std::os::unix::fs::symlink("/dev/peercompute-unplugged", &dangling).expect("symlink");
        assert!(matches!(
            probe_device(&dangling),
            Err(DeviceError::Missing { .. })
        ));
    }
}
