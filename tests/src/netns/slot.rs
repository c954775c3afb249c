//! Which world owns which names and addresses, across concurrently running test processes.
//!
//! A world owns a *slot* `n` (0..[`SLOTS`]): the namespace prefix `pcw<nnn>-`, the root-side
//! link `pcw<nnn>-root` and the subnets `10.<128+n>.0.0/16`. Ownership is an exclusive
//! `flock` on `/run/peercompute-netns/slot-<nnn>.lock`, which the kernel drops when the owning
//! process dies however it dies, so a crashed run never blocks a slot; whoever takes the slot
//! next first deletes what the dead owner left. The lock file holds the owner's pid for people
//! reading the directory. It is unlinked while still locked, and a taker checks that the file
//! it locked is still the one at the path, so an unlink racing an open cannot hand one slot to
//! two processes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::sh;

/// Where the lock files live.
pub(super) const LOCK_DIR: &str = "/run/peercompute-netns";
/// How many worlds may exist at once on one machine.
pub(super) const SLOTS: u16 = 128;

/// An owned slot; [`Slot::release`] gives it back.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) index: u16,
    path: PathBuf,
    lock: Flock<File>,
}

impl Slot {
    /// Takes a free slot (starting at a pid-dependent one, so parallel processes rarely
    /// contend) and deletes what a dead previous owner left.
    pub(super) fn acquire() -> Slot {
        std::fs::create_dir_all(LOCK_DIR)
            .unwrap_or_else(|e| panic!("netns world: cannot create {LOCK_DIR}: {e}"));
        let start = (std::process::id() % u32::from(SLOTS)) as u16;
        for i in 0..SLOTS {
            let index = (start + i) % SLOTS;
            if let Some(slot) = Self::try_take(index) {
                let pid = std::process::id();
                let _ = slot.lock.set_len(0);
                let _ = writeln!(&*slot.lock, "{pid}");
                for e in cleanup(index) {
                    eprintln!("netns world: reclaiming slot {index}: {e}");
                }
                return slot;
            }
        }
        panic!("netns world: all {SLOTS} slots in {LOCK_DIR} are held by running processes")
    }

    fn try_take(index: u16) -> Option<Slot> {
        let path = PathBuf::from(format!("{LOCK_DIR}/slot-{index:03}.lock"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap_or_else(|e| panic!("netns world: cannot open {}: {e}", path.display()));
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => return None,
            Err((_, e)) => panic!("netns world: flock {}: {e}", path.display()),
        };
        // The previous owner may have unlinked the file between our open and our lock.
        let locked = lock.metadata().ok()?;
        let current = std::fs::metadata(&path).ok()?;
        (locked.ino() == current.ino() && locked.dev() == current.dev()).then_some(Slot {
            index,
            path,
            lock,
        })
    }

    /// Unlinks the lock file while still holding it, then unlocks.
    pub(super) fn release(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.lock);
    }
}

/// Namespace name prefix of slot `index`.
pub(super) fn prefix(index: u16) -> String {
    format!("pcw{index:03}-")
}

/// Name of slot `index`'s link in the root namespace (≤ 15 bytes).
pub(super) fn root_link(index: u16) -> String {
    format!("pcw{index:03}-root")
}

/// Second octet of slot `index`'s `10.x.0.0/16`.
pub(super) fn octet(index: u16) -> u8 {
    u8::try_from(128 + index).expect("SLOTS ≤ 128 keeps the octet in range")
}

/// Deletes everything slot `index` may have created: processes inside its namespaces, its
/// root-side link (with the routes through it), its namespaces. Returns what failed.
pub(super) fn cleanup(index: u16) -> Vec<String> {
    let mut errors = Vec::new();
    let prefix = prefix(index);
    let names: Vec<String> = match sh::list_netns() {
        Ok(all) => all.into_iter().filter(|n| n.starts_with(&prefix)).collect(),
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    };
    let me = std::process::id();
    for ns in &names {
        let pids = sh::try_run("ip", &["netns", "pids", ns]).unwrap_or_default();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if u32::try_from(pid).ok() != Some(me) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let link = root_link(index);
    if sh::try_run("ip", &["link", "show", "dev", &link]).is_ok()
        && let Err(e) = sh::try_run("ip", &["link", "del", "dev", &link])
    {
        errors.push(e);
    }
    for ns in &names {
        if let Err(e) = sh::try_run("ip", &["netns", "del", ns]) {
            errors.push(e);
        }
    }
    errors
}

/// Deletes what crashed worlds left in slots no running process holds. Returns what failed.
pub(super) fn reclaim_stale() -> Vec<String> {
    // `ip -o link` lines read `7: pcw003-root@if2: <…`.
    let links = sh::try_run("ip", &["-o", "link", "show"]).unwrap_or_default();
    let link_names = links.lines().filter_map(|l| l.split(": ").nth(1));
    let mut stale: Vec<u16> = sh::list_netns()
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .chain(link_names)
        .filter_map(|n| n.strip_prefix("pcw")?.get(..4))
        .filter_map(|s| s.strip_suffix('-')?.parse().ok())
        .filter(|&i| i < SLOTS)
        .collect();
    stale.sort_unstable();
    stale.dedup();
    let mut errors = Vec::new();
    for index in stale {
        if let Some(slot) = Slot::try_take(index) {
            errors.extend(cleanup(index));
            slot.release();
        }
    }
    errors
}
