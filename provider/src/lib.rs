//! `peercomputed`: the Peer Compute provider daemon.
//!
//! It dials out to a gateway over QUIC and keeps that tunnel open; every visitor request for
//! one of its routes arrives as a stream and is spliced to a local TCP service.
//!
//! - [`config`](crate::config): settings and the `[PEERID@]HOST:PORT` / `NAME=HOST:PORT` forms.
//! - [`tunnel`](crate::tunnel): the tunnel client — reconnects, re-registers, splices streams
//!   (`tunnel/session.rs`, `tunnel/splice.rs`, `tunnel/backoff.rs`, `tunnel/tls.rs`).
//!
//! The binary parses flags and calls [`run`]; tests drive [`start_tunnel`] directly.

mod config;
mod tunnel;

use std::future::Future;
use std::path::Path;

use peercompute_identity::Identity;
use tokio::sync::watch;
use tracing::{error, info};

pub use config::{Expose, GatewaySpec, ProviderConfig};
pub use tunnel::{
    RegisterError, TlsSetupError, TunnelHandle, TunnelSettings, TunnelStatus, start_tunnel,
};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Identity(#[from] peercompute_identity::IdentityError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("nothing to do: pass --gateway [PEERID@]HOST:PORT so the provider can publish routes")]
    NoGateway,
}

/// Loads (or creates) the provider identity in `home`.
pub fn identity(home: &Path) -> Result<(Identity, bool), ProviderError> {
    Ok(Identity::load_or_create(home)?)
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    config: ProviderConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProviderError> {
    let (identity, created) = identity(&config.home)?;
    if created {
        info!(home = %config.home.display(), "created a new provider identity");
    }
    info!(peer_id = %identity.peer_id(), "provider starting");
    let gateway = config.gateway.clone().ok_or(ProviderError::NoGateway)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let settings = TunnelSettings {
        gateway,
        gateway_ca: config.gateway_ca.clone(),
    };
    let (handle, task) = start_tunnel(&identity, settings, stop_rx)?;
    for expose in &config.expose {
        let handle = handle.clone();
        let expose = expose.clone();
        tokio::spawn(async move {
            if let Err(e) = handle
                .register(&expose.name, &expose.host, expose.port)
                .await
            {
                error!(route = %expose.name, "cannot publish: {e}");
            }
        });
    }
    shutdown.await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = task.await;
    Ok(())
}
