//! What the operator sees of the served certificates: names, issuer, expiry, the next renewal
//! and the last error, for every source (`dev`, `files`, `acme`). Filled at start for `dev`
//! and `files`, and by the ACME manager ([`super::acme`]) as it orders and renews; read by the
//! admin API and exported as `peercompute_gateway_certificate_not_after_timestamp_seconds`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use rustls::pki_types::CertificateDer;

/// One certificate, by the name the gateway keys it with (the domain for `dev`, `files` and
/// the ACME wildcard; the host for per-name ACME certificates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertInfo {
    pub(crate) certificate: String,
    /// DNS names the served certificate covers (the wanted ones while none is served yet).
    pub(crate) names: Vec<String>,
    /// `dev`, `files` or `acme`.
    pub(crate) source: &'static str,
    /// The issuer's distinguished name (empty while none is served).
    pub(crate) issuer: String,
    pub(crate) not_after: Option<SystemTime>,
    /// When the ACME manager orders next (renewal, or a retry after a failure).
    pub(crate) next_renewal: Option<SystemTime>,
    /// The last failed order's error, cleared by a success.
    pub(crate) last_error: Option<String>,
}

impl CertInfo {
    fn set_leaf(&mut self, leaf: &Leaf, next_renewal: Option<SystemTime>) {
        self.names.clone_from(&leaf.names);
        self.issuer.clone_from(&leaf.issuer);
        self.not_after = Some(leaf.not_after);
        self.next_renewal = next_renewal;
    }
}

/// Facts of a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leaf {
    pub(crate) names: Vec<String>,
    pub(crate) issuer: String,
    pub(crate) not_after: SystemTime,
}

impl Leaf {
    /// Parses `der`; `None` when it is not a certificate x509-parser can read.
    pub(crate) fn parse(der: &CertificateDer<'_>) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for gn in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(n) = gn {
                    names.push(n.to_ascii_lowercase());
                }
            }
        }
        Some(Self {
            names,
            issuer: cert.issuer().to_string(),
            not_after: UNIX_EPOCH + Duration::from_secs(secs),
        })
    }
}

/// certificate → what is known of it.
#[derive(Debug, Default)]
pub(crate) struct CertStatus(RwLock<BTreeMap<String, CertInfo>>);

impl CertStatus {
    /// `leaf` was just installed as `certificate` (from `source`): clears the last error.
    pub(crate) fn served(
        &self,
        certificate: &str,
        source: &'static str,
        leaf: &Leaf,
        next_renewal: Option<SystemTime>,
    ) {
        self.update(certificate, source, |info| {
            info.set_leaf(leaf, next_renewal);
            info.last_error = None;
        });
    }

    /// `leaf` is (still) served as `certificate`; a failed renewal's error stays.
    pub(crate) fn still_served(
        &self,
        certificate: &str,
        source: &'static str,
        leaf: &Leaf,
        next_renewal: SystemTime,
    ) {
        self.update(certificate, source, |info| {
            info.set_leaf(leaf, Some(next_renewal));
        });
    }

    /// `certificate` is wanted for `names` and not served yet (an ACME order is due).
    pub(crate) fn pending(&self, certificate: &str, names: &[String], next: SystemTime) {
        self.update(certificate, "acme", |info| {
            if info.not_after.is_none() {
                info.names = names.to_vec();
            }
            info.next_renewal = Some(next);
        });
    }

    /// An order for `certificate` failed with `error`; the next try is at `retry`.
    pub(crate) fn failed(&self, certificate: &str, error: &str, retry: SystemTime) {
        self.update(certificate, "acme", |info| {
            info.last_error = Some(error.to_owned());
            info.next_renewal = Some(retry);
        });
    }

    /// Forgets `certificate` (a per-name certificate whose name was released).
    pub(crate) fn remove(&self, certificate: &str) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.remove(certificate);
    }

    /// Every certificate, by name.
    pub(crate) fn list(&self) -> Vec<CertInfo> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    fn update(&self, certificate: &str, source: &'static str, f: impl FnOnce(&mut CertInfo)) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        let info = map
            .entry(certificate.to_owned())
            .or_insert_with(|| CertInfo {
                certificate: certificate.to_owned(),
                names: Vec::new(),
                source,
                issuer: String::new(),
                not_after: None,
                next_renewal: None,
                last_error: None,
            });
        f(info);
    }
}

/// Exports each served certificate's expiry at scrape time.
#[derive(Debug)]
pub(crate) struct CertCollector(pub(crate) Arc<CertStatus>);

impl Collector for CertCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "certificate_not_after_timestamp_seconds",
            "When each served certificate expires (Unix time), by certificate and source",
            None,
            MetricType::Gauge,
        )?;
        for info in self.0.list() {
            let Some(not_after) = info.not_after else {
                continue;
            };
            let secs = not_after
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let labels = [
                ("certificate", info.certificate.as_str()),
                ("source", info.source),
            ];
            ConstGauge::new(secs).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn leaf(names: &[&str], not_after: i64) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.not_after = rcgen::date_time_ymd(1970, 1, 1)
            + Duration::from_secs(u64::try_from(not_after).expect("positive"));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test Issuer");
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().clone()
    }

    #[test]
    fn served_failed_and_exported() {
        let status = Arc::new(CertStatus::default());
        let facts = Leaf::parse(&leaf(&["apps.test", "*.apps.test"], 2_000_000_000)).expect("leaf");
        assert_eq!(facts.names, vec!["apps.test", "*.apps.test"]);
        assert!(facts.issuer.contains("Test Issuer"), "{}", facts.issuer);
        assert_eq!(
            facts.not_after,
            UNIX_EPOCH + Duration::from_secs(2_000_000_000)
        );
        status.served("apps.test", "dev", &facts, None);

        let later = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        status.pending("blog.apps.test", &["blog.apps.test".to_owned()], later);
        status.failed("blog.apps.test", "rate limited", later);
        let list = status.list();
        assert_eq!(list.len(), 2);
        let blog = &list[1];
        assert_eq!(
            (blog.source, blog.last_error.as_deref(), blog.not_after),
            ("acme", Some("rate limited"), None)
        );
        assert_eq!(blog.names, vec!["blog.apps.test"]);

        let mut registry = Registry::with_prefix("peercompute_gateway");
        registry.register_collector(Box::new(CertCollector(status.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains(
            "peercompute_gateway_certificate_not_after_timestamp_seconds{certificate=\"apps.test\",source=\"dev\"} 2000000000"
        ), "{text}");
        assert!(
            !text.contains("blog.apps.test"),
            "nothing served yet: {text}"
        );

        // Still served after a failure: the error stays. A success clears it.
        status.still_served("blog.apps.test", "acme", &facts, later);
        assert_eq!(status.list()[1].last_error.as_deref(), Some("rate limited"));
        status.served("blog.apps.test", "acme", &facts, Some(later));
        assert_eq!(status.list()[1].last_error, None);
        status.remove("blog.apps.test");
        assert_eq!(status.list().len(), 1);
        assert!(Leaf::parse(&CertificateDer::from(vec![1, 2, 3])).is_none());
    }
}
