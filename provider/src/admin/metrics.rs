//! The provider's series (prefix `peercompute_provider`), for `/metrics` and
//! `/api/v1/status`.
//!
//! Counted as things happen, in [`Telemetry`] (shared by the deployments and the tunnel
//! watcher): `deploys_total{outcome}` (`ok`, the error code of a refused deploy, or
//! `release_failed` / `release_rolled_back` for a fleet release), `deploy_duration_seconds`,
//! `image_pull_bytes_total` (each layer's final size in a pull's progress),
//! `tunnel_reconnects_total`. Read at scrape time by [`StateCollector`]: the machine
//! (`machine_cpu_ratio`, `machine_memory_bytes{state}`, `machine_disk_bytes{state}` of the
//! engine's data root), `deployments{state}` (the container's state as the engine last
//! listed it, `halted`, `missing` or `unknown`), `tunnel_state{state}` (one-hot),
//! `tunnel_transport{transport}` (one-hot: quic or tcp while connected),
//! `tunnel_connected_since_timestamp_seconds`, `relay_state{state}`, `docker_up`,
//! `firewall_installed`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peercompute_ops::machine::CpuSampler;
use peercompute_tunnel_proto::ErrorCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::Shared;
use super::health::{DockerProbe, FirewallProbe};
use crate::relay::RelayStatus;
use crate::tunnel::TunnelStatus;

/// Upper bounds of the deploy-duration buckets, in seconds (0.1 s … 10 min).
const DEPLOY_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

type Labels = Vec<(&'static str, String)>;

/// What the daemon counts as it works.
#[derive(Debug)]
pub(crate) struct Telemetry {
    deploys: Family<Labels, Counter>,
    /// The same counts, readable for `/api/v1/status`.
    deploy_counts: Mutex<BTreeMap<String, u64>>,
    deploy_duration: Histogram,
    image_pull_bytes: Counter,
    tunnel_reconnects: Counter,
    /// Unix seconds of the current tunnel connection; 0 when not connected.
    connected_since: AtomicU64,
    /// The last session number seen (0: none yet).
    seen_session: AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            deploys: Family::default(),
            deploy_counts: Mutex::default(),
            deploy_duration: Histogram::new(DEPLOY_BUCKETS),
            image_pull_bytes: Counter::default(),
            tunnel_reconnects: Counter::default(),
            connected_since: AtomicU64::new(0),
            seen_session: AtomicU64::new(0),
        }
    }
}

impl Telemetry {
    /// A deploy ended: `Ok` or the error code it answered with, after `elapsed`.
    pub(crate) fn deploy_done(&self, outcome: Result<(), ErrorCode>, elapsed: Duration) {
        let label = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(code) => serde_json::to_value(code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "unknown".into()),
        };
        self.record(&label, elapsed);
    }

    /// A deploy or a fleet release ended with `outcome` (`ok`, an error code,
    /// `release_failed`, `release_rolled_back`) after `elapsed`.
    pub(crate) fn record(&self, outcome: &str, elapsed: Duration) {
        let label = outcome.to_owned();
        self.deploys
            .get_or_create(&vec![("outcome", label.clone())])
            .inc();
        *self
            .deploy_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(label)
            .or_default() += 1;
        self.deploy_duration.observe(elapsed.as_secs_f64());
    }

    /// Bytes of image layers pulled.
    pub(crate) fn pulled(&self, bytes: u64) {
        self.image_pull_bytes.inc_by(bytes);
    }

    /// The tunnel's status is now `new`. Reconnects are counted from the session number, which
    /// counts connections since the start, so changes the watcher did not see still count.
    pub(crate) fn tunnel_changed(&self, new: &TunnelStatus) {
        match new {
            TunnelStatus::Connected { session, .. } => {
                let seen = self.seen_session.swap(*session, Ordering::Relaxed);
                if *session != seen {
                    self.connected_since.store(unix_now(), Ordering::Relaxed);
                }
                let counted = seen.max(1);
                if *session > counted {
                    self.tunnel_reconnects.inc_by(*session - counted);
                }
            }
            _ => self.connected_since.store(0, Ordering::Relaxed),
        }
    }

    /// Unix seconds since when the tunnel is connected, if it is.
    pub(crate) fn connected_since(&self) -> Option<u64> {
        Some(self.connected_since.load(Ordering::Relaxed)).filter(|s| *s > 0)
    }

    /// Deploys by outcome since the start.
    pub(crate) fn deploy_counts(&self) -> BTreeMap<String, u64> {
        self.deploy_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Registers the counted series on `registry` (the `peercompute_provider` one).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "deploys",
            "Deploys by outcome: ok, or the error code answered",
            self.deploys.clone(),
        );
        registry.register(
            "deploy_duration_seconds",
            "Time from a deploy request to its answer",
            self.deploy_duration.clone(),
        );
        registry.register(
            "image_pull_bytes",
            "Bytes of image layers pulled",
            self.image_pull_bytes.clone(),
        );
        registry.register(
            "tunnel_reconnects",
            "Tunnel connections after the first",
            self.tunnel_reconnects.clone(),
        );
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The machine as `/api/v1/status` and the machine series show it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpu_ratio: f64,
    pub(crate) memory_used_bytes: u64,
    pub(crate) memory_total_bytes: u64,
    pub(crate) disk_free_bytes: u64,
    pub(crate) disk_total_bytes: u64,
    /// The filesystem measured (the engine's data root, else the daemon's home).
    pub(crate) disk_path: PathBuf,
}

/// Reads the machine. The CPU ratio is the one [`MachineReader::sample_cpu`] last measured
/// (the probe loop, every few seconds), so scrapers and `status` do not shorten each other's
/// window.
#[derive(Debug)]
pub(crate) struct MachineReader {
    cpu: CpuSampler,
    /// The last ratio, as `f64` bits.
    cpu_ratio: AtomicU64,
    disk_path: PathBuf,
}

impl MachineReader {
    pub(crate) fn new(disk_path: PathBuf) -> Self {
        let cpu = CpuSampler::new();
        let first = cpu.sample().unwrap_or(0.0);
        Self {
            cpu,
            cpu_ratio: AtomicU64::new(first.to_bits()),
            disk_path,
        }
    }

    /// Measures the CPU ratio since the previous call.
    pub(crate) fn sample_cpu(&self) {
        if let Some(r) = self.cpu.sample() {
            self.cpu_ratio.store(r.to_bits(), Ordering::Relaxed);
        }
    }

    pub(crate) fn read(&self) -> Machine {
        let (memory_used_bytes, memory_total_bytes) = peercompute_ops::machine::memory();
        let (disk_free_bytes, disk_total_bytes) =
            peercompute_ops::machine::disk(&self.disk_path).unwrap_or((0, 0));
        Machine {
            cpu_ratio: f64::from_bits(self.cpu_ratio.load(Ordering::Relaxed)),
            memory_used_bytes,
            memory_total_bytes,
            disk_free_bytes,
            disk_total_bytes,
            disk_path: self.disk_path.clone(),
        }
    }
}

/// The state-derived series, read at scrape time.
#[derive(Debug)]
pub(crate) struct StateCollector(pub(crate) std::sync::Arc<Shared>);

/// The one-hot names of the tunnel's states.
pub(crate) const TUNNEL_STATES: [&str; 5] = [
    "connecting",
    "connected",
    "refused",
    "wrong_gateway",
    "stopped",
];
/// The one-hot names of the relay's states.
pub(crate) const RELAY_STATES: [&str; 4] = ["waiting", "reserved", "failed", "stopped"];

pub(crate) fn tunnel_state(s: &TunnelStatus) -> &'static str {
    match s {
        TunnelStatus::Connecting => "connecting",
        TunnelStatus::Connected { .. } => "connected",
        TunnelStatus::Refused { .. } => "refused",
        TunnelStatus::WrongGateway { .. } => "wrong_gateway",
        TunnelStatus::Stopped => "stopped",
    }
}

pub(crate) fn relay_state(s: &RelayStatus) -> &'static str {
    match s {
        RelayStatus::Waiting => "waiting",
        RelayStatus::Reserved { .. } => "reserved",
        RelayStatus::Failed { .. } => "failed",
        RelayStatus::Stopped => "stopped",
    }
}

/// Every state with 1 for `now` and 0 for the others.
fn one_hot<'a>(states: &[&'a str], now: &str) -> Vec<(&'a str, f64)> {
    states
        .iter()
        .map(|s| (*s, if *s == now { 1.0 } else { 0.0 }))
        .collect()
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    g.set(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

fn labelled(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &'static str,
    values: &[(&str, f64)],
) -> Result<(), std::fmt::Error> {
    let family = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (label, v) in values {
        family
            .get_or_create(&vec![(key, (*label).to_owned())])
            .set(*v);
    }
    family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shared = &self.0;
        let m = shared.machine.read();
        let e = &mut encoder;
        gauge(
            e,
            "machine_cpu_ratio",
            "Busy share of all CPUs over the last few seconds (0 to 1)",
            m.cpu_ratio,
        )?;
        labelled(
            e,
            "machine_memory_bytes",
            "Machine memory: used (total minus available) and total",
            "state",
            &[
                ("used", m.memory_used_bytes as f64),
                ("total", m.memory_total_bytes as f64),
            ],
        )?;
        labelled(
            e,
            "machine_disk_bytes",
            "Free and total bytes of the filesystem holding the engine's data root",
            "state",
            &[
                ("free", m.disk_free_bytes as f64),
                ("total", m.disk_total_bytes as f64),
            ],
        )?;
        let counts = shared.deployment_counts();
        let counts: Vec<(&str, f64)> = counts
            .iter()
            .map(|(k, v)| (k.as_str(), *v as f64))
            .collect();
        labelled(
            e,
            "deployments",
            "Deployments this provider keeps, by their container's state (halted: by the provider)",
            "state",
            &counts,
        )?;
        if let Some(status) = shared.tunnel_status() {
            labelled(
                e,
                "tunnel_state",
                "The gateway tunnel's state (1 for the current one)",
                "state",
                &one_hot(&TUNNEL_STATES, tunnel_state(&status)),
            )?;
            let transport = match &status {
                TunnelStatus::Connected { transport, .. } => transport.as_str(),
                _ => "",
            };
            labelled(
                e,
                "tunnel_transport",
                "How the tunnel reaches the gateway now (1 for quic or tcp while connected)",
                "transport",
                &one_hot(&["quic", "tcp"], transport),
            )?;
            gauge(
                e,
                "tunnel_connected_since_timestamp_seconds",
                "When the current tunnel connection was made (0: not connected)",
                shared.telemetry.connected_since().unwrap_or(0) as f64,
            )?;
        }
        let links = shared
            .tunnel
            .as_ref()
            .map(crate::tunnel::TunnelHandle::links)
            .unwrap_or_default();
        if links.len() > 1 {
            let names: Vec<String> = links.iter().map(|l| l.gateway.to_string()).collect();
            let up: Vec<(&str, f64)> = names
                .iter()
                .zip(&links)
                .map(|(name, l)| {
                    let connected = matches!(l.status, TunnelStatus::Connected { .. });
                    (name.as_str(), if connected { 1.0 } else { 0.0 })
                })
                .collect();
            labelled(
                e,
                "tunnel_gateway_up",
                "With several gateways: 1 while the link to this gateway is connected",
                "gateway",
                &up,
            )?;
        }
        let relay = relay_state(&shared.relay.borrow());
        labelled(
            e,
            "relay_state",
            "The relay slot's state at the gateway (1 for the current one)",
            "state",
            &one_hot(&RELAY_STATES, relay),
        )?;
        let probes = shared.probes();
        gauge(
            e,
            "docker_up",
            "Whether the Docker engine answered its last ping",
            f64::from(u8::from(probes.docker == DockerProbe::Up)),
        )?;
        gauge(
            e,
            "firewall_installed",
            "Whether the egress firewall was found in place (1 too when not checked: external or off)",
            f64::from(u8::from(matches!(
                probes.firewall,
                FirewallProbe::Installed | FirewallProbe::NotChecked(_)
            ))),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploys_count_by_outcome_and_reconnects_by_session() {
        let t = Telemetry::default();
        t.deploy_done(Ok(()), Duration::from_millis(300));
        t.deploy_done(Err(ErrorCode::ImageNotFound), Duration::from_secs(2));
        t.deploy_done(Ok(()), Duration::from_secs(1));
        let counts = t.deploy_counts();
        assert_eq!(counts.get("ok"), Some(&2));
        assert_eq!(counts.get("image_not_found"), Some(&1));

        let connected = |session| TunnelStatus::Connected {
            gateway: "127.0.0.1:1".parse().expect("addr"),
            session,
            registered: 0,
            transport: crate::tunnel::Transport::Quic,
        };
        t.tunnel_changed(&connected(1));
        assert!(t.connected_since().is_some());
        t.tunnel_changed(&connected(1));
        t.tunnel_changed(&TunnelStatus::Connecting);
        assert!(t.connected_since().is_none());
        t.tunnel_changed(&connected(2));
        assert_eq!(t.tunnel_reconnects.get(), 1);
        // Two reconnects the watcher did not see in between still count.
        t.tunnel_changed(&connected(4));
        assert_eq!(t.tunnel_reconnects.get(), 3);
        // First seen at session 3: the two before it count too.
        let late = Telemetry::default();
        late.tunnel_changed(&connected(3));
        assert_eq!(late.tunnel_reconnects.get(), 2);

        let mut registry = Registry::with_prefix("peercompute_provider");
        t.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("peercompute_provider_deploys_total{outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("peercompute_provider_deploy_duration_seconds_count 3"),
            "{text}"
        );
        assert!(
            text.contains("peercompute_provider_tunnel_reconnects_total 3"),
            "{text}"
        );
    }
}
