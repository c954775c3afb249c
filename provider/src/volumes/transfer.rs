//! Moving a volume's data in and out as a tar of `data/…` entries (the shape the runtime's
//! helper container reads and writes).
//!
//! An import never reaches the engine unchecked: the bytes are spooled to
//! `<home>/state/spool/<random>.tar` (0600, removed whatever happens), counted against the
//! size the signed request fixed and hashed, then the archive is read entry by entry with
//! the `tar` crate. Only regular files, directories and relative symlinks that do not
//! climb out lexically pass; every path starts `data/`, none is absolute or climbs with `..`;
//! no setuid, setgid or sticky bit; no hard link, device, fifo, sparse or contiguous file; PAX
//! records only from a closed list (the engine honours `GNU.sparse.*` and `SCHILY.xattr.*`,
//! which this reader ignores: a sparse record would turn a small archive into a huge file);
//! at most [`MAX_ENTRIES`] entries, and the files' total within the volume's share. An
//! archive that passed is written again by [`rewrite_archive`] with headers built here, and
//! only that copy reaches the engine.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use peercompute_tunnel_proto::format_memory;
use sha2::{Digest, Sha256};

/// Most entries an imported archive may hold.
pub const MAX_ENTRIES: u64 = 1_000_000;
/// Largest GNU long-name or PAX header accepted (Go's reader caps them at 1 MiB).
pub const MAX_EXTENSION_HEADER: u64 = 64 * 1024;

/// The PAX records an entry may carry (what Go's archive/tar writes for long names, large
/// ids and sub-second times); anything else is refused.
const PAX_KEYS: [&str; 10] = [
    "path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime", "atime", "ctime",
];

/// The one top-level directory of a volume archive.
const ROOT: &str = "data";

/// Why an imported archive was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveRefusal {
    #[error("the archive is not a readable tar: {0}")]
    Unreadable(String),
    #[error(
        "`{path}` is outside data/: a volume archive holds only data/… (as `peerctl volumes export` writes it)"
    )]
    OutsideData { path: String },
    #[error("`{path}` is absolute or climbs with `..`: refused")]
    BadPath { path: String },
    #[error("`{path}` is a {kind}: a volume archive holds only files, directories and symlinks")]
    Kind { path: String, kind: &'static str },
    #[error("`{path}` has the setuid, setgid or sticky bit (mode {mode:o}): refused")]
    Mode { path: String, mode: u32 },
    #[error(
        "`{path}` is a symlink to `{target}`, which leaves the volume: only relative links inside it are kept"
    )]
    Link { path: String, target: String },
    #[error(
        "`{path}` carries the PAX record `{key}`: only path, size, owner and time records are accepted"
    )]
    Pax { path: String, key: String },
    #[error(
        "a long-name or PAX header of {bytes} bytes: at most {MAX_EXTENSION_HEADER} are accepted"
    )]
    ExtensionTooLarge { bytes: u64 },
    #[error(
        "`{path}` carries the PAX record `{key}` twice: refused (readers disagree on which one counts)"
    )]
    PaxRepeated { path: String, key: String },
    #[error("`{path}` is a {kind} with a size of {size} bytes: such entries have no content")]
    HeaderOnlyWithSize {
        path: String,
        kind: &'static str,
        size: u64,
    },
    #[error("the archive has more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error(
        "the archive's files hold {} , over the volume's share of {}: import with a larger --share",
        format_memory(*.bytes), format_memory(*.share)
    )]
    OverShare { bytes: u64, share: u64 },
}

/// What a checked archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveSummary {
    pub entries: u64,
    /// The regular files' bytes.
    pub file_bytes: u64,
}

/// Reads the whole archive and refuses it at the first entry that breaks a rule. Two passes:
/// the first reads the headers raw and refuses a long-name or PAX header over
/// [`MAX_EXTENSION_HEADER`] (the reader would hold it in memory whole), the second checks
/// every entry.
pub fn check_archive<R: Read + Seek>(
    mut reader: R,
    share: u64,
) -> Result<ArchiveSummary, ArchiveRefusal> {
    let unreadable = |e: io::Error| ArchiveRefusal::Unreadable(e.to_string());
    {
        let mut raw = tar::Archive::new(&mut reader);
        for entry in raw.entries().map_err(unreadable)?.raw(true) {
            let entry = entry.map_err(unreadable)?;
            let t = entry.header().entry_type();
            let extension = t.is_gnu_longname()
                || t.is_gnu_longlink()
                || t.is_pax_local_extensions()
                || t.is_pax_global_extensions();
            if extension && entry.size() > MAX_EXTENSION_HEADER {
                return Err(ArchiveRefusal::ExtensionTooLarge {
                    bytes: entry.size(),
                });
            }
            // A file larger than the share on its own: refused before skipping its data.
            if t.is_file() && entry.size() > share {
                return Err(ArchiveRefusal::OverShare {
                    bytes: entry.size(),
                    share,
                });
            }
            if t.is_pax_global_extensions() {
                return Err(ArchiveRefusal::Kind {
                    path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                    kind: "global PAX header",
                });
            }
        }
    }
    reader.seek(SeekFrom::Start(0)).map_err(unreadable)?;
    let mut archive = tar::Archive::new(reader);
    let mut summary = ArchiveSummary {
        entries: 0,
        file_bytes: 0,
    };
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        summary.entries += 1;
        if summary.entries > MAX_ENTRIES {
            return Err(ArchiveRefusal::TooManyEntries);
        }
        let path = entry.path().map_err(unreadable)?.into_owned();
        let shown = path.display().to_string();
        let depth = in_volume_depth(&path).ok_or_else(|| ArchiveRefusal::BadPath {
            path: shown.clone(),
        })?;
        let top = path.components().find(|c| *c != Component::CurDir);
        if top != Some(Component::Normal(ROOT.as_ref())) {
            return Err(ArchiveRefusal::OutsideData { path: shown });
        }
        if let Some(records) = entry.pax_extensions().map_err(unreadable)? {
            let mut keys = Vec::new();
            for record in records {
                let record = record.map_err(unreadable)?;
                let key = String::from_utf8_lossy(record.key_bytes()).into_owned();
                if !PAX_KEYS.contains(&key.as_str()) {
                    return Err(ArchiveRefusal::Pax { path: shown, key });
                }
                if keys.contains(&key) {
                    return Err(ArchiveRefusal::PaxRepeated { path: shown, key });
                }
                keys.push(key);
            }
        }
        let header = entry.header();
        let mode = header.mode().map_err(unreadable)?;
        if mode & 0o7000 != 0 {
            return Err(ArchiveRefusal::Mode { path: shown, mode });
        }
        match header.entry_type() {
            tar::EntryType::Regular => {
                summary.file_bytes = summary.file_bytes.saturating_add(entry.size());
                if summary.file_bytes > share {
                    return Err(ArchiveRefusal::OverShare {
                        bytes: summary.file_bytes,
                        share,
                    });
                }
            }
            tar::EntryType::Directory | tar::EntryType::Symlink if entry.size() != 0 => {
                let kind = if header.entry_type().is_dir() {
                    "directory"
                } else {
                    "symlink"
                };
                return Err(ArchiveRefusal::HeaderOnlyWithSize {
                    path: shown,
                    kind,
                    size: entry.size(),
                });
            }
            tar::EntryType::Directory => {}
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(unreadable)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                // The link resolves from its own directory: one level above the link.
                if !link_stays_inside(depth.saturating_sub(1), &target) {
                    return Err(ArchiveRefusal::Link {
                        path: shown,
                        target: target.display().to_string(),
                    });
                }
            }
            other => {
                return Err(ArchiveRefusal::Kind {
                    path: shown,
                    kind: kind_name(other),
                });
            }
        }
    }
    Ok(summary)
}

/// Writes the entries of an archive that passed [`check_archive`] again, as plain GNU
/// headers built here (long names as GNU long-name records, no PAX record, only the type,
/// path, link, mode, owner, time and data), so the engine reads exactly what the check read:
/// no header variant the two parsers could read differently reaches it.
pub fn rewrite_archive(reader: impl Read, writer: impl Write) -> io::Result<u64> {
    let mut archive = tar::Archive::new(reader);
    let mut out = tar::Builder::new(writer);
    let mut entries = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let old = entry.header().clone();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(old.entry_type());
        header.set_mode(old.mode()?);
        // Owner and time as given; an empty field (some writers leave them blank) is 0.
        header.set_uid(old.uid().unwrap_or(0));
        header.set_gid(old.gid().unwrap_or(0));
        header.set_mtime(old.mtime().unwrap_or(0));
        match old.entry_type() {
            tar::EntryType::Regular => {
                header.set_size(entry.size());
                out.append_data(&mut header, &path, &mut entry)?;
            }
            tar::EntryType::Directory => {
                header.set_size(0);
                out.append_data(&mut header, &path, io::empty())?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                header.set_size(0);
                out.append_link(&mut header, &path, &target)?;
            }
            other => {
                return Err(io::Error::other(format!(
                    "`{}` is a {}: not rewritten",
                    path.display(),
                    kind_name(other)
                )));
            }
        }
        entries += 1;
    }
    out.into_inner()?.flush()?;
    Ok(entries)
}

/// How deep below `data` a path is (`data` itself: 0, `data/a`: 1), or `None` when it is
/// absolute or has `..` (`Path` already folds `.` components away).
fn in_volume_depth(path: &Path) -> Option<usize> {
    let mut parts = path.components().peekable();
    if parts.peek() == Some(&Component::CurDir) {
        parts.next();
    }
    let mut depth = 0usize;
    for part in parts {
        match part {
            Component::Normal(_) => depth += 1,
            _ => return None,
        }
    }
    depth.checked_sub(1)
}

/// Whether a symlink in a directory `dir_depth` levels below `data` that points at `target`
/// resolves inside `data` (never absolute, never above it).
fn link_stays_inside(dir_depth: usize, target: &Path) -> bool {
    if target.as_os_str().is_empty() {
        return false;
    }
    let mut depth = dir_depth;
    for part in target.components() {
        match part {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn kind_name(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "fifo",
        tar::EntryType::GNUSparse => "sparse file",
        tar::EntryType::Continuous => "contiguous file",
        _ => "special entry",
    }
}

/// Why spooling stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot spool the import to {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the import sent more than the {declared} bytes its signed request announced")]
    TooLong { declared: u64 },
    #[error("the import ended after {got} of the {declared} bytes its signed request announced")]
    TooShort { got: u64, declared: u64 },
    #[error("the import's SHA-256 is {got}, not the {declared} its signed request announced")]
    Digest { got: String, declared: String },
}

/// An import on its way to disk: counted, hashed, and removed when dropped.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    /// Kept on purpose ([`Spool::keep_as`]): not removed on drop.
    kept: bool,
    file: Option<File>,
    declared: u64,
    written: u64,
    hasher: Sha256,
}

impl Spool {
    /// Creates `<dir>/<random>.tar` (0600, never an existing file) for `declared` bytes.
    pub fn create(dir: &Path, declared: u64) -> Result<Self, SpoolError> {
        let name: [u8; 12] = rand::random();
        let path = dir.join(format!("{}.tar", hex::encode(name)));
        let io = |source| SpoolError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        Ok(Self {
            path,
            kept: false,
            file: Some(file),
            declared,
            written: 0,
            hasher: Sha256::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a chunk; refused once the total passes the declared size.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        let total = self.written.saturating_add(chunk.len() as u64);
        if total > self.declared {
            return Err(SpoolError::TooLong {
                declared: self.declared,
            });
        }
        let file = self.file.as_mut().ok_or_else(|| SpoolError::Io {
            path: self.path.clone(),
            source: io::Error::other("the spool file is already closed"),
        })?;
        file.write_all(chunk).map_err(|source| SpoolError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.hasher.update(chunk);
        self.written = total;
        Ok(())
    }

    /// Closes the file and checks size and SHA-256 (lowercase hex) against the request.
    pub fn finish(&mut self, declared_sha256: &str) -> Result<(), SpoolError> {
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(|source| SpoolError::Io {
                path: self.path.clone(),
                source,
            })?;
        }
        if self.written != self.declared {
            return Err(SpoolError::TooShort {
                got: self.written,
                declared: self.declared,
            });
        }
        let got = hex::encode(self.hasher.clone().finalize());
        if !got.eq_ignore_ascii_case(declared_sha256) {
            return Err(SpoolError::Digest {
                got,
                declared: declared_sha256.to_owned(),
            });
        }
        Ok(())
    }

    /// The spooled archive, for reading.
    pub fn open(&self) -> Result<File, SpoolError> {
        File::open(&self.path).map_err(|source| SpoolError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl Spool {
    /// Keeps the file under `name` in the same directory (the only copy of data that could
    /// not be put back): it is then neither removed on drop nor swept at start.
    pub fn keep_as(mut self, name: &str) -> io::Result<PathBuf> {
        self.file.take();
        let to = self.path.with_file_name(name);
        std::fs::rename(&self.path, &to)?;
        self.kept = true;
        Ok(to)
    }
}

/// Removes the spool files a crash left in `dir` (no import is in flight at start); files
/// kept on purpose (`*.replaced-*.tar`) stay. Returns how many and their bytes.
pub fn sweep_spool(dir: &Path) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let (mut files, mut bytes) = (0, 0u64);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".tar") || name.contains(".replaced-") {
            continue;
        }
        let size = entry.metadata().map_or(0, |m| m.len());
        if std::fs::remove_file(entry.path()).is_ok() {
            files += 1;
            bytes += size;
        }
    }
    (files, bytes)
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Spool::write(self, buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.file.take();
        if self.kept {
            return;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Free bytes (for unprivileged users) of the filesystem holding `path` (`statvfs`).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let stats = nix::sys::statvfs::statvfs(path).ok()?;
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let (available, fragment) = (
        u64::from(stats.blocks_available()),
        u64::from(stats.fragment_size()),
    );
    Some(available.saturating_mul(fragment))
}

#[cfg(test)]
mod tests;
