//! Prometheus metrics of the gateway, served on the admin listener at `/metrics`.
//!
//! The gateway's own series are named `peercompute_gateway_*`; collectors read at scrape time
//! add the per-app series ([`crate::traffic`]) and certificate expiry ([`crate::tls::status`]).
//! The top-level registry is unprefixed, for the shared `process_*` and
//! `peercompute_build_info` series.

use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::access_log::AccessLog;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabel {
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirectionLabel {
    pub(crate) direction: &'static str,
}

/// How a provider's tunnel is carried (`quic` today).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TransportLabel {
    pub(crate) transport: &'static str,
}

/// Why the cluster store refused a name (`cluster_refusals_total`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

/// One ACME-managed certificate, by the first name it covers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CertLabel {
    pub(crate) certificate: String,
}

/// `access_log_dropped_total`: access-log lines dropped because the writer fell behind.
#[derive(Debug)]
pub(crate) struct AccessLogDropped(pub(crate) AccessLog);

impl Collector for AccessLogDropped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metric = encoder.encode_descriptor(
            "access_log_dropped",
            "Access-log lines dropped because the writer fell behind",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.0.dropped()).encode(metric)
    }
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) connections_open: Gauge,
    pub(crate) connections_total: Counter,
    pub(crate) connections_refused: Counter,
    pub(crate) requests: Family<StatusLabel, Counter>,
    pub(crate) rate_limited: Family<KindLabel, Counter>,
    pub(crate) h2_floods: Family<KindLabel, Counter>,
    pub(crate) bytes: Family<DirectionLabel, Counter<u64, AtomicU64>>,
    /// The `upload` series of `bytes`, held so the request path skips the family's lookup.
    pub(crate) bytes_upload: Counter<u64, AtomicU64>,
    /// The `download` series of `bytes`.
    pub(crate) bytes_download: Counter<u64, AtomicU64>,
    pub(crate) tunnels: Gauge,
    pub(crate) tunnels_by_transport: Family<TransportLabel, Gauge>,
    pub(crate) tunnels_refused: Counter,
    /// Tunnels closed for abusing the control stream (over budget, or not reading it).
    pub(crate) tunnels_abuse: Counter,
    pub(crate) streams_open: Gauge,
    pub(crate) rate_limit_keys: Gauge,
    pub(crate) latency: Histogram,
    pub(crate) acme_expiry_days: Family<CertLabel, Gauge<f64, AtomicU64>>,
    pub(crate) acme_orders: Family<CertLabel, Counter>,
    pub(crate) acme_issued: Family<CertLabel, Counter>,
    pub(crate) acme_failures: Family<CertLabel, Counter>,
    /// `--cluster`: 1 while etcd answers (registered only when clustered).
    pub(crate) cluster_up: Gauge,
    /// `--cluster`: names refused by the cluster store, by reason.
    pub(crate) cluster_refusals: Family<ReasonLabel, Counter>,
    /// `--cluster` with ACME: 1 while this gateway holds the cluster's ACME lock.
    pub(crate) cluster_acme_lock: Gauge,
}

impl Metrics {
    /// The gateway's metrics plus `collectors` (named under the `peercompute_gateway_`
    /// prefix); the cluster series only when `cluster` (`--cluster`).
    pub(crate) fn new(collectors: Vec<Box<dyn Collector>>, cluster: bool) -> Self {
        let mut top = Registry::default();
        peercompute_ops::process::register(&mut top);
        peercompute_ops::build::register(&mut top, "peercompute-gateway");
        let registry = top.sub_registry_with_prefix("peercompute_gateway");
        let bytes = Family::<DirectionLabel, Counter<u64, AtomicU64>>::default();
        let bytes_upload = bytes
            .get_or_create(&DirectionLabel {
                direction: "upload",
            })
            .clone();
        let bytes_download = bytes
            .get_or_create(&DirectionLabel {
                direction: "download",
            })
            .clone();
        let m = Self {
            connections_open: Gauge::default(),
            connections_total: Counter::default(),
            connections_refused: Counter::default(),
            requests: Family::default(),
            rate_limited: Family::default(),
            h2_floods: Family::default(),
            bytes,
            bytes_upload,
            bytes_download,
            tunnels: Gauge::default(),
            tunnels_by_transport: Family::default(),
            tunnels_refused: Counter::default(),
            tunnels_abuse: Counter::default(),
            streams_open: Gauge::default(),
            rate_limit_keys: Gauge::default(),
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            acme_expiry_days: Family::default(),
            acme_orders: Family::default(),
            acme_issued: Family::default(),
            acme_failures: Family::default(),
            cluster_up: Gauge::default(),
            cluster_refusals: Family::default(),
            cluster_acme_lock: Gauge::default(),
            registry: Registry::default(),
        };
        for collector in collectors {
            registry.register_collector(collector);
        }
        registry.register(
            "connections_open",
            "Visitor connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "connections",
            "Visitor connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "connections_refused",
            "Visitor connections refused at the connection cap",
            m.connections_refused.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by status code",
            m.requests.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused with 429, by limit",
            m.rate_limited.clone(),
        );
        registry.register(
            "h2_floods",
            "Visitor connections closed for an HTTP/2 control frame flood, by frame kind",
            m.h2_floods.clone(),
        );
        registry.register(
            "body_bytes",
            "Body bytes proxied, by direction",
            m.bytes.clone(),
        );
        registry.register(
            "tunnels",
            "Provider tunnels connected now",
            m.tunnels.clone(),
        );
        registry.register(
            "tunnels_by_transport",
            "Provider tunnels connected now, by transport",
            m.tunnels_by_transport.clone(),
        );
        registry.register(
            "tunnels_refused",
            "Provider tunnels refused",
            m.tunnels_refused.clone(),
        );
        registry.register(
            "tunnels_closed_for_abuse",
            "Provider tunnels closed for abusing their control stream (too many messages, or \
             not reading it)",
            m.tunnels_abuse.clone(),
        );
        registry.register(
            "streams_open",
            "Tunnel data streams open now",
            m.streams_open.clone(),
        );
        registry.register(
            "rate_limit_keys",
            "Hosts and client IPs with a live rate-limit bucket",
            m.rate_limit_keys.clone(),
        );
        registry.register(
            "response_head_seconds",
            "Time from request to response head, proxied requests",
            m.latency.clone(),
        );
        registry.register(
            "acme_certificate_expiry_days",
            "Days until the served ACME certificate expires (negative once expired)",
            m.acme_expiry_days.clone(),
        );
        registry.register(
            "acme_orders",
            "ACME orders started (first issue and renewals)",
            m.acme_orders.clone(),
        );
        registry.register(
            "acme_certificates_issued",
            "ACME certificates obtained and swapped in",
            m.acme_issued.clone(),
        );
        registry.register(
            "acme_renewal_failures",
            "ACME orders that failed (retried with backoff)",
            m.acme_failures.clone(),
        );
        if cluster {
            registry.register(
                "cluster_up",
                "1 while the cluster store (etcd) answers; while 0, new names are refused and \
                 registered names keep working",
                m.cluster_up.clone(),
            );
            registry.register(
                "cluster_refusals",
                "Names the cluster store refused, by reason (owned, held, unavailable, error)",
                m.cluster_refusals.clone(),
            );
            registry.register(
                "cluster_acme_lock_held",
                "1 while this gateway holds the cluster's ACME lock (it alone orders and renews)",
                m.cluster_acme_lock.clone(),
            );
        }
        Self { registry: top, ..m }
    }

    /// Text exposition format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub(crate) fn request(&self, status: u16) {
        self.requests.get_or_create(&StatusLabel { status }).inc();
    }
}
