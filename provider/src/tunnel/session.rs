//! One connection's life: Hello/Welcome ([`handshake`], run by the dial), (re-)register every
//! desired route, then serve — control messages, route commands from the daemon, and data
//! streams from the gateway — until the connection ends, the provider shuts down, or the link
//! moves the tunnel to another transport ([`SessionEnd::Moved`]; the old connection then
//! finishes its streams in [`drain`]).

use std::time::{Duration, Instant};

use peercompute_tunnel_proto::{
    ControlMessage, ControlReader, FLEET_NAMES_VERSION, GoAwayCode, MAX_VERSION, MIN_VERSION,
    RefuseCode, SHARED_NAMES_VERSION, write_control,
};
use peercompute_tunnel_transport::{BiStream, CloseReason, TunnelConn};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::link::{Link, Step};
use super::{Claim, ClientState, Command, RegisterError, Routes, splice};

const PING_EVERY: Duration = Duration::from_secs(15);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection the tunnel moved away from keeps serving at least this long (the gateway may
/// open streams on it until the names' re-registration on the new one reaches it) ...
const DRAIN_QUIET: Duration = Duration::from_secs(2);
/// ... and at most this long, for the downloads still running on it.
const DRAIN_MAX: Duration = Duration::from_secs(15 * 60);

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
    /// The link moved the tunnel to `next`; `old` finishes its streams apart.
    Moved { next: Box<Opened>, old: Box<Opened> },
}

/// A connection whose control stream is open and welcomed.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) conn: TunnelConn,
    send: WriteHalf<BiStream>,
    reader: ControlReader<ReadHalf<BiStream>>,
    /// The gateway's libp2p meeting point, from its Welcome.
    p2p: Option<super::GatewayP2p>,
    /// The protocol version the Welcome agreed on.
    version: u16,
}

impl Opened {
    /// Says goodbye on the control stream (bounded) and closes the connection.
    pub(crate) async fn close(mut self, message: &str) {
        let bye = ControlMessage::GoAway {
            code: GoAwayCode::Shutdown,
            message: message.to_owned(),
        };
        let _ =
            tokio::time::timeout(Duration::from_secs(1), write_control(&mut self.send, &bye)).await;
        self.conn.close(GoAwayCode::Shutdown, message);
    }
}

/// The registration of desired `name` to send: `RegisterGranted` when its target carries a
/// grant and the gateway speaks shared names (version 2), `RegisterFleet` for a fleet group's
/// name at a gateway of version 3, else `Register`. A name the gateway's version cannot carry
/// is refused here, as the gateway would refuse it, with the reason.
fn registration(
    name: String,
    state: &mut ClientState,
    retry: &mut Retry,
    version: u16,
) -> Option<ControlMessage> {
    let claim = state.desired.get(&name).map(|t| t.claim.clone());
    let needs = match claim {
        None | Some(Claim::Own) => return Some(ControlMessage::Register { name }),
        Some(Claim::Granted(grant)) if version >= SHARED_NAMES_VERSION => {
            return Some(ControlMessage::RegisterGranted { name, grant });
        }
        Some(Claim::Fleet { fleet, group }) if version >= FLEET_NAMES_VERSION => {
            return Some(ControlMessage::RegisterFleet {
                name,
                fleet: fleet.0,
                group,
            });
        }
        Some(Claim::Granted(_)) => ("shared names", SHARED_NAMES_VERSION),
        Some(Claim::Fleet { .. }) => ("fleet group names", FLEET_NAMES_VERSION),
    };
    let refused = ControlMessage::Refused {
        reason: format!(
            "this gateway is too old for {} (tunnel protocol version {version}; `{name}` needs {})",
            needs.0, needs.1
        ),
        name,
        code: RefuseCode::Other(0),
    };
    on_control(refused, state, retry)
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

/// A human sentence for a QUIC connection error, with the gateway's reason when it gave one.
pub(crate) fn describe_close(e: &quinn::ConnectionError) -> String {
    describe(&CloseReason::from_quic(e))
}

/// A human sentence for why a tunnel connection ended.
fn describe(reason: &CloseReason) -> String {
    match reason {
        CloseReason::Peer {
            code: Some(GoAwayCode::NotAllowed),
            reason,
        } => format!("not allowed: {reason}"),
        CloseReason::Peer {
            code: Some(OPERATOR_DISCONNECT),
            reason,
        } => format!("disconnected by the gateway operator: {reason}"),
        CloseReason::Peer {
            code: Some(code),
            reason,
        } => format!("closed by the gateway ({code:?}): {reason}"),
        CloseReason::Peer { code: None, reason } => format!("closed by the gateway: {reason}"),
        CloseReason::Lost(why) if why.contains("timed out") => {
            "the gateway stopped answering (timed out)".into()
        }
        other => other.to_string(),
    }
}

fn end_for(reason: &CloseReason) -> SessionEnd {
    let text = describe(reason);
    match reason {
        CloseReason::Peer {
            code: Some(GoAwayCode::NotAllowed),
            ..
        } => SessionEnd::Refused(text),
        _ => SessionEnd::Lost(text),
    }
}

/// How a session ended when its connection failed: the connection's close reason if it has
/// one, otherwise `fallback`.
fn ended(conn: &TunnelConn, fallback: impl std::fmt::Display) -> SessionEnd {
    conn.close_reason()
        .map_or_else(|| SessionEnd::Lost(fallback.to_string()), |c| end_for(&c))
}

/// Where a session publishes what it learns.
pub(crate) struct Announce<'a> {
    pub(crate) status: &'a watch::Sender<super::TunnelStatus>,
    pub(crate) p2p: &'a watch::Sender<Option<super::GatewayP2p>>,
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

/// Opens the control stream on a fresh connection and exchanges Hello/Welcome. `gateway_host`
/// (the host the tunnel reached) replaces unspecified IPs in the Welcome's p2p addresses.
pub(crate) async fn handshake(conn: TunnelConn, gateway_host: &str) -> Result<Opened, SessionEnd> {
    let stream = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return Err(ended(&conn, e)),
    };
    let (recv, mut send) = tokio::io::split(stream);
    let hello = ControlMessage::Hello {
        min_version: MIN_VERSION,
        max_version: MAX_VERSION,
        agent: format!("peercomputed/{}", env!("CARGO_PKG_VERSION")),
    };
    if let Err(e) = write_control(&mut send, &hello).await {
        return Err(ended(&conn, e));
    }
    let mut reader = ControlReader::new(recv);
    match tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await {
        Ok(Ok(Some(ControlMessage::Welcome {
            version,
            gateway_id,
            p2p_addrs,
        }))) => {
            info!(%gateway_id, version, ?p2p_addrs, transport = %conn.transport(), "gateway welcomed us");
            let p2p = gateway_p2p(&gateway_id, &p2p_addrs, gateway_host);
            Ok(Opened {
                conn,
                send,
                reader,
                p2p,
                version,
            })
        }
        Ok(Ok(Some(ControlMessage::GoAway { code, message }))) => {
            conn.close(GoAwayCode::Shutdown, "refused");
            let text = format!("{code:?}: {message}");
            Err(if code == GoAwayCode::NotAllowed {
                SessionEnd::Refused(format!("not allowed: {message}"))
            } else {
                SessionEnd::Refused(text)
            })
        }
        Ok(Ok(other)) => {
            conn.close(GoAwayCode::ProtocolError, "expected Welcome");
            Err(SessionEnd::Lost(format!("expected Welcome, got {other:?}")))
        }
        Ok(Err(e)) => Err(ended(&conn, e)),
        Err(_) => {
            conn.close(GoAwayCode::ProtocolError, "no Welcome");
            Err(SessionEnd::Lost("no Welcome from the gateway".into()))
        }
    }
}

/// Serves one welcomed connection until it ends or the link moves the tunnel elsewhere.
pub(crate) async fn run(
    opened: Opened,
    state: &mut ClientState,
    commands: &mut mpsc::Receiver<Command>,
    shutdown: &mut watch::Receiver<bool>,
    announce: Announce<'_>,
    link: &mut Link,
) -> SessionEnd {
    let Opened {
        conn,
        mut send,
        mut reader,
        p2p,
        version,
    } = opened;
    let status = announce.status;
    announce.p2p.send_if_modified(|old| {
        let changed = *old != p2p;
        *old = p2p.clone();
        changed
    });
    // The gateway's GoAway, if it sent one: on TCP the close that follows carries no reason.
    let mut said: Option<CloseReason> = None;
    let mut retry = Retry::new();
    let names: Vec<String> = state.desired.keys().cloned().collect();
    for name in names {
        if let Some(msg) = registration(name, state, &mut retry, version)
            && write_control(&mut send, &msg).await.is_err()
        {
            return lost(&conn, &said);
        }
    }

    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut nonce = 0u64;
    // The Ping awaiting its Pong, and when it went out.
    let mut awaiting: Option<(u64, Instant)> = None;
    let mut pong_late = false;
    let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
    loop {
        // On QUIC a late Pong may mean UDP died: TCP is dialled beside it (QUIC's idle
        // timeout would take 30 s to say so). TCP has its keepalive and nothing to fall to.
        let pong_due = awaiting
            .filter(|_| {
                !pong_late && conn.transport() == peercompute_tunnel_transport::Transport::Quic
            })
            .map_or_else(far, |(_, at)| (at + super::choice::PONG_LATE).into());
        tokio::select! {
            // The control stream first: a GoAway that arrived with the connection's end says
            // why it ended (on TCP the close itself carries no reason).
            biased;
            msg = reader.next() => match msg {
                Ok(Some(msg)) => {
                    match &msg {
                        ControlMessage::Registered { .. } => status.send_modify(|s| {
                            if let super::TunnelStatus::Connected { registered, .. } = s {
                                *registered += 1;
                            }
                        }),
                        ControlMessage::GoAway { code, message } => {
                            said = Some(CloseReason::Peer {
                                code: Some(*code),
                                reason: message.clone(),
                            });
                        }
                        ControlMessage::Pong { nonce } if awaiting.is_some_and(|(n, _)| n == *nonce) => {
                            if let Some((_, at)) = awaiting.take() {
                                conn.set_rtt(at.elapsed());
                            }
                            if std::mem::take(&mut pong_late) {
                                link.pong_back();
                            }
                        }
                        _ => {}
                    }
                    if let Some(reply) = on_control(msg, state, &mut retry)
                        && write_control(&mut send, &reply).await.is_err()
                    {
                        return lost(&conn, &said);
                    }
                }
                Ok(None) => return lost(&conn, &said),
                Err(e) => {
                    if conn.close_reason().is_none() {
                        let msg = format!("bad control frame: {e}");
                        conn.close(GoAwayCode::ProtocolError, &msg);
                    }
                    return lost(&conn, &said);
                }
            },
            Some(cmd) = commands.recv() => {
                let registers = match &cmd {
                    Command::Register { name, .. } => Some(name.clone()),
                    Command::Unregister { .. } => None,
                };
                let withdraws = match &cmd {
                    Command::Unregister { name } => Some(ControlMessage::Unregister { name: name.clone() }),
                    Command::Register { .. } => None,
                };
                apply_offline(state, cmd);
                let out = match registers {
                    Some(name) => registration(name, state, &mut retry, version),
                    None => withdraws,
                };
                if let Some(out) = out
                    && write_control(&mut send, &out).await.is_err()
                {
                    return lost(&conn, &said);
                }
            }
            stream = conn.accept_bi() => match stream {
                Ok(stream) => {
                    let routes = state.routes.clone();
                    state.splices.spawn(splice::serve_stream(stream, routes));
                }
                Err(e) => {
                    read_last_words(&mut reader, &mut said).await;
                    return lost_with(&conn, &said, e);
                }
            },
            Some(_) = state.splices.join_next(), if !state.splices.is_empty() => {}
            step = link.next_step() => match step {
                Step::Migrate(next) => {
                    return SessionEnd::Moved {
                        next: Box::new(next),
                        old: Box::new(Opened { conn, send, reader, p2p, version }),
                    };
                }
                // Only the first session of an attempt is served; the link never asks twice.
                Step::Serve(extra) => extra.close("a tunnel is already up").await,
                Step::Retry(_) => {}
            },
            _ = tokio::time::sleep_until(pong_due) => {
                pong_late = true;
                warn!(
                    transport = %conn.transport(),
                    "no Pong from the gateway within {:?}: trying the other transport beside this one",
                    super::choice::PONG_LATE
                );
                link.pong_late();
            }
            _ = tokio::time::sleep_until(retry.due.unwrap_or_else(tokio::time::Instant::now)), if retry.due.is_some() => {
                for name in retry.take(state) {
                    info!(route = %name, "registering `{name}` again");
                    if let Some(msg) = registration(name, state, &mut retry, version)
                        && write_control(&mut send, &msg).await.is_err()
                    {
                        return lost(&conn, &said);
                    }
                }
            }
            _ = ping.tick() => {
                nonce = nonce.wrapping_add(1);
                if awaiting.is_none() {
                    awaiting = Some((nonce, Instant::now()));
                }
                if write_control(&mut send, &ControlMessage::Ping { nonce }).await.is_err() {
                    return lost(&conn, &said);
                }
            }
            _ = shutdown.changed() => {
                Opened { conn, send, reader, p2p, version }.close("provider shutting down").await;
                return SessionEnd::Shutdown;
            }
        }
    }
}

/// A connection the tunnel moved away from: finishes `splices`, the streams the gateway opened
/// on it, serves those it still opens until the names' re-registration on the new connection
/// reaches it, answers Pings, and closes once no stream ran for [`DRAIN_QUIET`] (at most
/// [`DRAIN_MAX`]).
pub(crate) async fn drain(old: Opened, mut splices: JoinSet<()>, routes: Routes) {
    let Opened {
        conn,
        mut send,
        mut reader,
        p2p,
        version,
    } = old;
    let started = Instant::now();
    let mut quiet_since = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut control_open = true;
    let how = loop {
        tokio::select! {
            stream = conn.accept_bi() => match stream {
                Ok(stream) => {
                    splices.spawn(splice::serve_stream(stream, routes.clone()));
                }
                Err(e) => break format!("ended: {e}"),
            },
            Some(_) = splices.join_next(), if !splices.is_empty() => {
                quiet_since = Instant::now();
            }
            msg = reader.next(), if control_open => match msg {
                Ok(Some(ControlMessage::Ping { nonce })) => {
                    let _ = write_control(&mut send, &ControlMessage::Pong { nonce }).await;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => control_open = false,
            },
            _ = tick.tick() => {
                if splices.is_empty() && quiet_since.elapsed() >= DRAIN_QUIET {
                    break "its streams finished".to_owned();
                }
                if started.elapsed() >= DRAIN_MAX {
                    break format!("{} streams cut after {DRAIN_MAX:?}", splices.len());
                }
            }
        }
    };
    debug!(transport = %conn.transport(), "old tunnel connection {how}");
    Opened {
        conn,
        send,
        reader,
        p2p,
        version,
    }
    .close("the tunnel moved to another transport")
    .await;
}

/// The connection ended: reads what the gateway still said on the control stream before its
/// end (bounded), for a GoAway that says why.
async fn read_last_words(
    reader: &mut ControlReader<ReadHalf<BiStream>>,
    said: &mut Option<CloseReason>,
) {
    if said.is_some() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(Some(msg)) = reader.next().await {
            if let ControlMessage::GoAway { code, message } = msg {
                *said = Some(CloseReason::Peer {
                    code: Some(code),
                    reason: message,
                });
                return;
            }
        }
    })
    .await;
}

fn lost(conn: &TunnelConn, said: &Option<CloseReason>) -> SessionEnd {
    lost_with(conn, said, "control stream closed")
}

/// How a session ended whose gateway may have said why in a GoAway first: QUIC's close frame
/// carries the code and reason itself; a TCP close does not, so the GoAway's words count.
fn lost_with(
    conn: &TunnelConn,
    said: &Option<CloseReason>,
    fallback: impl std::fmt::Display,
) -> SessionEnd {
    match (conn.close_reason(), said) {
        (Some(reason), _)
            if reason.code().is_some() && !matches!(reason, CloseReason::Local { .. }) =>
        {
            end_for(&reason)
        }
        (_, Some(goaway)) => end_for(goaway),
        _ => ended(conn, fallback),
    }
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
    fn each_claim_is_sent_as_the_gateways_version_allows() {
        let fleet = peercompute_fleet::FleetId([7; 32]);
        let state = |claim: Claim| {
            let target = super::super::Target {
                host: "127.0.0.1".into(),
                port: 80,
                claim,
            };
            ClientState {
                desired: std::collections::HashMap::from([("web".to_owned(), target)]),
                routes: Default::default(),
                waiters: Default::default(),
                splices: JoinSet::new(),
            }
        };
        let fleet_claim = || Claim::Fleet {
            fleet,
            group: "prod".into(),
        };
        let sent = |claim: Claim, version: u16| {
            let mut state = state(claim);
            let msg = registration("web".into(), &mut state, &mut Retry::new(), version);
            (msg, state.desired.contains_key("web"))
        };
        assert_eq!(
            sent(Claim::Own, 1),
            (Some(ControlMessage::Register { name: "web".into() }), true)
        );
        assert_eq!(
            sent(fleet_claim(), FLEET_NAMES_VERSION),
            (
                Some(ControlMessage::RegisterFleet {
                    name: "web".into(),
                    fleet: [7; 32],
                    group: "prod".into(),
                }),
                true
            )
        );
        // A version-2 gateway cannot carry it: refused here, the name no longer desired.
        let (msg, desired) = sent(fleet_claim(), SHARED_NAMES_VERSION);
        assert_eq!((msg, desired), (None, false));
        let mut state = state(fleet_claim());
        let (tx, rx) = tokio::sync::oneshot::channel();
        state.waiters.insert("web".into(), vec![tx]);
        registration("web".into(), &mut state, &mut Retry::new(), 2);
        let answer = rx.blocking_recv().expect("answered");
        assert!(
            matches!(&answer, Err(RegisterError::Refused { reason, .. }) if reason.contains("too old for fleet group names")),
            "{answer:?}"
        );
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
        assert!(matches!(
            end_for(&CloseReason::from_quic(&e)),
            SessionEnd::Lost(_)
        ));
        let e = close(GoAwayCode::NotAllowed, b"revoked");
        assert!(matches!(
            end_for(&CloseReason::from_quic(&e)),
            SessionEnd::Refused(_)
        ));
    }
}
