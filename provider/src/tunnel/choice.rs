//! Which transport the tunnel to one gateway uses (`--transport auto|quic|tcp`), sans-IO as
//! quinn-proto: [`Choice`] never touches a socket and never reads the clock. The link feeds it
//! what happened (a dial up or failed, a session lost, a late Pong, the time) and carries out
//! the [`Action`]s it returns. The rules (issue 14, `docs/plans/reachability.md` §2):
//!
//! 1. Auto starts with QUIC; after [`QUIC_ALONE`] without a handshake it dials TCP beside it
//!    (happy eyeballs), at once when QUIC fails without an answer. The first one up serves.
//! 2. A QUIC handshake that completes after TCP won moves the tunnel to QUIC.
//! 3. On TCP, QUIC is probed every 30-60 s (jitter, so a fleet behind one firewall does not
//!    probe in step).
//! 4. A QUIC session that dies within [`FLAP_WINDOW`] of a move to QUIC (UDP that flaps)
//!    doubles the probe interval, up to [`MAX_PROBE_EVERY`], and the next start dials TCP at
//!    once.
//! 5. On QUIC, a Pong missing [`PONG_LATE`] after a Ping dials TCP beside it, and the tunnel
//!    moves to TCP when that is up (QUIC's idle timeout would take 30 s to say UDP died).
//!
//! A gateway that answers and refuses is not a UDP problem: the link reports it as a refusal,
//! never as [`Event::QuicSilent`], and nothing falls back.

use std::time::{Duration, Instant};

pub(crate) use peercompute_tunnel_transport::Transport as Via;

/// How long QUIC is tried alone before TCP is dialled beside it.
pub(crate) const QUIC_ALONE: Duration = Duration::from_secs(1);
/// A QUIC session lost this soon after a move to QUIC counts as flapping.
pub(crate) const FLAP_WINDOW: Duration = Duration::from_secs(60);
/// The QUIC probe interval on TCP: uniform in `[PROBE_EVERY, 2 × PROBE_EVERY)`, doubled
/// while UDP flaps, up to [`MAX_PROBE_EVERY`].
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(30);
pub(crate) const MAX_PROBE_EVERY: Duration = Duration::from_secs(600);
/// On QUIC: a Pong this late dials TCP beside it.
pub(crate) const PONG_LATE: Duration = Duration::from_secs(5);

/// `--transport`: how the tunnel reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportMode {
    /// QUIC first, TCP when UDP gets no answer, back to QUIC when it works again.
    #[default]
    Auto,
    Quic,
    Tcp,
}

impl TransportMode {
    /// The forms `--transport` and the config file take.
    pub const FORMS: [&'static str; 3] = ["auto", "quic", "tcp"];
}

impl std::fmt::Display for TransportMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Quic => "quic",
            Self::Tcp => "tcp",
        })
    }
}

impl std::str::FromStr for TransportMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "quic" => Ok(Self::Quic),
            "tcp" => Ok(Self::Tcp),
            other => Err(format!(
                "`{other}` is not a tunnel transport: use auto (QUIC, TCP when UDP is blocked), quic or tcp"
            )),
        }
    }
}

/// What happened, as the link saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A QUIC session is up (handshake and Welcome).
    QuicUp,
    /// A QUIC dial got no answer (UDP blocked, or the gateway is down).
    QuicSilent,
    /// A TCP session is up.
    TcpUp,
    /// A TCP dial failed.
    TcpFailed,
    /// The session over this transport ended.
    SessionLost { via: Via },
    /// On QUIC: a Ping got no Pong within [`PONG_LATE`].
    PongLate,
    /// On QUIC: a Pong came back.
    PongBack,
}

/// What the link must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Action {
    /// Dial QUIC; `probe` when a TCP session serves meanwhile (a short timeout will do).
    DialQuic {
        probe: bool,
    },
    DialTcp,
    /// The first session: serve over it.
    Serve(Via),
    /// A second session is up: move to it (new streams go there, the old session finishes
    /// its streams and closes).
    Migrate {
        to: Via,
    },
    /// A dial that lost the race came up: close it.
    Close(Via),
    /// Nothing up and nothing dialling: back off, then [`Choice::start`] again.
    Retry,
}

/// The transport choice for one gateway.
#[derive(Debug)]
pub(crate) struct Choice {
    mode: TransportMode,
    /// The transport serving now.
    serving: Option<Via>,
    quic_dialing: bool,
    tcp_dialing: bool,
    /// When TCP is dialled beside a QUIC dial still under way.
    tcp_due: Option<Instant>,
    /// When QUIC is probed next (serving over TCP).
    probe_due: Option<Instant>,
    probe_every: Duration,
    /// When the tunnel last moved to QUIC from TCP.
    moved_to_quic: Option<Instant>,
    /// UDP flapped: the next start dials TCP at once.
    tcp_first: bool,
    /// On QUIC, a Pong is late: a TCP session that comes up takes over.
    quic_doubtful: bool,
    /// xorshift state for the probe jitter.
    rng: u64,
}

impl Choice {
    /// `seed` drives the probe jitter (any value; 0 is replaced).
    pub(crate) fn new(mode: TransportMode, seed: u64) -> Self {
        Self {
            mode,
            serving: None,
            quic_dialing: false,
            tcp_dialing: false,
            tcp_due: None,
            probe_due: None,
            probe_every: PROBE_EVERY,
            moved_to_quic: None,
            tcp_first: false,
            quic_doubtful: false,
            rng: seed.max(1),
        }
    }

    /// The transport serving now.
    pub(crate) fn serving(&self) -> Option<Via> {
        self.serving
    }

    /// The current QUIC probe interval's base (doubled while UDP flaps).
    pub(crate) fn probe_every(&self) -> Duration {
        self.probe_every
    }

    /// The link dropped every dial under way (an attempt ended): none is pending any more.
    pub(crate) fn abandon_dials(&mut self) {
        self.quic_dialing = false;
        self.tcp_dialing = false;
        self.tcp_due = None;
        self.probe_due = None;
    }

    /// Nothing serves (at start, or after a lost session and its backoff): dial.
    pub(crate) fn start(&mut self, now: Instant) -> Vec<Action> {
        self.serving = None;
        self.tcp_due = None;
        self.probe_due = None;
        self.quic_doubtful = false;
        match self.mode {
            TransportMode::Quic => self.dial_quic(false),
            TransportMode::Tcp => self.dial_tcp(),
            TransportMode::Auto if self.tcp_first => {
                // UDP flapped: serve over TCP, and probe QUIC later.
                self.dial_tcp()
            }
            TransportMode::Auto => {
                self.tcp_due = Some(now + QUIC_ALONE);
                self.dial_quic(false)
            }
        }
    }

    /// When [`Self::on_timeout`] next has something to do.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        [self.tcp_due, self.probe_due].into_iter().flatten().min()
    }

    /// Time passed.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.tcp_due.is_some_and(|at| at <= now) {
            self.tcp_due = None;
            if self.serving.is_none() {
                actions.extend(self.dial_tcp());
            }
        }
        if self.probe_due.is_some_and(|at| at <= now) {
            self.probe_due = None;
            if self.serving == Some(Via::Tcp) {
                actions.extend(self.dial_quic(true));
            }
        }
        actions
    }

    /// Something happened.
    pub(crate) fn on(&mut self, now: Instant, event: Event) -> Vec<Action> {
        match event {
            Event::QuicUp => {
                self.quic_dialing = false;
                self.tcp_first = false;
                match self.serving {
                    None => {
                        self.tcp_due = None;
                        self.serving = Some(Via::Quic);
                        vec![Action::Serve(Via::Quic)]
                    }
                    Some(Via::Tcp) => {
                        self.serving = Some(Via::Quic);
                        self.probe_due = None;
                        self.moved_to_quic = Some(now);
                        vec![Action::Migrate { to: Via::Quic }]
                    }
                    Some(Via::Quic) => vec![Action::Close(Via::Quic)],
                }
            }
            Event::QuicSilent => {
                self.quic_dialing = false;
                match self.serving {
                    // No answer over UDP: TCP now, not at the end of the wait.
                    None if self.mode == TransportMode::Auto => {
                        self.tcp_due = None;
                        self.dial_tcp()
                    }
                    None => self.retry_if_idle(),
                    Some(Via::Tcp) => {
                        self.schedule_probe(now);
                        Vec::new()
                    }
                    Some(Via::Quic) => Vec::new(),
                }
            }
            Event::TcpUp => {
                self.tcp_dialing = false;
                match self.serving {
                    None => {
                        self.serving = Some(Via::Tcp);
                        if self.mode == TransportMode::Auto {
                            self.schedule_probe(now);
                        }
                        vec![Action::Serve(Via::Tcp)]
                    }
                    Some(Via::Quic) if self.quic_doubtful => {
                        self.serving = Some(Via::Tcp);
                        self.quic_doubtful = false;
                        self.schedule_probe(now);
                        vec![Action::Migrate { to: Via::Tcp }]
                    }
                    Some(_) => vec![Action::Close(Via::Tcp)],
                }
            }
            Event::TcpFailed => {
                self.tcp_dialing = false;
                if self.serving.is_none() {
                    self.retry_if_idle()
                } else {
                    Vec::new()
                }
            }
            Event::SessionLost { via } => {
                if self.serving != Some(via) {
                    return Vec::new();
                }
                self.serving = None;
                self.probe_due = None;
                self.quic_doubtful = false;
                if via == Via::Quic
                    && self.mode == TransportMode::Auto
                    && self
                        .moved_to_quic
                        .is_some_and(|at| now.saturating_duration_since(at) < FLAP_WINDOW)
                {
                    self.probe_every = (self.probe_every * 2).min(MAX_PROBE_EVERY);
                    self.tcp_first = true;
                }
                self.retry_if_idle()
            }
            Event::PongLate => {
                if self.serving == Some(Via::Quic)
                    && self.mode == TransportMode::Auto
                    && !self.quic_doubtful
                {
                    self.quic_doubtful = true;
                    return self.dial_tcp();
                }
                Vec::new()
            }
            Event::PongBack => {
                self.quic_doubtful = false;
                Vec::new()
            }
        }
    }

    fn dial_quic(&mut self, probe: bool) -> Vec<Action> {
        if self.quic_dialing {
            return Vec::new();
        }
        self.quic_dialing = true;
        vec![Action::DialQuic { probe }]
    }

    fn dial_tcp(&mut self) -> Vec<Action> {
        if self.tcp_dialing {
            return Vec::new();
        }
        self.tcp_dialing = true;
        vec![Action::DialTcp]
    }

    fn retry_if_idle(&mut self) -> Vec<Action> {
        if self.quic_dialing || self.tcp_dialing || self.tcp_due.is_some() {
            return Vec::new();
        }
        vec![Action::Retry]
    }

    fn schedule_probe(&mut self, now: Instant) {
        // xorshift64: jitter in [0, probe_every).
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let base = u64::try_from(self.probe_every.as_millis()).unwrap_or(u64::MAX);
        let jitter = Duration::from_millis(self.rng % base.max(1));
        self.probe_due = Some(now + self.probe_every + jitter);
    }
}

#[cfg(test)]
#[path = "choice_tests.rs"]
mod tests;
