//! The JSON bodies of the admin API, as the OpenAPI document describes them (`ToSchema`), and
//! their conversion from the gateway's own snapshots ([`crate::state`], [`crate::traffic`],
//! [`crate::tls::status`]). Times are RFC 3339 strings in UTC; durations are milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::state::{ProviderSnapshot, RouteSnapshot};
use crate::tls::status::CertInfo;
use crate::traffic::{RouteTick, TrafficTick, TrafficTotals};

/// The last instant RFC 3339 can write (9999-12-31T23:59:59.999Z).
const LAST_RFC3339: Duration = Duration::from_millis(253_402_300_799_999);

/// RFC 3339, UTC, millisecond precision. Total: times past year 9999 (a peer's clock can say
/// anything) are written as the last representable instant, before 1970 as the epoch.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .min(LAST_RFC3339);
    humantime::format_rfc3339_millis(UNIX_EPOCH + since).to_string()
}

/// [`rfc3339`] of Unix milliseconds from a peer.
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_millis(ms.min(LAST_RFC3339.as_millis() as u64)))
}

/// Request counts, bytes and latency of a provider, a route, or a route during one second.
pub(crate) type Figures = TrafficTotals;

/// A connected provider (one live tunnel).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProviderView {
    /// The provider's key (base58 peer id).
    pub(crate) peer_id: String,
    /// The `agent` of its Hello, e.g. `peercomputed/0.9.0`.
    pub(crate) agent: String,
    /// Tunnel protocol version agreed in Welcome.
    pub(crate) protocol_version: u16,
    /// The address its tunnel comes from.
    pub(crate) remote_addr: String,
    /// When the tunnel was established (RFC 3339).
    pub(crate) connected_since: String,
    /// `quic`.
    pub(crate) transport: String,
    /// QUIC's current round-trip estimate, milliseconds.
    pub(crate) rtt_ms: f64,
    /// Names this tunnel serves.
    pub(crate) routes: Vec<String>,
    /// Requests carried by this tunnel (all its names).
    #[serde(flatten)]
    pub(crate) traffic: Figures,
    /// UDP bytes received from / sent to the provider, QUIC overhead included.
    pub(crate) wire_rx_bytes: u64,
    pub(crate) wire_tx_bytes: u64,
}

impl From<ProviderSnapshot> for ProviderView {
    fn from(p: ProviderSnapshot) -> Self {
        Self {
            peer_id: p.peer,
            agent: p.agent,
            protocol_version: p.protocol_version,
            remote_addr: p.remote.to_string(),
            connected_since: rfc3339(p.connected_since),
            transport: p.transport.to_owned(),
            rtt_ms: p.rtt.as_secs_f64() * 1000.0,
            routes: p.routes,
            traffic: p.traffic.clone(),
            wire_rx_bytes: p.wire_rx_bytes,
            wire_tx_bytes: p.wire_tx_bytes,
        }
    }
}

/// A name: owned, served, or offline.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RouteView {
    pub(crate) name: String,
    /// The key that owns it (null: served or offline but owned by nobody on disk).
    pub(crate) owner: Option<String>,
    /// Peer ids of the tunnels serving it.
    pub(crate) providers: Vec<String>,
    pub(crate) online: bool,
    /// When its provider dropped without withdrawing it (RFC 3339; null while online).
    pub(crate) last_seen: Option<String>,
    /// Requests per second over about the last minute.
    pub(crate) req_per_s_1m: f64,
    /// Zero for names past `--metrics-max-routes` (they share `route="other"`).
    #[serde(flatten)]
    pub(crate) traffic: Figures,
}

impl From<RouteSnapshot> for RouteView {
    fn from(r: RouteSnapshot) -> Self {
        Self {
            name: r.name,
            owner: r.owner,
            providers: r.providers,
            online: r.online,
            last_seen: r.last_seen.map(rfc3339),
            req_per_s_1m: r.req_per_s_1m,
            traffic: r.traffic.clone(),
        }
    }
}

/// A served (or wanted) certificate.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CertView {
    /// The name the gateway keys it by (the domain, or one host for per-name ACME).
    pub(crate) certificate: String,
    /// DNS names it covers.
    pub(crate) names: Vec<String>,
    /// `dev`, `files` or `acme`.
    pub(crate) source: String,
    /// The issuer's distinguished name (empty while none is served).
    pub(crate) issuer: String,
    pub(crate) not_after: Option<String>,
    /// When the ACME manager orders next (null for dev and files).
    pub(crate) next_renewal: Option<String>,
    /// The last failed order's error (null after a success).
    pub(crate) last_error: Option<String>,
}

impl From<CertInfo> for CertView {
    fn from(c: CertInfo) -> Self {
        Self {
            certificate: c.certificate,
            names: c.names,
            source: c.source.to_owned(),
            issuer: c.issuer,
            not_after: c.not_after.map(rfc3339),
            next_renewal: c.next_renewal.map(rfc3339),
            last_error: c.last_error,
        }
    }
}

/// What `DELETE /api/v1/names/{name}` did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReleasedView {
    /// The released name.
    pub(crate) released: String,
    /// The key that owned it.
    pub(crate) previous_owner: String,
    /// Whether a provider was serving it (that provider was told it lost the name).
    pub(crate) was_online: bool,
}

/// What `DELETE /api/v1/names/{name}/hold` did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HoldLiftedView {
    pub(crate) name: String,
    /// The key that may register the name again.
    pub(crate) previous_owner: String,
}

/// The body of `POST /api/v1/providers/{peer_id}/disconnect`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisconnectRequest {
    /// Sent to the provider (at most 200 characters are kept). Default: "disconnected by the
    /// operator".
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// What `POST /api/v1/providers/{peer_id}/disconnect` did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DisconnectedView {
    pub(crate) peer_id: String,
    /// Tunnels asked to close (2 while a reconnect overlaps the old tunnel).
    pub(crate) tunnels: usize,
    pub(crate) reason: String,
}

/// One route's traffic during one second.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RouteTickView {
    pub(crate) route: String,
    #[serde(flatten)]
    pub(crate) traffic: Figures,
}

/// The traffic of one second, per route with traffic in it. Also the `data` of the event
/// stream's `traffic` messages.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TrafficTickView {
    /// End of the second, milliseconds since the Unix epoch.
    pub(crate) at_unix_ms: u64,
    pub(crate) routes: Vec<RouteTickView>,
}

impl From<&TrafficTick> for TrafficTickView {
    fn from(t: &TrafficTick) -> Self {
        Self {
            at_unix_ms: t.at_unix_ms,
            routes: t.routes.iter().map(RouteTickView::from).collect(),
        }
    }
}

impl From<&RouteTick> for RouteTickView {
    fn from(r: &RouteTick) -> Self {
        Self {
            route: r.route.clone(),
            traffic: r.traffic.clone(),
        }
    }
}

/// `GET /api/v1/traffic`: the last minute of per-second ticks, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TrafficView {
    pub(crate) ticks: Vec<TrafficTickView>,
}

/// An error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorView {
    /// What went wrong and what to do.
    pub(crate) error: String,
}

/// `GET /api/v1/whoami`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WhoamiView {
    /// `admin` (may release and disconnect) or `read`.
    pub(crate) role: String,
    /// Whether this listener asks for a token (`--admin-token-file`).
    pub(crate) tokens_required: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_peers_never_fail_to_format() {
        assert_eq!(rfc3339_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
