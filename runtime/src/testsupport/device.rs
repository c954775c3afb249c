//! [`FakeDevice`]: a device node made with `mknod` in a temporary directory, so tests can
//! pass a "serial port" into a container without hardware. A node with the numbers of
//! `/dev/zero` (1:5) behaves like it; one with those of `/dev/null` (1:3) like that. It needs
//! CAP_MKNOD (root) and a filesystem not mounted `nodev`; without them the constructor fails
//! and says so — a test never passes silently without its device.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::{Gid, chown};

use super::TestSupportError;

/// A device node in its own temporary directory, removed on drop.
#[derive(Debug)]
pub struct FakeDevice {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl FakeDevice {
    /// A character device `name` with numbers `major:minor`, mode 0666, root's group.
    pub fn char(name: &str, major: u64, minor: u64) -> Result<FakeDevice, TestSupportError> {
        Self::make(name, SFlag::S_IFCHR, major, minor)
    }

    /// A block device `name` with numbers `major:minor` (to test that disks are refused).
    pub fn block(name: &str, major: u64, minor: u64) -> Result<FakeDevice, TestSupportError> {
        Self::make(name, SFlag::S_IFBLK, major, minor)
    }

    fn make(
        name: &str,
        kind: SFlag,
        major: u64,
        minor: u64,
    ) -> Result<FakeDevice, TestSupportError> {
        let dir = tempfile::Builder::new().prefix("pc-fake-dev-").tempdir()?;
        let path = dir.path().join(name);
        mknod(
            &path,
            kind,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|errno| TestSupportError::Mknod {
            path: path.clone(),
            errno,
        })?;
        // mknod applies the umask: set the mode asked for.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        Ok(FakeDevice { dir, path })
    }

    /// The node's path on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary directory holding the node (for symlinks beside it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Gives the node to group `gid` with `mode` (e.g. `0o660`, as udev does for dialout).
    pub fn set_group(&self, gid: u32, mode: u32) -> Result<(), TestSupportError> {
        chown(&self.path, None, Some(Gid::from_raw(gid))).map_err(|errno| {
            TestSupportError::Mknod {
                path: self.path.clone(),
                errno,
            }
        })?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }
}
