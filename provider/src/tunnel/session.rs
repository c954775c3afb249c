//! One connection's life: Hello/Welcome, (re-)register every desired route, then serve —
//! control messages, route commands from the daemon, and data streams from the gateway —
//! until the connection ends or the provider shuts down.

use std::time::Duration;

use peercompute_tunnel_proto::{
    ControlMessage, ControlReader, GoAwayCode, MAX_VERSION, MIN_VERSION, RefuseCode, write_control,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{ClientState, Command, RegisterError, splice};

const PING_EVERY: Duration = Duration::from_secs(15);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway's code for a tunnel its operator ended (`gateway/src/tunnel.rs`,
/// `OPERATOR_DISCONNECT`): the provider reconnects after its backoff, as for any lost tunnel.
const OPERATOR_DISCONNECT: GoAwayCode = GoAwayCode::Other(6);
/// The gateway's code for a name its operator released: the provider drops it and does not
/// register it again.
const OPERATOR_RELEASE: RefuseCode = RefuseCode::Other(4);
/// The first wait before registering a name again after `TryLater`; doubles to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Names the gateway answered `TryLater` (it could not record them, e.g. its disk is full):
/// they stay desired and are registered again after a backoff, reset by any `Registered`.
struct Retry {
    names: std::collections::BTreeSet<String>,
    backoff: Duration,
    due: Option<tokio::time::Instant>,
}

impl Retry {
    fn new() -> Self {
        Self {
            names: Default::default(),
            backoff: RETRY_FIRST,
            due: None,
        }
    }

    fn later(&mut self, name: String) {
        self.names.insert(name);
        if self.due.is_none() {
            self.due = Some(tokio::time::Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(RETRY_MAX);
        }
    }

    fn registered(&mut self, name: &str) {
        self.names.remove(name);
        self.backoff = RETRY_FIRST;
    }

    /// The names to register now (still desired), clearing the timer.
    fn take(&mut self, state: &ClientState) -> Vec<String> {
        self.due = None;
        std::mem::take(&mut self.names)
            .into_iter()
            .filter(|n| state.desired.contains_key(n))
            .collect()
    }
}

/// How a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// The provider is stopping.
    Shutdown,
    /// Connection lost or closed by the gateway; reconnect.
    Lost(String),
    /// The gateway does not admit this provider; retry later, loudly.
    Refused(String),
    /// The gateway is not the pinned one (it presented this key): stop.
    WrongGateway(peercompute_identity::PeerId),
}

/// Records a command while no connection is up.
pub(crate) fn apply_offline(state: &mut ClientState, cmd: Command) {
    match cmd {
        Command::Register {
            name,
            target,
            reply,
        } => {
            state.desired.insert(name.clone(), target);
            state.waiters.entry(name).or_default().push(reply);
        }
        Command::Unregister { name } => {
            state.desired.remove(&name);
            state
                .routes
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
            // Nobody will register it any more: whoever waits for its URL gets an answer.
            for w in state.waiters.remove(&name).unwrap_or_default() {
                let _ = w.send(Err(RegisterError::Withdrawn { name: name.clone() }));
            }
        }
    }
}

/// A human sentence for a connection error, with the gateway's reason when it gave one.
pub(crate) fn describe_close(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason);
            let code = u16::try_from(close.error_code.into_inner()).map(GoAwayCode::from_u16);
            match code {
                Ok(GoAwayCode::NotAllowed) => format!("not allowed: {reason}"),
                Ok(OPERATOR_DISCONNECT) => {
                    format!("disconnected by the gateway operator: {reason}")
                }
                Ok(code) => format!("closed by the gateway ({code:?}): {reason}"),
                Err(_) => format!("closed by the gateway: {reason}"),
            }
        }
        quinn::ConnectionError::TimedOut => "the gateway stopped answering (timed out)".into(),
        other => other.to_string(),
    }
}

fn end_for(e: &quinn::ConnectionError) -> SessionEnd {
    let text = describe_close(e);
    match e {
        quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code.into_inner() == u64::from(GoAwayCode::NotAllowed.to_u16()) =>
        {
            SessionEnd::Refused(text)
        }
        _ => SessionEnd::Lost(text),
    }
}

/// Where a session publishes what it learns.
pub(crate) struct Announce<'a> {
    pub(crate) status: &'a watch::Sender<super::TunnelStatus>,
    pub(crate) p2p: &'a watch::Sender<Option<super::GatewayP2p>>,
    /// The host the tunnel reached: replaces unspecified IPs in the Welcome's p2p addresses.
    pub(crate) gateway_host: &'a str,
}

/// The gateway's p2p addresses from a Welcome; unparsable ones are skipped (logged).
fn gateway_p2p(gateway_id: &str, addrs: &[String], host: &str) -> Option<super::GatewayP2p> {
    use peercompute_p2p::{Multiaddr, Protocol};
    let peer = peercompute_identity::parse_peer_id(gateway_id).ok()?;
    let host_part = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => Protocol::Ip4(ip),
        Ok(std::net::IpAddr::V6(ip)) => Protocol::Ip6(ip),
        Err(_) => Protocol::Dns(host.to_owned().into()),
    };
    let addrs: Vec<Multiaddr> = addrs
        .iter()
        .filter_map(|a| match a.parse::<Multiaddr>() {
            Ok(m) => Some(m),
            Err(e) => {
                warn!("the gateway announced a bad p2p address {a:?}: {e}");
                None
            }
        })
        .map(|m| {
            m.iter()
                .map(|p| match p {
                    Protocol::Ip4(ip) if ip.is_unspecified() => host_part.clone(),
                    Protocol::Ip6(ip) if ip.is_unspecified() => host_part.clone(),
                    other => other,
                })
                .collect()
        })
        .collect();
    (!addrs.is_empty()).then_some(super::GatewayP2p { peer, addrs })
}

pub(crate) async fn run(
    conn: quinn::Connection,
    state: &mut ClientState,
    commands: &mut mpsc::Receiver<Command>,
    shutdown: &mut watch::Receiver<bool>,
    announce: Announce<'_>,
) -> SessionEnd {
    let status = announce.status;
    let (mut send, recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return end_for(&e),
    };
    let hello = ControlMessage::Hello {
        min_version: MIN_VERSION,
        max_version: MAX_VERSION,
        agent: format!("peercomputed/{}", env!("CARGO_PKG_VERSION")),
    };
    if let Err(e) = write_control(&mut send, &hello).await {
        return conn
            .close_reason()
            .map_or_else(|| SessionEnd::Lost(e.to_string()), |c| end_for(&c));
    }
    let mut reader = ControlReader::new(recv);
    match tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await {
        Ok(Ok(Some(ControlMessage::Welcome {
            version,
            gateway_id,
            p2p_addrs,
        }))) => {
            info!(%gateway_id, version, ?p2p_addrs, "gateway welcomed us");
            let p2p = gateway_p2p(&gateway_id, &p2p_addrs, announce.gateway_host);
            announce.p2p.send_if_modified(|old| {
                let changed = *old != p2p;
                *old = p2p;
                changed
            });
        }
        Ok(Ok(Some(ControlMessage::GoAway { code, message }))) => {
            return SessionEnd::Refused(format!("{code:?}: {message}"));
        }
        Ok(Ok(other)) => {
            conn.close(
                GoAwayCode::ProtocolError.to_u16().into(),
                b"expected Welcome",
            );
            return SessionEnd::Lost(format!("expected Welcome, got {other:?}"));
        }
        Ok(Err(e)) => {
            return conn
                .close_reason()
                .map_or_else(|| SessionEnd::Lost(e.to_string()), |c| end_for(&c));
        }
        Err(_) => return SessionEnd::Lost("no Welcome from the gateway".into()),
    }
    let names: Vec<String> = state.desired.keys().cloned().collect();
    for name in names {
        if write_control(&mut send, &ControlMessage::Register { name })
            .await
            .is_err()
        {
            return lost(&conn);
        }
    }

    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut nonce = 0u64;
    let mut retry = Retry::new();
    loop {
        tokio::select! {
            msg = reader.next() => match msg {
                Ok(Some(msg)) => {
                    if matches!(msg, ControlMessage::Registered { .. }) {
                        status.send_modify(|s| {
                            if let super::TunnelStatus::Connected { registered, .. } = s {
                                *registered += 1;
                            }
                        });
                    }
                    if let Some(reply) = on_control(msg, state, &mut retry)
                        && write_control(&mut send, &reply).await.is_err()
                    {
                        return lost(&conn);
                    }
                }
                Ok(None) => return lost(&conn),
                Err(e) => {
                    if conn.close_reason().is_none() {
                        let msg = format!("bad control frame: {e}");
                        conn.close(GoAwayCode::ProtocolError.to_u16().into(), msg.as_bytes());
                    }
                    return lost(&conn);
                }
            },
            Some(cmd) = commands.recv() => {
                let out = match &cmd {
                    Command::Register { name, .. } => Some(ControlMessage::Register { name: name.clone() }),
                    Command::Unregister { name } => Some(ControlMessage::Unregister { name: name.clone() }),
                };
                apply_offline(state, cmd);
                if let Some(out) = out
                    && write_control(&mut send, &out).await.is_err()
                {
                    return lost(&conn);
                }
            }
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let routes = state.routes.clone();
                    state.splices.spawn(splice::serve_stream(send, recv, routes));
                }
                Err(e) => return end_for(&e),
            },
            Some(_) = state.splices.join_next(), if !state.splices.is_empty() => {}
            _ = tokio::time::sleep_until(retry.due.unwrap_or_else(tokio::time::Instant::now)), if retry.due.is_some() => {
                for name in retry.take(state) {
                    info!(route = %name, "registering `{name}` again");
                    if write_control(&mut send, &ControlMessage::Register { name }).await.is_err() {
                        return lost(&conn);
                    }
                }
            }
            _ = ping.tick() => {
                nonce = nonce.wrapping_add(1);
                if write_control(&mut send, &ControlMessage::Ping { nonce }).await.is_err() {
                    return lost(&conn);
                }
            }
            _ = shutdown.changed() => {
                let bye = ControlMessage::GoAway {
                    code: GoAwayCode::Shutdown,
                    message: "provider shutting down".into(),
                };
                let _ = write_control(&mut send, &bye).await;
                conn.close(GoAwayCode::Shutdown.to_u16().into(), b"provider shutting down");
                return SessionEnd::Shutdown;
            }
        }
    }
}

fn lost(conn: &quinn::Connection) -> SessionEnd {
    conn.close_reason().map_or_else(
        || SessionEnd::Lost("control stream closed".into()),
        |c| end_for(&c),
    )
}

/// Applies a gateway message to the client state; returns a reply if one is due.
fn on_control(
    msg: ControlMessage,
    state: &mut ClientState,
    retry: &mut Retry,
) -> Option<ControlMessage> {
    match msg {
        ControlMessage::Registered { name, url } => {
            retry.registered(&name);
            if let Some(target) = state.desired.get(&name) {
                info!(route = %name, %url, "registered {url} → {}:{}", target.host, target.port);
                state
                    .routes
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.clone(), target.clone());
            }
            for w in state.waiters.remove(&name).unwrap_or_default() {
                let _ = w.send(Ok(url.clone()));
            }
            None
        }
        ControlMessage::Refused {
            name,
            code: RefuseCode::TryLater,
            reason,
        } => {
            // The name stays desired and its waiters keep waiting (a deploy answers "pending"
            // and records the URL once the gateway confirms it).
            let again = retry.backoff;
            warn!(route = %name, "the gateway cannot take `{name}` now: {reason}; registering again in {again:?}");
            if state.desired.contains_key(&name) {
                retry.later(name);
            }
            None
        }
        ControlMessage::Refused { name, code, reason } => {
            if code == OPERATOR_RELEASE {
                warn!(route = %name, "`{name}` was released by the gateway operator: {reason}");
            } else {
                warn!(route = %name, ?code, "the gateway refused `{name}`: {reason}");
            }
            state.desired.remove(&name);
            state
                .routes
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
            for w in state.waiters.remove(&name).unwrap_or_default() {
                let _ = w.send(Err(RegisterError::Refused {
                    name: name.clone(),
                    code,
                    reason: reason.clone(),
                }));
            }
            None
        }
        ControlMessage::Ping { nonce } => Some(ControlMessage::Pong { nonce }),
        ControlMessage::Pong { .. } => None,
        ControlMessage::GoAway { code, message } => {
            // Drain: keep serving streams already open; the connection closes soon.
            if code == OPERATOR_DISCONNECT {
                info!("disconnected by the gateway operator: {message}");
            } else {
                info!(?code, "the gateway is going away: {message}");
            }
            None
        }
        other => {
            warn!("ignoring unexpected message from the gateway: {other:?}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_later_backs_off_from_1_s_doubling_to_30_s_and_registered_resets_it() {
        let mut retry = Retry::new();
        let mut waits = Vec::new();
        for _ in 0..7 {
            let before = tokio::time::Instant::now();
            retry.later("blog".into());
            let due = retry.due.expect("a retry is due");
            waits.push((due - before).as_secs());
            // A second refusal before the timer fires does not push it back.
            retry.later("shop".into());
            assert_eq!(retry.due, Some(due));
            retry.due = None; // what `take` does when the timer fires
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(retry.names.len(), 2);
        retry.registered("blog");
        assert_eq!(retry.backoff, RETRY_FIRST);
        assert!(!retry.names.contains("blog"));
    }

    #[test]
    fn welcome_addresses_get_the_tunnel_host() {
        let id = peercompute_identity::Identity::generate()
            .expect("id")
            .peer_id()
            .to_string();
        let addrs = vec![
            "/ip4/0.0.0.0/tcp/4001".to_owned(),
            "/ip4/0.0.0.0/udp/4001/quic-v1".to_owned(),
            "/ip4/203.0.113.7/tcp/4002".to_owned(),
            "garbage".to_owned(),
        ];
        let got = gateway_p2p(&id, &addrs, "gw.example.com").expect("addresses");
        let shown: Vec<String> = got.addrs.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "/dns/gw.example.com/tcp/4001",
                "/dns/gw.example.com/udp/4001/quic-v1",
                "/ip4/203.0.113.7/tcp/4002"
            ]
        );
        let got = gateway_p2p(&id, &addrs[..1], "10.1.2.3").expect("addresses");
        assert_eq!(got.addrs[0].to_string(), "/ip4/10.1.2.3/tcp/4001");
        assert!(gateway_p2p(&id, &[], "10.1.2.3").is_none());
        assert!(gateway_p2p("not-an-id", &addrs, "10.1.2.3").is_none());
    }

    #[test]
    fn an_operator_disconnect_is_named_and_reconnects() {
        let close = |code: GoAwayCode, reason: &'static [u8]| {
            quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
                error_code: code.to_u16().into(),
                reason: reason.into(),
            })
        };
        let e = close(OPERATOR_DISCONNECT, b"maintenance window");
        assert_eq!(
            describe_close(&e),
            "disconnected by the gateway operator: maintenance window"
        );
        assert!(matches!(end_for(&e), SessionEnd::Lost(_)));
        let e = close(GoAwayCode::NotAllowed, b"revoked");
        assert!(matches!(end_for(&e), SessionEnd::Refused(_)));
    }
}
