//! The tunnel benchmark, as modules the `tunnel-bench` binary drives (and the smoke test
//! `tests/tests/bench_smoke.rs` reuses against an in-process gateway).
//!
//! - [`target`]: where load goes — the backend directly (plain HTTP/1.1) or the gateway over
//!   HTTPS as a visitor would reach it — and one keep-alive connection to it.
//! - [`stats`]: latency samples and percentiles.
//! - [`closed`]: closed loop: N keep-alive connections, each sending its next request as soon
//!   as the previous answer arrived (throughput and latency at saturation).
//! - [`open`]: open loop: requests scheduled on a clock at a fixed rate, latency measured from
//!   the scheduled time so a stall is not hidden (no coordinated omission).
//! - [`bulk`]: one large download, checked by byte count and SHA-256.
//! - [`held`]: many concurrent TLS connections, each with one completed request, held open.
//! - [`hostile`]: `--hostile`: B7's hostile providers beside an honest one, the gateway alone
//!   on a CPU; the honest p99 per behaviour against the quiet window before it.
//! - [`loss`]: `--loss`: the tunnel through a lossy link emulator, per congestion controller.
//! - [`procfs`]: the machine, memory (VmRSS/VmHWM) and CPU time of processes, from `/proc`.
//! - [`suite`]: runs every phase against both targets and collects a [`suite::Report`].
//! - [`report`]: prints the figures, the ratios to direct and the targets with PASS/MISS.
//! - [`soak`]: `--soak`: long mixed load, `/metrics` sampled, slopes of RSS/fds/tasks.
//! - [`setup`]: the real binaries as child processes (built or found), free ports, readiness.
//! - [`alt`]: the alternative users assemble instead: nginx (TLS) → rathole (noise) → backend.
//! - [`gateway_proc`]: the real gateway as a child process, ready when `/healthz` answers.
//! - [`phases`]: `--l1`, `--l2`, `--l3`, `--mtu1500`: the checklist's load phases, each on a
//!   system of its own: [`l1`] (1000 connections for 60 s), [`l2`] (idle connections up to
//!   the gateway's cap, then past it), [`l3`] (200 providers × 50 streams, responses checked
//!   against [`l3_backend`]'s per-provider bodies), [`mtu`] (bulk over a 1500-byte veth link
//!   between network namespaces).

pub(crate) mod alt;
pub(crate) mod bulk;
pub(crate) mod closed;
pub(crate) mod gateway_proc;
pub(crate) mod held;
pub(crate) mod hostile;
pub(crate) mod l1;
pub(crate) mod l2;
pub(crate) mod l3;
pub(crate) mod l3_backend;
pub(crate) mod loss;
pub(crate) mod mtu;
pub(crate) mod open;
pub(crate) mod phases;
pub(crate) mod procfs;
pub(crate) mod report;
pub(crate) mod setup;
pub(crate) mod soak;
pub(crate) mod stats;
pub(crate) mod suite;
pub(crate) mod target;
