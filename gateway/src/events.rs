//! The gateway's event bus: what happened to providers, names, certificates and rate limits,
//! numbered in order, for the admin API's live stream.
//!
//! [`Events::publish`] never blocks and never fails: it numbers the event, keeps it in a
//! bounded ring of recent events (for a subscriber that resumes from the last number it saw)
//! and hands it to a bounded broadcast channel. A subscriber that falls behind by more than
//! the channel holds gets `RecvError::Lagged` and carries on; publishers never wait for it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// Events a subscriber may fall behind by before it is told it lagged.
const CHANNEL_CAPACITY: usize = 1024;
/// Events kept for subscribers that resume with the last number they saw.
const RECENT: usize = 256;

/// One numbered event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct Event {
    /// 1, 2, 3… in publishing order, for this gateway process.
    pub(crate) seq: u64,
    /// When it was published, milliseconds since the Unix epoch.
    pub(crate) at_unix_ms: u64,
    #[serde(flatten)]
    pub(crate) kind: EventKind,
}

/// What happened. Serialised with a `type` field naming the variant in snake_case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum EventKind {
    ProviderConnected {
        peer: String,
        agent: String,
        remote: String,
        /// `quic` or `tcp`.
        transport: String,
    },
    ProviderDisconnected {
        peer: String,
        reason: String,
    },
    NameRegistered {
        name: String,
        peer: String,
    },
    NameRefused {
        name: String,
        peer: String,
        reason: String,
    },
    NameReleased {
        name: String,
        /// The key that owned the name until the operator released it.
        owner: String,
    },
    /// The provider was removed from the allowlist and its tunnel closed.
    ProviderRevoked {
        peer: String,
    },
    CertificateIssued {
        certificate: String,
        /// RFC 3339.
        not_after: String,
    },
    CertificateRenewed {
        certificate: String,
        /// RFC 3339.
        not_after: String,
    },
    CertificateFailed {
        certificate: String,
        error: String,
    },
    RateLimitStarted {
        route: String,
        kind: String,
    },
    RateLimitEnded {
        route: String,
    },
    /// `--cluster`: etcd stopped answering. Registered names keep working; new names are
    /// refused (`TryLater`) until it is back.
    ClusterLost {
        error: String,
    },
    /// `--cluster`: etcd answers again.
    ClusterBack {
        endpoints: String,
    },
}

/// The bus. One per gateway, in [`Shared`](crate::state::Shared).
#[derive(Debug)]
pub(crate) struct Events {
    tx: broadcast::Sender<Arc<Event>>,
    /// The last number handed out (0: none yet).
    seq: AtomicU64,
    recent: Mutex<VecDeque<Arc<Event>>>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            seq: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
    }
}

impl Events {
    /// Numbers `kind`, keeps it among the recent events and sends it to every subscriber.
    /// Never blocks on a subscriber; returns the event's number.
    pub(crate) fn publish(&self, kind: EventKind) -> u64 {
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // Numbering under the ring's lock keeps the ring, and the channel, in seq order.
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let event = Arc::new(Event {
            seq,
            at_unix_ms,
            kind,
        });
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(event.clone());
        // Err only means nobody is subscribed right now.
        let _ = self.tx.send(event);
        seq
    }

    /// A receiver of every event published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// The kept events numbered after `seq`, oldest first (all kept ones for 0). Events older
    /// than the ring are gone: compare the first one's `seq` with `seq + 1` to notice a gap.
    pub(crate) fn recent_since(&self, seq: u64) -> Vec<Arc<Event>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().filter(|e| e.seq > seq).cloned().collect()
    }

    /// The last number handed out (0 before the first event).
    pub(crate) fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

    fn released(name: &str) -> EventKind {
        EventKind::NameReleased {
            name: name.to_owned(),
            owner: "owner".to_owned(),
        }
    }

    #[test]
    fn numbers_are_monotone_and_reach_subscribers_in_order() {
        let events = Events::default();
        assert_eq!(events.last_seq(), 0);
        let mut rx = events.subscribe();
        let seqs: Vec<u64> = (0..5)
            .map(|i| events.publish(released(&format!("n{i}"))))
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert_eq!(events.last_seq(), 5);
        for want in 1..=5 {
            assert_eq!(rx.try_recv().expect("event").seq, want);
        }
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    }

    #[test]
    fn publish_without_subscribers_is_kept_for_resume() {
        let events = Events::default();
        events.publish(released("a"));
        events.publish(released("b"));
        events.publish(released("c"));
        let since: Vec<u64> = events.recent_since(1).iter().map(|e| e.seq).collect();
        assert_eq!(since, vec![2, 3]);
        assert_eq!(events.recent_since(0).len(), 3);
        assert!(events.recent_since(3).is_empty());
    }

    #[test]
    fn recent_ring_is_bounded_and_keeps_the_newest() {
        let events = Events::default();
        for i in 0..(RECENT + 10) {
            events.publish(released(&format!("n{i}")));
        }
        let all = events.recent_since(0);
        assert_eq!(all.len(), RECENT);
        assert_eq!(all.first().expect("oldest").seq, 11);
        assert_eq!(all.last().expect("newest").seq, (RECENT + 10) as u64);
    }

    #[test]
    fn a_slow_subscriber_lags_and_the_publisher_never_waits() {
        let events = Events::default();
        let mut slow = events.subscribe();
        let total = CHANNEL_CAPACITY + 5;
        for i in 0..total {
            events.publish(released(&format!("n{i}")));
        }
        assert!(matches!(slow.try_recv(), Err(TryRecvError::Lagged(5))));
        // After the lag notice it carries on with the oldest event the channel still holds.
        assert_eq!(slow.try_recv().expect("next").seq, 6);
    }

    #[test]
    fn serialises_with_a_snake_case_type_tag() {
        let events = Events::default();
        events.publish(EventKind::ProviderConnected {
            peer: "p".into(),
            agent: "peercomputed/1".into(),
            remote: "192.0.2.1:4000".into(),
            transport: "quic".into(),
        });
        let event = events.recent_since(0).pop().expect("event");
        let json = serde_json::to_value(&*event).expect("json");
        assert_eq!(json["type"], "provider_connected");
        assert_eq!(json["seq"], 1);
        assert_eq!(json["agent"], "peercomputed/1");
        assert!(json["at_unix_ms"].as_u64().expect("ms") > 1_600_000_000_000);
    }

    #[test]
    fn the_schema_names_every_kind_and_the_common_fields() {
        // Event refers to EventKind as a component: both are registered in the document.
        let json = |s: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| {
            serde_json::to_string(&s).expect("schema json")
        };
        let event = json(<Event as utoipa::PartialSchema>::schema());
        assert!(event.contains("#/components/schemas/EventKind"), "{event}");
        assert!(event.contains("at_unix_ms"), "{event}");
        let kind = json(<EventKind as utoipa::PartialSchema>::schema());
        for field in [
            "provider_connected",
            "certificate_failed",
            "rate_limit_ended",
            "route",
        ] {
            assert!(kind.contains(field), "{field} missing from {kind}");
        }
    }
}
