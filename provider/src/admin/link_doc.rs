//! One gateway's link as `/api/v1/status` shows it, in the `gateways` list that appears when
//! the provider keeps links to several gateways.

use serde::Serialize;

use super::metrics;
use crate::tunnel::TunnelStatus;

/// One gateway's link in `/api/v1/status`.
#[derive(Debug, Serialize)]
pub(crate) struct LinkDoc {
    /// As configured: `[PEERID@]HOST:PORT`.
    pub(crate) gateway: String,
    pub(crate) state: &'static str,
    /// `quic` or `tcp` while connected.
    pub(crate) transport: Option<&'static str>,
    /// The address the link reached, while connected.
    pub(crate) address: Option<String>,
    pub(crate) reason: Option<String>,
}

impl LinkDoc {
    pub(super) fn of(link: &crate::tunnel::LinkStatus) -> Self {
        let (transport, address, reason) = match &link.status {
            TunnelStatus::Connected {
                gateway, transport, ..
            } => (Some(transport.as_str()), Some(gateway.to_string()), None),
            TunnelStatus::Refused { reason } => (None, None, Some(reason.clone())),
            TunnelStatus::WrongGateway {
                expected,
                presented,
            } => (
                None,
                None,
                Some(format!("presented {presented}, pinned {expected}")),
            ),
            TunnelStatus::Connecting | TunnelStatus::Stopped => (None, None, None),
        };
        Self {
            gateway: link.gateway.to_string(),
            state: metrics::tunnel_state(&link.status),
            transport,
            address,
            reason,
        }
    }
}
