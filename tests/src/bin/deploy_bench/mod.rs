//! The modules of `deploy-bench`, one concern each:
//!
//! - `machine` — what `/proc` says about the machine and a process (VmRSS, VmHWM).
//! - `timeline` — every timestamped line the children log and every Docker event, in one
//!   place, so a run's stages can be read off afterwards.
//! - `children` — the release binaries (built or found) and child processes whose output
//!   lands in the timeline; killed when dropped.
//! - `system` — gateway + provider daemon + peerctl homes on 127.0.0.1, trusted both ways.
//! - `runs` — one measured deploy, stop, and direct `docker run`-style start.
//! - `stages` — where a run's time went, from the timeline.
//! - `stats` — median, min and max of a series.
//! - `report` — the printed figures, ratios and PASS/MISS against the targets.

pub(crate) mod children;
pub(crate) mod machine;
pub(crate) mod report;
pub(crate) mod runs;
pub(crate) mod stages;
pub(crate) mod stats;
pub(crate) mod system;
pub(crate) mod timeline;
