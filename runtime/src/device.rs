//! Looking at a device node the machine's owner granted before it is mapped into a container:
//! [`probe_device`] resolves symlinks (`/dev/serial/by-id/…` → `/dev/ttyACM0`, at each
//! deploy, since USB devices come and go), accepts only character devices (a block device is
//! a disk, and a disk is never passed through), and refuses the nodes that would open the
//! host itself whatever the owner wrote: memory (`mem`, `kmem`, `port`), the kernel log, the
//! consoles and virtual terminals, other sessions' terminals, the character faces of disks
//! and flash (sg, bsg, NVMe, mtd), watchdogs, the TPM and misc control nodes (by their fixed
//! numbers, and by what sysfs says the node is). What remains is mapped with
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
    let sysfs = SysfsIdentity::of(major, minor);
    if let Some(what) = denied(major, minor).or_else(|| sysfs.denied()) {
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

/// Why the character device `major:minor` is never passed through, if it is not, by its
/// fixed Linux numbers (Documentation/admin-guide/devices.txt). Nodes with dynamic numbers
/// (watchdogN, bsg, NVMe, most misc devices) are recognised by [`SysfsIdentity`] instead.
fn denied(major: u64, minor: u64) -> Option<&'static str> {
    match (major, minor) {
        (1, 1) => Some("mem: physical memory"),
        (1, 2) => Some("kmem: kernel memory"),
        (1, 4) => Some("port: I/O ports"),
        (1, 11) => Some("kmsg: the kernel log"),
        // Minors 64 and up of major 4 are the board's serial ports (ttyS*): those may be granted.
        (4, 0..=63) => Some("a virtual console"),
        (7, _) => Some("vcs: a virtual console's screen memory"),
        (10, 130) => Some("watchdog: an app holding it open can reboot the host"),
        (10, 223) => Some("uinput: input events injected into the host's session"),
        (10, 231) => Some("snapshot: the host's hibernation image"),
        (10, 236) => Some("mapper/control: the host's device mapper"),
        (10, 237) => Some("loop-control: the host's loop devices"),
        (21, _) => Some("sg: raw SCSI access to a disk"),
        (90, _) => Some("mtd: raw access to the board's flash memory"),
        (202, _) => Some("msr: CPU model-specific registers"),
        (5, 0) => Some("tty: the controlling terminal"),
        (5, 1) => Some("console: the system console"),
        (5, 2) => Some("ptmx: the host's pseudo-terminal multiplexer"),
        (136..=143, _) => Some("a pseudo-terminal of a session on the host"),
        _ => None,
    }
}

/// What sysfs says a character device is: its subsystem (`tty`, `video4linux`, `watchdog`,
/// …) and, for misc devices, its name. Read at each probe from `/sys/dev/char/MAJ:MIN`; both
/// are `None` when sysfs has no entry (a node whose numbers no driver claims).
#[derive(Debug, Default, PartialEq, Eq)]
struct SysfsIdentity {
    subsystem: Option<String>,
    devname: Option<String>,
}

impl SysfsIdentity {
    fn of(major: u64, minor: u64) -> Self {
        let dir = PathBuf::from(format!("/sys/dev/char/{major}:{minor}"));
        let subsystem = std::fs::read_link(dir.join("subsystem"))
            .ok()
            .and_then(|link| Some(link.file_name()?.to_string_lossy().into_owned()));
        let devname = std::fs::read_to_string(dir.join("uevent"))
            .ok()
            .and_then(|uevent| {
                uevent
                    .lines()
                    .find_map(|line| line.strip_prefix("DEVNAME=").map(str::to_owned))
            });
        Self { subsystem, devname }
    }

    /// Why this device is never passed through, if it is not: the character faces of disks
    /// and flash, watchdogs, the host's TPM and console memory, and misc control nodes.
    fn denied(&self) -> Option<&'static str> {
        let by_subsystem = match self.subsystem.as_deref()? {
            "scsi_generic" => Some("sg: raw SCSI access to a disk"),
            "bsg" => Some("bsg: raw block-layer access to a disk"),
            "nvme" | "nvme-generic" => Some("raw NVMe access to a disk"),
            "mtd" | "ubi" => Some("raw access to the board's flash memory"),
            "watchdog" => Some("watchdog: an app holding it open can reboot the host"),
            "tpm" | "tpmrm" => Some("the host's TPM (its keys and measurements)"),
            "ipmi" => Some("IPMI: the machine's management controller"),
            "usbmon" => Some("usbmon: every USB transfer of the host"),
            "msr" => Some("msr: CPU model-specific registers"),
            "vc" => Some("a virtual console's screen memory"),
            _ => None,
        };
        by_subsystem.or_else(|| match self.devname.as_deref()? {
            "watchdog" => Some("watchdog: an app holding it open can reboot the host"),
            "uinput" => Some("uinput: input events injected into the host's session"),
            "loop-control" | "mapper/control" | "btrfs-control" => {
                Some("a control node of the host's storage")
            }
            "snapshot" => Some("snapshot: the host's hibernation image"),
            "nvram" => Some("nvram: the firmware's settings"),
            "cpu_dma_latency" | "vga_arbiter" | "userfaultfd" => {
                Some("a host-wide kernel control node")
            }
            _ => None,
        })
    }
}

fn kind_of(major: u64) -> DeviceKind {
    match major {
        4 | 166 | 188 | 204 => DeviceKind::Serial,
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
            (4, 63),
            (7, 1),
            (10, 130),
            (10, 237),
            (21, 0),
            (90, 0),
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
            (4, 64),
            (4, 65),
        ] {
            assert_eq!(denied(major, minor), None, "{major}:{minor}");
        }
    }

    #[test]
    fn sysfs_identities_denied_and_allowed() {
        let id = |subsystem: &str, devname: &str| SysfsIdentity {
            subsystem: Some(subsystem.into()),
            devname: Some(devname.into()),
        };
        for denied in [
            id("scsi_generic", "sg0"),
            id("bsg", "bsg/0:0:0:0"),
            id("nvme-generic", "ng0n1"),
            id("nvme", "nvme0"),
            id("watchdog", "watchdog0"),
            id("misc", "watchdog"),
            id("misc", "uinput"),
            id("misc", "btrfs-control"),
            id("mtd", "mtd0"),
            id("tpmrm", "tpmrm0"),
            id("vc", "vcs1"),
        ] {
            assert!(denied.denied().is_some(), "{denied:?}");
        }
        for allowed in [
            id("tty", "ttyACM0"),
            id("tty", "ttyS1"),
            id("video4linux", "video0"),
            id("drm", "dri/renderD128"),
            id("misc", "kvm"),
            id("misc", "net/tun"),
            id("mem", "zero"),
            id("hidraw", "hidraw0"),
            id("i2c-dev", "i2c-1"),
            SysfsIdentity::default(),
        ] {
            assert_eq!(allowed.denied(), None, "{allowed:?}");
        }
        // On this host: /dev/zero is mem/zero, and a virtual console's screen memory is vc.
        assert_eq!(
            SysfsIdentity::of(1, 5),
            id("mem", "zero"),
            "sysfs names /dev/zero"
        );
        if Path::new("/sys/dev/char/7:1").exists() {
            assert!(SysfsIdentity::of(7, 1).denied().is_some());
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
