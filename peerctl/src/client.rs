//! Reaching a provider and exchanging one signed request with it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peercompute_identity::{Identity, PeerId, TrustStore};
use peercompute_p2p::{Framed, Multiaddr, Node, NodeConfig, control_protocol};
use peercompute_tunnel_proto::{ControlPlaneMessage, Nonce, Request, SignedEnvelope};

use crate::exit::{CliError, Kind};

/// How to reach providers.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Look for providers on the LAN.
    pub mdns: bool,
    /// How long to try to reach a provider.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            mdns: true,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A connected client for one provider.
#[derive(Debug)]
pub struct Client {
    identity: Identity,
    node: Node,
    provider: PeerId,
}

impl Client {
    /// Resolves `peer` (id or alias) in our trust file and connects to it.
    pub async fn connect(
        identity: Identity,
        trust: &TrustStore,
        peer: &str,
        options: &ClientOptions,
    ) -> Result<Self, CliError> {
        let entry = trust.resolve(peer).map_err(|_| {
            CliError::new(
                Kind::Trust,
                format!(
                    "you do not trust `{peer}`: add it first with `peerctl peers add {peer} --addr /ip4/<host>/tcp/9000`"
                ),
            )
        })?;
        let provider = entry.peer_id;
        let addrs: Vec<Multiaddr> = entry.addrs.clone();
        let node = Node::start(
            &identity,
            NodeConfig {
                listen: Vec::new(),
                mdns: options.mdns,
                max_connections: 16,
            },
        )
        .await
        .map_err(|e| CliError::new(Kind::Other, e.to_string()))?;
        let deadline = tokio::time::Instant::now() + options.connect_timeout;
        let mut last_error = String::from("no address known and none found on the LAN");
        loop {
            match tokio::time::timeout_at(deadline, node.dial(provider, addrs.clone())).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => {}
            }
            // With no stored address, mDNS may still find it: retry until the deadline.
            if tokio::time::Instant::now() >= deadline || !addrs.is_empty() && !options.mdns {
                let shown = if addrs.is_empty() {
                    "no stored address".to_owned()
                } else {
                    addrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(CliError::new(
                    Kind::Unreachable,
                    format!(
                        "cannot reach provider {provider} ({shown}): {last_error}. Is peercomputed running there? Add its address with `peerctl peers add {provider} --addr /ip4/<host>/tcp/9000`"
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(Self {
            identity,
            node,
            provider,
        })
    }

    pub fn provider(&self) -> PeerId {
        self.provider
    }

    /// How the provider is reached now (address and round-trip time once measured).
    pub async fn path(&self) -> Option<peercompute_p2p::PeerPath> {
        self.node.path(self.provider).await
    }

    /// Sends `request` signed for the provider; returns the stream to read the answers from.
    pub async fn send(&self, request: &Request) -> Result<Framed, CliError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let envelope = SignedEnvelope::sign(
            self.identity.signing_key(),
            self.provider,
            request,
            Nonce::random(),
            now,
        )
        .map_err(|e| CliError::new(Kind::BadRequest, e.to_string()))?;
        self.send_envelope(envelope).await
    }

    /// Our identity (to sign envelopes by hand, e.g. in tests of the provider's checks).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Sends an already signed envelope as is.
    pub async fn send_envelope(&self, envelope: SignedEnvelope) -> Result<Framed, CliError> {
        let mut control = self.node.control();
        let stream = control
            .open_stream(self.provider, control_protocol())
            .await
            .map_err(|e| {
                CliError::new(
                    Kind::Unreachable,
                    format!("cannot open a control stream: {e}"),
                )
            })?;
        let mut framed = Framed::new(stream);
        framed
            .write(&ControlPlaneMessage::Signed(envelope))
            .await
            .map_err(|e| {
                CliError::new(Kind::Unreachable, format!("cannot send the request: {e}"))
            })?;
        Ok(framed)
    }

    /// Reads the next answer; a protocol `Error` becomes a [`CliError`] of the right kind.
    pub async fn next(framed: &mut Framed) -> Result<ControlPlaneMessage, CliError> {
        match framed.read().await {
            Ok(Some(ControlPlaneMessage::Error(e))) => {
                Err(CliError::new(Kind::of(e.code), e.message))
            }
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(CliError::new(
                Kind::Other,
                "the provider closed the stream without an answer",
            )),
            Err(e) => Err(CliError::new(
                Kind::Other,
                format!("bad answer from the provider: {e}"),
            )),
        }
    }
}
