//! A tiny file system a test can fill: a tmpfs of a few MiB (optionally few inodes) mounted on
//! a temporary directory. [`SmallDisk::fill`] writes `.filler` until the disk says ENOSPC,
//! [`SmallDisk::free`] gives space back; dropping it unmounts. Needs root (CI runs as root).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

const CHUNK: usize = 64 * 1024;
/// `fill` gives up after this many bytes (a mount that is not the small one would take them).
const MAX_FILL: u64 = 1 << 30;

/// A mounted tmpfs of a given size.
#[derive(Debug)]
pub struct SmallDisk {
    dir: tempfile::TempDir,
    filler: PathBuf,
}

/// Whether this machine can mount a small disk: root and a working `mount -t tmpfs`.
pub fn check_prerequisites() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the disk-full tests mount a tmpfs: run them as root (CI does)"
    );
    Ok(())
}

impl SmallDisk {
    /// Mounts a tmpfs of `size_bytes` (and at most `nr_inodes` files when given).
    pub fn mount(size_bytes: u64, nr_inodes: Option<u64>) -> Result<Self> {
        check_prerequisites()?;
        let dir = tempfile::tempdir().context("mount point")?;
        let mut opts = format!("size={size_bytes},mode=0755");
        if let Some(n) = nr_inodes {
            opts.push_str(&format!(",nr_inodes={n}"));
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "peercompute-small-disk"])
            .arg(dir.path())
            .output()
            .context("run mount")?;
        if !out.status.success() {
            bail!(
                "mount -t tmpfs -o {opts} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let filler = dir.path().join(".filler");
        Ok(Self { dir, filler })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `.filler` until the disk is full (down to the last byte); returns the bytes it
    /// took.
    pub fn fill(&self) -> Result<u64> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .context("open .filler")?;
        let chunk = vec![0xa5u8; CHUNK];
        let mut written = 0u64;
        let mut size = CHUNK;
        // Large chunks first, then smaller ones, so the last free page goes too.
        while written < MAX_FILL {
            match file.write(&chunk[..size]) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => {
                    if size == 1 {
                        break;
                    }
                    size = (size / 16).max(1);
                }
                Err(e) => return Err(e).context("write .filler"),
            }
        }
        ensure!(
            written < MAX_FILL,
            "{} never filled up",
            self.path().display()
        );
        Ok(written)
    }

    /// Shrinks `.filler` by `bytes` (to zero at most).
    pub fn free(&self, bytes: u64) -> Result<()> {
        let len = std::fs::metadata(&self.filler)
            .map(|m| m.len())
            .unwrap_or(0);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.filler)
            .context("open .filler")?;
        file.set_len(len.saturating_sub(bytes))
            .context("truncate .filler")
    }

    /// Free bytes on the disk, as `statvfs` says.
    pub fn available(&self) -> u64 {
        nix::sys::statvfs::statvfs(self.path())
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(0)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
