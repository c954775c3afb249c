//! The gateway's admin event stream read in the background, each message stamped when it
//! arrived, so a test or a benchmark can measure how long an event took to reach a subscriber:
//! from the action that caused it (`cause→delivered`, monotonic clock) and from the moment
//! the gateway published it (`emitted→delivered`, the event's `at_unix_ms` against the wall
//! clock of the same machine).

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::admin::{AdminClient, SseMessage};

/// One message and when it arrived.
#[derive(Debug, Clone)]
pub struct Seen {
    pub msg: SseMessage,
    /// Parsed `data` (Null when not JSON).
    pub json: Value,
    pub at: Instant,
    /// Wall clock at arrival, milliseconds since the Unix epoch.
    pub wall_ms: u64,
}

impl Seen {
    /// Milliseconds from `cause` to arrival.
    pub fn cause_ms(&self, cause: Instant) -> f64 {
        self.at.saturating_duration_since(cause).as_secs_f64() * 1e3
    }

    /// Milliseconds from the gateway's `at_unix_ms` to arrival (millisecond resolution).
    pub fn emitted_ms(&self) -> f64 {
        let emitted = self.json["at_unix_ms"].as_u64().unwrap_or(self.wall_ms);
        self.wall_ms.saturating_sub(emitted) as f64
    }
}

/// A subscription whose messages are collected as they arrive.
#[derive(Debug)]
pub struct EventLog {
    seen: Arc<Mutex<Vec<Seen>>>,
    arrived: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventLog {
    /// Subscribes to `/api/v1/events` and returns once the opening snapshot arrived.
    pub async fn start(admin: &AdminClient) -> Self {
        let mut reader = admin.events(None).await;
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let arrived = Arc::new(Notify::new());
        let (log, notify) = (seen.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            while let Some(msg) = reader.next().await {
                let at = Instant::now();
                let wall_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                let json = serde_json::from_str(&msg.data).unwrap_or(Value::Null);
                log.lock().expect("event log").push(Seen {
                    msg,
                    json,
                    at,
                    wall_ms,
                });
                notify.notify_waiters();
            }
        });
        let log = Self {
            seen,
            arrived,
            task,
        };
        log.wait_from(0, 10, "snapshot", |_| true).await;
        log
    }

    /// How many messages arrived so far (a cursor for [`EventLog::wait_from`]).
    pub fn mark(&self) -> usize {
        self.seen.lock().expect("event log").len()
    }

    /// The first message at index `from` or later of `event` type whose data `pred` accepts,
    /// waiting up to `secs`.
    pub async fn wait_from(
        &self,
        from: usize,
        secs: u64,
        event: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Seen {
        crate::within(secs, &format!("a {event} event"), async {
            loop {
                let notified = self.arrived.notified();
                if let Some(found) = self
                    .seen
                    .lock()
                    .expect("event log")
                    .iter()
                    .skip(from)
                    .find(|s| s.msg.event == event && pred(&s.json))
                {
                    return found.clone();
                }
                notified.await;
            }
        })
        .await
    }

    /// Every message that arrived, in order.
    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().expect("event log").clone()
    }
}
