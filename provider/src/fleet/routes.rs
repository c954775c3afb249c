//! The routes of serving containers at the gateway, registered in the background so that an
//! apply, a re-adoption at start or a resume never waits for a gateway that is not connected
//! (a release applied offline serves on this robot at once). The tunnel client registers the
//! route when it connects (no redeploy); the URL the gateway gives then comes back here and
//! is recorded in `applied.json` and in the group's status, which is republished: "running,
//! no public URL yet" becomes the URL. Group names (`group_names`) go the same way, and
//! their answer — URL or refusal — comes back too.

use std::net::SocketAddr;

use peercompute_fleet::FleetId;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::apply::Applier;
use super::status::now_ms;
use crate::tunnel::{RegisterError, TunnelHandle, TunnelStatus};

/// Confirmations waiting for the reconciler.
const CONFIRMED_QUEUE: usize = 64;

/// The gateway confirmed a serving container's route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Confirmed {
    pub(crate) fleet: FleetId,
    pub(crate) group: String,
    pub(crate) container: String,
    pub(crate) url: String,
}

/// The gateway's answer for a group name (`<app>.<domain>`, see `group_names`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupNews {
    pub(crate) fleet: FleetId,
    pub(crate) group: String,
    pub(crate) name: String,
    /// Where the name was pointed when asked for.
    pub(crate) addr: SocketAddr,
    /// The URL, or why it was refused.
    pub(crate) outcome: Result<String, String>,
}

/// What comes back from the gateway to the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RouteNews {
    /// A serving container's own route is confirmed.
    Confirmed(Confirmed),
    /// A group name was answered.
    Group(GroupNews),
}

/// Registers routes in the background and reports their URLs to the reconciler.
#[derive(Debug, Clone)]
pub(crate) struct RouteSink {
    tunnel: Option<TunnelHandle>,
    confirmed: mpsc::Sender<RouteNews>,
}

impl RouteSink {
    /// A sink for `tunnel` (none: no gateway configured, nothing is registered) and the
    /// receiver of its confirmations.
    pub(crate) fn new(tunnel: Option<TunnelHandle>) -> (Self, mpsc::Receiver<RouteNews>) {
        let (confirmed, rx) = mpsc::channel(CONFIRMED_QUEUE);
        (RouteSink { tunnel, confirmed }, rx)
    }

    /// Whether the tunnel to the gateway is up now.
    pub(crate) fn connected(&self) -> bool {
        self.tunnel
            .as_ref()
            .is_some_and(|t| matches!(t.status(), TunnelStatus::Connected { .. }))
    }

    /// Points `route` at `container`'s `addr`; once the gateway confirms (now, or when the
    /// tunnel next connects) its URL is recorded for `group` of `fleet`.
    pub(crate) fn register(
        &self,
        fleet: FleetId,
        group: &str,
        container: &str,
        route: &str,
        addr: SocketAddr,
    ) {
        let Some(tunnel) = self.tunnel.clone() else {
            return;
        };
        let confirmed = self.confirmed.clone();
        let (group, container, route) = (group.to_owned(), container.to_owned(), route.to_owned());
        tokio::spawn(async move {
            match tunnel
                .register(&route, &addr.ip().to_string(), addr.port())
                .await
            {
                Ok(url) => {
                    let _ = confirmed
                        .send(RouteNews::Confirmed(Confirmed {
                            fleet,
                            group,
                            container,
                            url,
                        }))
                        .await;
                }
                Err(e) => warn!(%route, "fleet: no public URL: {e}"),
            }
        });
    }

    /// Asks for group name `name` → `addr` as a robot of `group` of `fleet`; the answer (now,
    /// or once the tunnel connects and the gateway's copy of the log allows it) comes back as
    /// [`RouteNews::Group`].
    pub(crate) fn register_group(&self, fleet: FleetId, group: &str, name: &str, addr: SocketAddr) {
        let Some(tunnel) = self.tunnel.clone() else {
            return;
        };
        let confirmed = self.confirmed.clone();
        let (group, name) = (group.to_owned(), name.to_owned());
        tokio::spawn(async move {
            let outcome = tunnel
                .register_fleet(&name, &addr.ip().to_string(), addr.port(), fleet, &group)
                .await;
            let outcome = match outcome {
                Ok(url) => Ok(url),
                Err(e @ RegisterError::Refused { .. }) => Err(e.to_string()),
                // Withdrawn meanwhile, or the client stopped: nothing to report.
                Err(_) => return,
            };
            let news = GroupNews {
                fleet,
                group,
                name,
                addr,
                outcome,
            };
            let _ = confirmed.send(RouteNews::Group(news)).await;
        });
    }
}

impl Applier {
    /// Records a confirmed URL if `container` still serves its group (else it is stale).
    pub(crate) fn record_url(&mut self, c: Confirmed) {
        let applied = self.applied.group_mut(&c.fleet.to_string(), &c.group);
        let Some(serving) = applied
            .serving
            .as_mut()
            .filter(|s| s.container_id == c.container)
        else {
            return;
        };
        if serving.url.as_deref() != Some(c.url.as_str()) {
            serving.url = Some(c.url.clone());
            self.save();
        }
        let shown = self
            .board
            .get(&c.fleet, &c.group)
            .is_some_and(|a| a.url.as_deref() == Some(c.url.as_str()));
        if shown {
            return;
        }
        info!(fleet = %c.fleet, group = %c.group, url = %c.url, "fleet: the gateway published the route");
        self.board.update(c.fleet, &c.group, |a| {
            a.url = Some(c.url);
            a.changed_at_ms = now_ms();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_gateway_nothing_is_registered_and_it_is_not_connected() {
        let (sink, mut rx) = RouteSink::new(None);
        assert!(!sink.connected());
        sink.register(
            FleetId([1; 32]),
            "production",
            "c1",
            "web-r1",
            "127.0.0.1:1".parse().expect("addr"),
        );
        drop(sink);
        assert_eq!(rx.recv().await, None, "no confirmation ever comes");
    }
}
