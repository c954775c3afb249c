//! The replay guard: which signed requests a provider has already accepted.
//!
//! A request is accepted only while its timestamp is within `max_skew` seconds of the
//! provider's clock, so a nonce needs remembering only until its timestamp leaves that window;
//! then the request is refused as stale anyway. The guard keeps the nonces of that window,
//! ordered by timestamp so expired ones are dropped cheaply, and refuses new requests when
//! `capacity` nonces are live rather than forgetting one early.
//!
//! To stay sound if the clock steps back, the guard also remembers the newest timestamp it
//! ever dropped and refuses anything at or below it: every recorded request stays refused,
//! whatever the clock does. It is plain data (serde), so the daemon persists it with each
//! accepted request and a restart does not reopen the window for replays. Sans-IO: the
//! caller passes the time.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::signing::Nonce;

/// Accepted distance between a request's timestamp and the provider's clock: 5 minutes.
pub const DEFAULT_MAX_SKEW_SECS: u64 = 300;
/// Most nonces remembered at once (one entry ≈ 60 bytes in memory).
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Why the guard refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "the request was signed at {timestamp}, more than {max_skew} s before this provider's \
         clock ({now}); check the clocks of both machines and retry"
    )]
    Stale {
        timestamp: u64,
        now: u64,
        max_skew: u64,
    },
    #[error(
        "the request was signed at {timestamp}, more than {max_skew} s after this provider's \
         clock ({now}); check the clocks of both machines and retry"
    )]
    Future {
        timestamp: u64,
        now: u64,
        max_skew: u64,
    },
    #[error("request nonce {0} was already used: replayed requests are refused")]
    Replayed(Nonce),
    #[error("{capacity} requests in the last minutes; try again shortly")]
    Full { capacity: usize },
}

/// Nonces of recently accepted requests. See the module docs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "GuardFile", into = "GuardFile")]
pub struct ReplayGuard {
    max_skew: u64,
    capacity: usize,
    /// Requests with a timestamp at or below this are refused: newer ones were forgotten.
    forgotten_up_to: Option<u64>,
    by_time: BTreeSet<(u64, Nonce)>,
    seen: HashSet<Nonce>,
}

impl fmt::Debug for ReplayGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayGuard")
            .field("max_skew", &self.max_skew)
            .field("capacity", &self.capacity)
            .field("forgotten_up_to", &self.forgotten_up_to)
            .field("len", &self.seen.len())
            .finish()
    }
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_SKEW_SECS, DEFAULT_REPLAY_CAPACITY)
    }
}

impl ReplayGuard {
    /// An empty guard accepting timestamps within `max_skew` seconds of the clock and
    /// remembering at most `capacity` nonces.
    pub fn new(max_skew: u64, capacity: usize) -> Self {
        Self {
            max_skew,
            capacity,
            forgotten_up_to: None,
            by_time: BTreeSet::new(),
            seen: HashSet::new(),
        }
    }

    pub fn max_skew(&self) -> u64 {
        self.max_skew
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Whether a request with `nonce` signed at `timestamp` would be accepted at `now`.
    /// Changes nothing.
    pub fn check(&self, nonce: &Nonce, timestamp: u64, now: u64) -> Result<(), ReplayError> {
        if timestamp.saturating_add(self.max_skew) < now
            || self.forgotten_up_to.is_some_and(|t| timestamp <= t)
        {
            return Err(ReplayError::Stale {
                timestamp,
                now,
                max_skew: self.max_skew,
            });
        }
        if timestamp > now.saturating_add(self.max_skew) {
            return Err(ReplayError::Future {
                timestamp,
                now,
                max_skew: self.max_skew,
            });
        }
        if self.seen.contains(nonce) {
            return Err(ReplayError::Replayed(*nonce));
        }
        Ok(())
    }

    /// Checks like [`ReplayGuard::check`], forgets nonces whose timestamps left the window, and
    /// remembers `nonce`. Call it only for requests whose signature holds.
    pub fn record(&mut self, nonce: &Nonce, timestamp: u64, now: u64) -> Result<(), ReplayError> {
        self.check(nonce, timestamp, now)?;
        self.expire(now);
        if self.seen.len() >= self.capacity {
            return Err(ReplayError::Full {
                capacity: self.capacity,
            });
        }
        self.by_time.insert((timestamp, *nonce));
        self.seen.insert(*nonce);
        Ok(())
    }

    /// Forgets the nonces whose requests would be refused as stale at `now` anyway.
    pub fn expire(&mut self, now: u64) {
        while let Some(&(timestamp, nonce)) = self.by_time.first() {
            if timestamp.saturating_add(self.max_skew) >= now {
                break;
            }
            self.by_time.pop_first();
            self.seen.remove(&nonce);
            self.forgotten_up_to =
                Some(self.forgotten_up_to.map_or(timestamp, |t| t.max(timestamp)));
        }
    }
}

/// The persisted form: entries sorted by timestamp, nonces as hex.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardFile {
    max_skew_secs: u64,
    capacity: usize,
    forgotten_up_to: Option<u64>,
    seen: Vec<SeenEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeenEntry {
    nonce: String,
    timestamp: u64,
}

impl From<ReplayGuard> for GuardFile {
    fn from(guard: ReplayGuard) -> Self {
        Self {
            max_skew_secs: guard.max_skew,
            capacity: guard.capacity,
            forgotten_up_to: guard.forgotten_up_to,
            seen: guard
                .by_time
                .iter()
                .map(|(timestamp, nonce)| SeenEntry {
                    nonce: nonce.to_string(),
                    timestamp: *timestamp,
                })
                .collect(),
        }
    }
}

impl TryFrom<GuardFile> for ReplayGuard {
    type Error = String;

    fn try_from(file: GuardFile) -> Result<Self, String> {
        if file.seen.len() > file.capacity {
            return Err(format!(
                "{} nonces recorded, more than the capacity of {}",
                file.seen.len(),
                file.capacity
            ));
        }
        let mut guard = Self::new(file.max_skew_secs, file.capacity);
        guard.forgotten_up_to = file.forgotten_up_to;
        for entry in file.seen {
            let nonce = entry.nonce.parse::<Nonce>()?;
            if !guard.seen.insert(nonce) {
                return Err(format!("nonce {nonce} is recorded twice"));
            }
            guard.by_time.insert((entry.timestamp, nonce));
        }
        Ok(guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(byte: u8) -> Nonce {
        Nonce::from_bytes([byte; 16])
    }

    const T: u64 = 1_700_000_000;

    #[test]
    fn window_and_replays() {
        let mut g = ReplayGuard::new(300, 10);
        assert_eq!(g.record(&n(1), T, T), Ok(()));
        assert_eq!(g.record(&n(1), T, T + 1), Err(ReplayError::Replayed(n(1))));
        assert_eq!(
            g.record(&n(2), T - 300, T),
            Ok(()),
            "edge of the past window"
        );
        assert_eq!(
            g.record(&n(3), T + 300, T),
            Ok(()),
            "edge of the future window"
        );
        assert!(matches!(
            g.check(&n(4), T - 301, T),
            Err(ReplayError::Stale { .. })
        ));
        assert!(matches!(
            g.check(&n(4), T + 301, T),
            Err(ReplayError::Future { .. })
        ));
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn expired_nonces_are_forgotten_but_stay_refused() {
        let mut g = ReplayGuard::new(300, 10);
        g.record(&n(1), T, T).expect("first");
        g.record(&n(2), T + 100, T + 100).expect("second");
        g.expire(T + 301);
        assert_eq!(g.len(), 1, "n(1) left the window");
        // The clock steps back: n(1) is within the window again, but must not be accepted.
        assert!(matches!(
            g.check(&n(1), T, T),
            Err(ReplayError::Stale { .. })
        ));
        assert_eq!(
            g.check(&n(2), T + 100, T + 100),
            Err(ReplayError::Replayed(n(2)))
        );
        assert_eq!(
            g.check(&n(3), T + 1, T + 1),
            Ok(()),
            "newer than what was forgotten"
        );
    }

    #[test]
    fn full_guard_refuses_instead_of_forgetting() {
        let mut g = ReplayGuard::new(300, 2);
        g.record(&n(1), T, T).expect("1");
        g.record(&n(2), T, T).expect("2");
        assert_eq!(
            g.record(&n(3), T, T),
            Err(ReplayError::Full { capacity: 2 })
        );
        assert_eq!(g.record(&n(1), T, T), Err(ReplayError::Replayed(n(1))));
        // Once the old ones expire there is room again.
        assert_eq!(g.record(&n(3), T + 301, T + 301), Ok(()));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn survives_serialisation() {
        let mut g = ReplayGuard::new(300, 10);
        g.record(&n(1), T, T).expect("1");
        g.record(&n(2), T + 301, T + 301).expect("2, expiring 1");
        let json = serde_json::to_string(&g).expect("serialise");
        let back: ReplayGuard = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, g);
        assert_eq!(back.len(), 1);
        assert_eq!(
            back.check(&n(2), T + 301, T + 301),
            Err(ReplayError::Replayed(n(2)))
        );
        assert!(matches!(
            back.check(&n(1), T, T),
            Err(ReplayError::Stale { .. })
        ));
    }

    #[test]
    fn corrupt_files_are_refused() {
        let nonce = "01".repeat(16);
        let cases = [
            format!(r#"{{"max_skew_secs":300,"capacity":1,"forgotten_up_to":null,"seen":[{{"nonce":"{nonce}","timestamp":1}},{{"nonce":"{}","timestamp":1}}]}}"#, "02".repeat(16)),
            format!(r#"{{"max_skew_secs":300,"capacity":5,"forgotten_up_to":null,"seen":[{{"nonce":"{nonce}","timestamp":1}},{{"nonce":"{nonce}","timestamp":2}}]}}"#),
            r#"{"max_skew_secs":300,"capacity":5,"forgotten_up_to":null,"seen":[{"nonce":"xyz","timestamp":1}]}"#.to_owned(),
            r#"{"max_skew_secs":300,"capacity":5,"forgotten_up_to":null,"seen":[],"extra":1}"#.to_owned(),
        ];
        for json in cases {
            assert!(
                serde_json::from_str::<ReplayGuard>(&json).is_err(),
                "{json}"
            );
        }
    }
}
