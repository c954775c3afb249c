//! The Docker network every container joins: a bridge of its own (`pc-sandbox0`) with
//! inter-container traffic off, so one deployment cannot reach another, and a fixed interface
//! name the egress firewall (the `egress` module) can match on. Created on first use through
//! the engine API; no privilege is needed for that part.

use std::collections::HashMap;

use bollard::models::{NetworkCreateRequest, NetworkInspect};

use crate::engine::{DockerRuntime, EngineError, engine_status};
use crate::spec::LABEL_MANAGED;

/// The name of the network every container joins.
pub const SANDBOX_NETWORK: &str = "peercompute-sandbox";
/// The host interface of that network's bridge (what the egress firewall matches).
pub const SANDBOX_BRIDGE: &str = "pc-sandbox0";

const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
const ICC: &str = "com.docker.network.bridge.enable_icc";
const MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";

/// Why the sandbox network is not usable.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A network of that name exists with other settings (made by hand, say).
    #[error(
        "the Docker network {SANDBOX_NETWORK} exists but is not Peer Compute's sandbox network ({why}); remove it (docker network rm {SANDBOX_NETWORK}) and deploy again"
    )]
    Foreign {
        /// What differs.
        why: String,
    },
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The create request of the sandbox network.
fn create_request() -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: SANDBOX_NETWORK.to_owned(),
        driver: Some("bridge".to_owned()),
        internal: Some(false),
        attachable: Some(false),
        enable_ipv6: Some(false),
        options: Some(HashMap::from([
            (BRIDGE_NAME.to_owned(), SANDBOX_BRIDGE.to_owned()),
            (ICC.to_owned(), "false".to_owned()),
            (MASQUERADE.to_owned(), "true".to_owned()),
        ])),
        labels: Some(HashMap::from([(
            LABEL_MANAGED.to_owned(),
            "true".to_owned(),
        )])),
        ..Default::default()
    }
}

/// `Ok` when `network` is the sandbox network as [`create_request`] makes it.
fn check(network: &NetworkInspect) -> Result<(), NetworkError> {
    let foreign = |why: String| Err(NetworkError::Foreign { why });
    if network.driver.as_deref() != Some("bridge") {
        return foreign(format!("driver {:?}, not bridge", network.driver));
    }
    let options = network.options.clone().unwrap_or_default();
    let option = |key: &str| options.get(key).map(String::as_str);
    if option(BRIDGE_NAME) != Some(SANDBOX_BRIDGE) {
        return foreign(format!(
            "bridge interface {:?}, not {SANDBOX_BRIDGE}",
            option(BRIDGE_NAME)
        ));
    }
    if option(ICC) != Some("false") {
        return foreign("containers on it may reach each other".to_owned());
    }
    if network.enable_ipv6 == Some(true) {
        return foreign("it has IPv6, which the egress rules do not filter".to_owned());
    }
    if network.internal == Some(true) {
        return foreign("it is internal: published ports would not work".to_owned());
    }
    Ok(())
}

impl DockerRuntime {
    /// Makes sure the sandbox network exists with the right settings, creating it if not.
    /// Called before every container start (one inspect when it exists), so a network removed
    /// by hand comes back on the next deploy.
    pub async fn ensure_sandbox_network(&self) -> Result<(), NetworkError> {
        let engine = |operation, source| EngineError {
            operation,
            target: SANDBOX_NETWORK.to_owned(),
            source,
        };
        // Twice at most: another daemon on this engine may create it between our two calls.
        for _ in 0..2 {
            match self.docker.inspect_network(SANDBOX_NETWORK, None).await {
                Ok(network) => return check(&network),
                Err(e) if engine_status(&e) == Some(404) => {}
                Err(e) => return Err(engine("inspect network", e).into()),
            }
            match self.docker.create_network(create_request()).await {
                Ok(_) => {
                    tracing::info!(
                        network = SANDBOX_NETWORK,
                        bridge = SANDBOX_BRIDGE,
                        "created the containers' sandbox network"
                    );
                    return Ok(());
                }
                Err(e) if engine_status(&e) == Some(409) => {}
                Err(e) => return Err(engine("create network", e).into()),
            }
        }
        Err(NetworkError::Foreign {
            why: "it was created and removed again while we looked".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_created() -> NetworkInspect {
        let request = create_request();
        NetworkInspect {
            name: Some(request.name),
            driver: request.driver,
            internal: request.internal,
            enable_ipv6: request.enable_ipv6,
            options: request.options,
            ..Default::default()
        }
    }

    #[test]
    fn the_network_as_created_passes_its_own_check() {
        check(&as_created()).expect("our own network");
    }

    #[test]
    fn a_network_with_other_settings_is_refused_with_the_reason() {
        let mut icc = as_created();
        icc.options.as_mut().expect("options").remove(ICC);
        let mut bridge = as_created();
        bridge
            .options
            .as_mut()
            .expect("options")
            .insert(BRIDGE_NAME.to_owned(), "br-other".to_owned());
        let mut internal = as_created();
        internal.internal = Some(true);
        let mut overlay = as_created();
        overlay.driver = Some("overlay".to_owned());
        let mut ipv6 = as_created();
        ipv6.enable_ipv6 = Some(true);
        for (network, why) in [
            (icc, "reach each other"),
            (bridge, "br-other"),
            (internal, "internal"),
            (overlay, "overlay"),
            (ipv6, "IPv6"),
        ] {
            let e = check(&network).expect_err(why).to_string();
            assert!(e.contains(why) && e.contains("docker network rm"), "{e}");
        }
    }
}
