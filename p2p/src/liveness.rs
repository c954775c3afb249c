//! Connection liveness from ping, sans-IO: which connections answered their pings lately,
//! and which to close because they stopped.
//!
//! libp2p-ping 0.48 measures round trips but never closes a connection: a TCP connection
//! whose peer vanished (a robot off the LAN) stays "connected" until TCP's retransmissions
//! give up, minutes later, and while it does nobody dials the peer again — it looks
//! connected. [`Liveness`] is fed the ping results and the time by the event loop and says
//! which connection to close ([`Liveness::ping_failed`]) and whether a peer's connections are
//! doubtful ([`Liveness::doubtful`]: a rediscovered peer is dialled anew rather than trusted).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::swarm::ConnectionId;

/// How often each connection is pinged, and how long a ping may take. On a LAN a round trip
/// takes well under a millisecond and over a relay or the WAN well under a second, so 5 s is
/// a generous timeout; pinging every 5 s costs two 32-byte frames per connection. Together
/// with [`CLOSE_AFTER_REPORTED`] a dead connection is closed 15–25 s after its peer vanished
/// (the next ping after up to 5 s, 5 s to time out, 5 s to the next, up to 10 s for it to
/// fail), instead of TCP's minutes; a single lost ping (a Wi-Fi hiccup) never closes one.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(5);
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Ping failures reported in a row after which a connection is closed. libp2p-ping 0.48
/// swallows the first failure in a row ("free", for old peers) and reports every later one,
/// so one reported failure means two consecutive pings failed.
pub(crate) const CLOSE_AFTER_REPORTED: u32 = 1;
/// A connection with no ping answered for this long has at least one ping that failed or
/// hangs: it is no proof the peer is there.
pub(crate) const CONFIRMED_FOR: Duration =
    Duration::from_secs(PING_INTERVAL.as_secs() + PING_TIMEOUT.as_secs() + 1);

#[derive(Debug, Clone)]
struct Health {
    peer: PeerId,
    /// When the connection opened or last answered a ping.
    last_ok: Instant,
    /// Failures reported since the last answered ping.
    failures: u32,
}

/// The liveness of every connection of one node.
#[derive(Debug)]
pub(crate) struct Liveness {
    close_after: u32,
    confirmed_for: Duration,
    conns: HashMap<ConnectionId, Health>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new(CLOSE_AFTER_REPORTED, CONFIRMED_FOR)
    }
}

impl Liveness {
    pub(crate) fn new(close_after: u32, confirmed_for: Duration) -> Self {
        Self {
            close_after: close_after.max(1),
            confirmed_for,
            conns: HashMap::new(),
        }
    }

    /// A connection to `peer` is up (its handshake just proved the peer there).
    pub(crate) fn opened(&mut self, connection: ConnectionId, peer: PeerId, now: Instant) {
        self.conns.insert(
            connection,
            Health {
                peer,
                last_ok: now,
                failures: 0,
            },
        );
    }

    /// A ping on `connection` was answered.
    pub(crate) fn ping_ok(&mut self, connection: ConnectionId, now: Instant) {
        if let Some(h) = self.conns.get_mut(&connection) {
            h.last_ok = now;
            h.failures = 0;
        }
    }

    /// A ping failure was reported on `connection`; true when it must be closed now (once:
    /// later failures of a connection being closed return false).
    pub(crate) fn ping_failed(&mut self, connection: ConnectionId) -> bool {
        let Some(h) = self.conns.get_mut(&connection) else {
            return false;
        };
        h.failures = h.failures.saturating_add(1);
        h.failures == self.close_after
    }

    /// A connection ended.
    pub(crate) fn closed(&mut self, connection: ConnectionId) {
        self.conns.remove(&connection);
    }

    /// Whether some connection to `peer` answered recently (or just opened) and failed no
    /// ping since.
    pub(crate) fn confirmed(&self, peer: &PeerId, now: Instant) -> bool {
        self.conns.values().any(|h| {
            h.peer == *peer
                && h.failures == 0
                && now.saturating_duration_since(h.last_ok) < self.confirmed_for
        })
    }

    /// Whether connections to `peer` are up but none is [`confirmed`](Self::confirmed): the
    /// peer may be gone, and a new dial must not be answered by these.
    pub(crate) fn doubtful(&self, peer: &PeerId, now: Instant) -> bool {
        self.conns.values().any(|h| h.peer == *peer) && !self.confirmed(peer, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    #[test]
    fn defaults_close_after_two_failed_pings_in_a_row() {
        // libp2p-ping reports the second failure in a row first: that one closes.
        let mut l = Liveness::default();
        let (p, t0) = (PeerId::random(), Instant::now());
        l.opened(conn(1), p, t0);
        assert!(
            l.ping_failed(conn(1)),
            "close at the first reported failure"
        );
        assert!(!l.ping_failed(conn(1)), "asked once only");
        assert!(
            !l.ping_failed(conn(9)),
            "an unknown connection is never closed"
        );
    }

    /// Steps on one peer's connections: (connection, what happened, seconds since the
    /// start) and what is expected after it: (close it?, confirmed?, doubtful?).
    #[test]
    fn table() {
        #[derive(Clone, Copy, Debug)]
        enum Ev {
            Open,
            Ok,
            Fail,
            Close,
        }
        use Ev::*;
        type Row = (usize, Ev, u64, bool, bool, bool);
        let cases: &[(&str, &[Row])] = &[
            (
                "a connection answering its pings stays confirmed",
                &[
                    (1, Open, 0, false, true, false),
                    (1, Ok, 5, false, true, false),
                    (1, Ok, 10, false, true, false),
                    (1, Ok, 15, false, true, false),
                ],
            ),
            (
                "one failure is forgiven by the next answer; two in a row close",
                &[
                    (1, Open, 0, false, true, false),
                    (1, Fail, 10, false, false, true),
                    (1, Ok, 15, false, true, false),
                    (1, Fail, 25, false, false, true),
                    (1, Fail, 35, true, false, true),
                    (1, Close, 36, false, false, false),
                ],
            ),
            (
                "a new connection confirms a peer whose old one is doubtful",
                &[
                    (1, Open, 0, false, true, false),
                    (1, Fail, 12, false, false, true),
                    (2, Open, 13, false, true, false),
                    (1, Fail, 22, true, true, false),
                    (1, Close, 22, false, true, false),
                ],
            ),
        ];
        for (name, steps) in cases {
            let mut l = Liveness::new(2, CONFIRMED_FOR);
            let (p, t0) = (PeerId::random(), Instant::now());
            for (i, &(c, ev, at, close, confirmed, doubtful)) in steps.iter().enumerate() {
                let now = t0 + Duration::from_secs(at);
                let closes = match ev {
                    Open => {
                        l.opened(conn(c), p, now);
                        false
                    }
                    Ok => {
                        l.ping_ok(conn(c), now);
                        false
                    }
                    Fail => l.ping_failed(conn(c)),
                    Close => {
                        l.closed(conn(c));
                        false
                    }
                };
                let got = (closes, l.confirmed(&p, now), l.doubtful(&p, now));
                assert_eq!(got, (close, confirmed, doubtful), "{name}: step {i} {ev:?}");
            }
        }
        // Silence alone: confirmed until CONFIRMED_FOR has passed without an answer.
        let mut l = Liveness::default();
        let (p, t0) = (PeerId::random(), Instant::now());
        l.opened(conn(1), p, t0);
        assert!(l.confirmed(&p, t0 + CONFIRMED_FOR - Duration::from_millis(1)));
        assert!(l.doubtful(&p, t0 + CONFIRMED_FOR));
        assert!(
            !l.doubtful(&PeerId::random(), t0),
            "no connection: not doubtful"
        );
    }
}
