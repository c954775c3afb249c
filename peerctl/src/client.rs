//! Reaching a provider and exchanging one signed request with it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peercompute_identity::{Identity, PeerId, TrustStore};
use peercompute_p2p::{Framed, Multiaddr, Node, NodeConfig, NodeError, control_protocol};
use peercompute_tunnel_proto::{ControlPlaneMessage, Nonce, Request, SignedEnvelope};

use crate::exit::{CliError, Kind};

/// How to reach providers.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Look for providers on the LAN.
    pub mdns: bool,
    /// How long to try to reach a provider.
    pub connect_timeout: Duration,
    /// Gateways to look the provider up at (and relay through) when no stored address or
    /// mDNS answers: peer id and addresses.
    pub gateways: Vec<(PeerId, Vec<Multiaddr>)>,
    /// How long stored addresses and mDNS get before the gateways are tried.
    pub direct_window: Duration,
    /// After a relayed connection, how long to wait for hole punching to make it direct.
    pub hole_punch_wait: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            mdns: true,
            connect_timeout: Duration::from_secs(10),
            gateways: Vec::new(),
            direct_window: Duration::from_millis(1500),
            hole_punch_wait: Duration::from_secs(3),
        }
    }
}

/// Dials `peer` at `addrs` (plus mDNS) until it answers or `deadline`; the last error.
async fn dial_direct(
    node: &Node,
    peer: PeerId,
    addrs: &[Multiaddr],
    mdns: bool,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let mut last_error = String::from("no address known and none found on the LAN");
    loop {
        match tokio::time::timeout_at(deadline, node.dial(peer, addrs.to_vec())).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => {}
        }
        // With no stored address, mDNS may still find it: retry until the deadline.
        if tokio::time::Instant::now() >= deadline || !addrs.is_empty() && !mdns {
            return Err(last_error);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Dials `peer` through each gateway's relay in turn until one holds a slot for it.
/// Returns, on failure, one line per gateway saying what went wrong there.
pub(crate) async fn dial_via_gateways(
    node: &Node,
    peer: PeerId,
    gateways: &[(PeerId, Vec<Multiaddr>)],
    deadline: tokio::time::Instant,
) -> Result<(), Vec<String>> {
    let mut why = Vec::new();
    let step = |r: Result<Result<(), NodeError>, _>| match r {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer in time".to_owned()),
    };
    for (gw, addrs) in gateways {
        if let Err(e) = dial_gateway(node, *gw, addrs, deadline).await {
            why.push(e);
            continue;
        }
        // The gateway's relay is the directory: it holds a slot for every provider
        // registered there, and answers "no reservation" for anyone else.
        let ordered: Vec<Multiaddr> = peercompute_p2p::quic_first(addrs)
            .into_iter()
            .flatten()
            .collect();
        let relayed = circuits_through(*gw, &ordered, peer);
        match step(tokio::time::timeout_at(deadline, node.dial(peer, relayed)).await) {
            Ok(()) => return Ok(()),
            Err(e) => why.push(format!("gateway {gw}: {}", relay_failure(&e))),
        }
    }
    Err(why)
}

/// Dials the gateway `gw` at `addrs`, QUIC first (so the gateway observes a UDP address of
/// ours for hole punching); on failure, one line saying where and why.
pub(crate) async fn dial_gateway(
    node: &Node,
    gw: PeerId,
    addrs: &[Multiaddr],
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let mut dialed = Err("no address".to_owned());
    for group in peercompute_p2p::quic_first(addrs) {
        dialed = match tokio::time::timeout_at(deadline, node.dial(gw, group)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("no answer in time".to_owned()),
        };
        if dialed.is_ok() {
            break;
        }
    }
    dialed.map_err(|e| {
        let shown = addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        format!("gateway {gw} unreachable at {shown}: {e}")
    })
}

/// A node for fleet commands: no listening socket; with `lan`, mDNS looks for the fleet's
/// robots on the LAN (it asks at once, and robots answer within milliseconds).
pub(crate) async fn start_fleet_node(identity: &Identity, lan: bool) -> Result<Node, CliError> {
    Node::start(
        identity,
        NodeConfig {
            listen: Vec::new(),
            mdns: lan,
            max_connections: if lan { 64 } else { 8 },
            ..NodeConfig::default()
        },
    )
    .await
    .map_err(|e| CliError::new(Kind::Other, format!("cannot start the libp2p node: {e}")))
}

/// `<gateway address>/p2p/<gateway>/p2p-circuit/p2p/<peer>` for each gateway address.
fn circuits_through(gateway: PeerId, addrs: &[Multiaddr], peer: PeerId) -> Vec<Multiaddr> {
    use peercompute_p2p::Protocol;
    addrs
        .iter()
        .map(|a| {
            let mut a = a.clone();
            if !matches!(a.iter().last(), Some(Protocol::P2p(_))) {
                a.push(Protocol::P2p(gateway));
            }
            a.with(Protocol::P2pCircuit).with(Protocol::P2p(peer))
        })
        .collect()
}

/// What a failed dial through a gateway's relay means, in words: the relay holds no slot for
/// the provider (it counts as "not registered there"), refused the circuit, or failed.
fn relay_failure(error: &str) -> String {
    let lower = error.to_ascii_lowercase();
    if lower.contains("no reservation") {
        "provider not registered there: the gateway's relay holds no slot for it (its peercomputed is not connected to this gateway, or the gateway no longer admits it)".to_owned()
    } else if lower.contains("resource limit") || lower.contains("permission denied") {
        format!("relay refused the circuit (over its limits or not permitted): {error}")
    } else {
        format!("relay failed: {error}")
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
        let via_gateways = !options.gateways.is_empty();
        let node = Node::start(
            &identity,
            NodeConfig {
                // Hole punching needs sockets others can answer to: listen on ephemeral
                // ports (only when a gateway may be used).
                listen: if via_gateways {
                    vec![
                        "/ip4/0.0.0.0/udp/0/quic-v1".parse().expect("multiaddr"),
                        "/ip4/0.0.0.0/tcp/0".parse().expect("multiaddr"),
                    ]
                } else {
                    Vec::new()
                },
                mdns: options.mdns,
                max_connections: 16,
                hole_punch_wait: options.hole_punch_wait,
                ..NodeConfig::default()
            },
        )
        .await
        .map_err(|e| CliError::new(Kind::Other, e.to_string()))?;
        let deadline = tokio::time::Instant::now() + options.connect_timeout;
        let try_direct = !addrs.is_empty() || options.mdns;
        let direct_deadline = if via_gateways {
            (tokio::time::Instant::now() + options.direct_window).min(deadline)
        } else {
            deadline
        };
        let direct = if try_direct {
            dial_direct(&node, provider, &addrs, options.mdns, direct_deadline).await
        } else {
            Err("no stored address and mDNS is off".to_owned())
        };
        if let Err(direct_error) = direct {
            let shown = if addrs.is_empty() {
                "no stored address".to_owned()
            } else {
                addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if !via_gateways {
                return Err(CliError::new(
                    Kind::Unreachable,
                    format!(
                        "cannot reach provider {provider} ({shown}): {direct_error}. Is peercomputed running there? Add its address with `peerctl peers add {provider} --addr /ip4/<host>/tcp/9000`, or a gateway it uses with `peerctl gateways add PEERID@MULTIADDR`"
                    ),
                ));
            }
            if let Err(why) = dial_via_gateways(&node, provider, &options.gateways, deadline).await
            {
                let not_registered = why.iter().all(|w| w.contains("not registered"));
                let head = if not_registered {
                    format!("provider {provider} is not registered at any known gateway")
                } else {
                    format!("cannot reach provider {provider}")
                };
                return Err(CliError::new(
                    Kind::Unreachable,
                    format!(
                        "{head}: directly ({shown}): {direct_error}; {}",
                        why.join("; ")
                    ),
                ));
            }
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

    /// Relayed addresses the provider announced: the gateways it is registered at.
    pub async fn provider_circuits(&self) -> Vec<Multiaddr> {
        self.node.announced_circuits(self.provider).await
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
        // One retry: a connection may close just as the stream is opened on it (a relayed
        // one replaced by a direct one, an idle one timing out) while another is up.
        let stream = match control.open_stream(self.provider, control_protocol()).await {
            Ok(s) => s,
            Err(first) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                control
                    .open_stream(self.provider, control_protocol())
                    .await
                    .map_err(|e| {
                        CliError::new(
                            Kind::Unreachable,
                            format!("cannot open a control stream: {e} (first attempt: {first})"),
                        )
                    })?
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> PeerId {
        Identity::generate().expect("identity").peer_id()
    }

    #[test]
    fn circuits_go_through_each_gateway_address() {
        let (gw, peer) = (id(), id());
        let addrs: Vec<Multiaddr> = [
            "/ip4/203.0.113.7/udp/4001/quic-v1".to_owned(),
            format!("/dns/gw.example.com/tcp/4001/p2p/{gw}"),
        ]
        .iter()
        .map(|a| a.parse().expect("multiaddr"))
        .collect();
        let got: Vec<String> = circuits_through(gw, &addrs, peer)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                format!("/ip4/203.0.113.7/udp/4001/quic-v1/p2p/{gw}/p2p-circuit/p2p/{peer}"),
                format!("/dns/gw.example.com/tcp/4001/p2p/{gw}/p2p-circuit/p2p/{peer}"),
            ]
        );
    }

    #[test]
    fn relay_failures_say_what_happened() {
        let cases = [
            (
                "Failed to connect to destination.: Relay has no reservation for destination.",
                "provider not registered there",
            ),
            (
                "Failed to connect to destination.: Relay reported resource limit exceeded",
                "relay refused the circuit",
            ),
            (
                "Failed to connect: Permission denied",
                "relay refused the circuit",
            ),
            ("no answer in time", "relay failed: no answer in time"),
        ];
        for (error, want) in cases {
            let got = relay_failure(error);
            assert!(got.starts_with(want), "{error:?} → {got:?}");
        }
    }
}
