//! Publishing a deployment at the gateway, and remembering its URL.
//!
//! A deployment runs whether or not it can be published: without a gateway it has no public
//! URL; while the tunnel is down its route waits in the tunnel client, which registers it as
//! soon as a connection is up (the same path that re-registers every route after a
//! reconnect). Each registration runs in its own task that writes the URL into the
//! deployment's record when the gateway confirms it, so `status` and `ls` show it even when
//! the deploy's answer had to say "pending".

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peercompute_tunnel_proto::{ErrorCode, ErrorResponse, NoUrl};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::state::Store;
use super::{Deployments, error};
use crate::tunnel::{RegisterError, TunnelHandle, TunnelStatus};

/// How long a deploy waits for the gateway to confirm its route while the tunnel is up.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(20);
/// How long it waits while the tunnel is (re)connecting: a connection in progress may
/// finish; a gateway that is down should not hold the answer up.
const CONNECTING_GRACE: Duration = Duration::from_secs(2);

/// The URL, or why there is none (yet).
pub(super) type Published = Result<String, NoUrl>;

impl Deployments {
    /// Publishes deployment `id` as `name` → `addr`. A refusal by the gateway (the name is
    /// taken, …) is an error the caller undoes the deploy for; anything else leaves the
    /// deployment running, with a URL or the reason it has none.
    pub(super) async fn publish(
        &self,
        id: &str,
        name: &str,
        addr: SocketAddr,
    ) -> Result<Published, ErrorResponse> {
        let Some(tunnel) = &self.tunnel else {
            return Ok(Err(NoUrl::NoGateway));
        };
        let wait = match tunnel.status() {
            status if status.is_final() => return Ok(Err(NoUrl::TunnelStopped)),
            TunnelStatus::Connected { .. } => CONFIRM_TIMEOUT,
            _ => CONNECTING_GRACE,
        };
        let mut registration = self.register_and_record(tunnel, id, name, addr);
        match tokio::time::timeout(wait, &mut registration).await {
            Ok(Ok(Ok(url))) => Ok(Ok(url)),
            Ok(Ok(Err(e @ RegisterError::Refused { .. }))) => {
                Err(error(ErrorCode::Runtime, e.to_string()))
            }
            Ok(Ok(Err(RegisterError::Stopped | RegisterError::Withdrawn { .. }))) => {
                Ok(Err(NoUrl::TunnelStopped))
            }
            Ok(Err(e)) => Err(error(
                ErrorCode::Internal,
                format!("the route registration failed: {e}"),
            )),
            // The registration goes on (the task is detached) and records the URL later.
            Err(_) => {
                info!(deployment = %id, route = %name, "the gateway has not confirmed the route yet; it registers as soon as the tunnel is up");
                Ok(Err(NoUrl::Pending))
            }
        }
    }

    /// Registers `name` → `addr` for deployment `id` (again), in a task that records the URL
    /// when the gateway confirms it. The result is for a caller that waits; nobody has to.
    pub(super) fn register_and_record(
        &self,
        tunnel: &TunnelHandle,
        id: &str,
        name: &str,
        addr: SocketAddr,
    ) -> JoinHandle<Result<String, RegisterError>> {
        let (tunnel, store) = (tunnel.clone(), self.store.clone());
        let (id, name) = (id.to_owned(), name.to_owned());
        tokio::spawn(async move {
            let result = tunnel
                .register(&name, &addr.ip().to_string(), addr.port())
                .await;
            match &result {
                Ok(url) => record_url(&store, &id, &name, url),
                // Stopped meanwhile: nothing to publish any more.
                Err(RegisterError::Withdrawn { .. }) => {}
                Err(e) => warn!(deployment = %id, route = %name, "no public URL: {e}"),
            }
            result
        })
    }
}

pub(super) fn record_url(store: &Arc<Mutex<Store>>, id: &str, name: &str, url: &str) {
    let saved = store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_url(id, name, url);
    match saved {
        Ok(true) => {
            info!(deployment = %id, route = %name, %url, "the deployment answers at its URL")
        }
        Ok(false) => {}
        Err(e) => warn!(deployment = %id, "cannot save the deployment's URL: {e}"),
    }
}
