//! Atomic file replacement: write a sibling temporary file, fsync it, rename it over the
//! target, fsync the directory. A crash leaves either the old or the new content, never a mix.
//!
//! A process killed inside the window leaves its temporary file `.{name}.tmp-{pid}-{seq}`
//! behind. [`remove_stale_tmp`] removes those of dead processes; every store calls it when it
//! opens its file, and `write_atomic` sweeps each directory once per process before its first
//! write there, so a device that crashes in a loop does not fill up with them.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers the temporary files of one process, so two writes of one path never share one.
static SEQ: AtomicU64 = AtomicU64::new(0);
/// Directories this process has swept of dead processes' temporary files.
static SWEPT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Atomically replaces `path` with `contents`, creating it with `mode` (e.g. `0o600`).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    sweep_once(dir);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes the temporary files `write_atomic` left for `dir/name` when a process died inside
/// it: those whose writer pid is no longer running, or is this process (a store opening its
/// file has no write of it in flight). Returns how many it removed; a missing `dir` is 0. It
/// cannot fail a store's open: an error (a read-only directory, …) is logged and counts 0.
pub fn remove_stale_tmp(dir: &Path, name: &str) -> usize {
    sweep(dir, Some(name)).unwrap_or_else(|e| {
        tracing::warn!(dir = %dir.display(), "cannot remove old temporary files of {name}: {e}");
        0
    })
}

fn sweep_once(dir: &Path) {
    let mut swept = SWEPT.lock().unwrap_or_else(|p| p.into_inner());
    let swept = swept.get_or_insert_with(HashSet::new);
    if swept.insert(dir.to_path_buf())
        && let Err(e) = sweep(dir, None)
    {
        tracing::debug!(dir = %dir.display(), "cannot sweep old temporary files: {e}");
    }
}

fn sweep(dir: &Path, name: Option<&str>) -> io::Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|f| tmp_writer(f, name)) else {
            continue;
        };
        if pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if removed > 0 {
        tracing::info!(
            dir = %dir.display(),
            "removed {removed} temporary file(s) left by a process that died while writing"
        );
    }
    Ok(removed)
}

/// The writer pid of a temporary file name `.{name}.tmp-{pid}[-{seq}]` (the `-{seq}`-less form
/// is what older builds wrote), for `name` or, when None, any name.
fn tmp_writer(file_name: &str, name: Option<&str>) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?;
    let (target, tail) = rest.rsplit_once(".tmp-")?;
    if target.is_empty() || name.is_some_and(|n| n != target) {
        return None;
    }
    let (pid, seq) = tail.split_once('-').unwrap_or((tail, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(seq))
        .then(|| pid.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one", 0o600).expect("first write");
        write_atomic(&path, b"two", 0o600).expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    /// A pid that is not running: a child that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("reap");
        pid
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn stale_tmp_files_of_dead_writers_go_live_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let dead = dead_pid();
        // pid 1 always runs: a live writer's file must survive.
        let live = format!(".state.json.tmp-1-{}", 7);
        let files = [
            format!(".state.json.tmp-{dead}-3"),
            format!(".state.json.tmp-{dead}"), // older builds' form
            format!(".state.json.tmp-{}-9", std::process::id()),
            live.clone(),
            format!(".other.json.tmp-{dead}-1"), // another file's: not ours to sweep
            ".state.json.tmp-x-1".to_owned(),    // not a tmp name we write
            "state.json".to_owned(),
        ];
        for f in &files {
            fs::write(d.join(f), b"x").expect("write");
        }
        assert_eq!(remove_stale_tmp(d, "state.json"), 3);
        let mut expected = vec![
            format!(".other.json.tmp-{dead}-1"),
            live,
            ".state.json.tmp-x-1".to_owned(),
            "state.json".to_owned(),
        ];
        expected.sort();
        assert_eq!(names(d), expected);
        assert_eq!(remove_stale_tmp(&d.join("absent"), "state.json"), 0);
    }

    #[test]
    fn the_first_write_in_a_directory_sweeps_it_and_tmp_names_are_per_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let dead = dead_pid();
        fs::write(d.join(format!(".a.json.tmp-{dead}-0")), b"half").expect("write");
        fs::write(d.join(format!(".b.json.tmp-{dead}-5")), b"half").expect("write");
        write_atomic(&d.join("a.json"), b"{}", 0o600).expect("write a");
        assert_eq!(names(d), ["a.json"]);
        assert_eq!(tmp_writer(".a.json.tmp-12-3", Some("a.json")), Some(12));
        assert_eq!(tmp_writer(".a.json.tmp-12", None), Some(12));
        assert_eq!(tmp_writer(".a.json.tmp-12-", None), None);
        assert_eq!(tmp_writer("a.json.tmp-12-1", None), None);
        let before = SEQ.load(Ordering::Relaxed);
        write_atomic(&d.join("a.json"), b"{1}", 0o600).expect("write again");
        assert!(
            SEQ.load(Ordering::Relaxed) > before,
            "each call has its own name"
        );
    }
}
