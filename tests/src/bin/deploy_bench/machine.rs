//! The machine and the provider process as `/proc` describes them (shared reader in
//! `peercompute_tests::procfs`), with errors that say which process vanished.

use anyhow::Context;
pub(crate) use peercompute_tests::procfs::{Machine, Memory, loadavg, machine};

/// VmRSS and VmHWM of `pid`, or an error naming the file.
pub(crate) fn memory_of(pid: u32) -> anyhow::Result<Memory> {
    peercompute_tests::procfs::memory(pid)
        .with_context(|| format!("no VmRSS/VmHWM in /proc/{pid}/status (process gone?)"))
}
