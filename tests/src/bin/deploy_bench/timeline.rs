//! One time-ordered record of what the system under test said: each line the gateway, the
//! provider daemon and peerctl log (stamped with the time in the line, which `tracing` writes
//! at the moment of the event), and each Docker engine event about our containers (stamped
//! by the engine, to the nanosecond). All on the wall clock of this one machine, so a run's
//! stages can be read off afterwards (see `stages`) without changing any of the programs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;
use peercompute_runtime::{LABEL_MANAGED, LABEL_PROVIDER};
use tokio::task::JoinHandle;

/// Most entries kept; a runaway log beyond that is counted, not stored.
const CAPACITY: usize = 200_000;

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Gateway,
    Provider,
    Peerctl,
    Docker,
}

/// One line or event.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) at: SystemTime,
    pub(crate) source: Source,
    /// The line without its timestamp and colours; for Docker, `<action> <container name>`.
    pub(crate) text: String,
}

impl Entry {
    /// Whether the text has the whitespace-separated token `token` (`route=bench-3`), so that
    /// `bench-3` does not match `bench-30`.
    pub(crate) fn has_token(&self, token: &str) -> bool {
        self.text.split_whitespace().any(|t| t == token)
    }
}

/// The shared record; clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timeline {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<Entry>,
    dropped: u64,
}

impl Timeline {
    fn push(&self, entry: Entry) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.entries.len() < CAPACITY {
            inner.entries.push(entry);
        } else {
            inner.dropped += 1;
        }
    }

    /// Records a log line: stamped with its own leading RFC 3339 timestamp when it has one,
    /// else with `arrived`.
    pub(crate) fn record_line(&self, source: Source, line: &str, arrived: SystemTime) {
        let line = strip_ansi(line);
        let (at, text) = match split_timestamp(&line) {
            Some((at, rest)) => (at, rest.to_owned()),
            None => (arrived, line.clone()),
        };
        self.push(Entry { at, source, text });
    }

    /// Entries stamped in `[from, to]`, oldest first.
    pub(crate) fn between(&self, from: SystemTime, to: SystemTime) -> Vec<Entry> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found: Vec<Entry> = inner
            .entries
            .iter()
            .filter(|e| e.at >= from && e.at <= to)
            .cloned()
            .collect();
        found.sort_by_key(|e| e.at);
        found
    }

    /// Waits until an entry `matches`, for at most `limit`; whether one did.
    pub(crate) async fn wait_for(&self, limit: Duration, matches: impl Fn(&Entry) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let found = self
                .inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entries
                .iter()
                .any(&matches);
            if found {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How many entries did not fit.
    pub(crate) fn dropped(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dropped
    }

    /// Records the engine's container events for containers labelled with one of
    /// `providers` (our daemon's and the direct baseline's), from now until the task is
    /// aborted. Events are asked for `since` one second ago, so none is missed while the
    /// stream connects.
    pub(crate) fn record_docker_events(
        &self,
        docker: Docker,
        providers: Vec<String>,
    ) -> JoinHandle<()> {
        let timeline = self.clone();
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(Duration::from_secs(1))
            .as_secs();
        tokio::spawn(async move {
            let options = EventsOptions {
                since: Some(since.to_string()),
                until: None,
                filters: Some(HashMap::from([
                    ("type".to_owned(), vec!["container".to_owned()]),
                    ("label".to_owned(), vec![LABEL_MANAGED.to_owned()]),
                ])),
            };
            let mut events = docker.events(Some(options));
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        eprintln!("deploy-bench: the Docker event stream ended: {e}");
                        return;
                    }
                };
                let attributes = event.actor.and_then(|a| a.attributes).unwrap_or_default();
                let ours = attributes
                    .get(LABEL_PROVIDER)
                    .is_some_and(|p| providers.contains(p));
                let (Some(nanos), Some(action), Some(name), true) = (
                    event.time_nano.and_then(|n| u64::try_from(n).ok()),
                    event.action,
                    attributes.get("name"),
                    ours,
                ) else {
                    continue;
                };
                timeline.push(Entry {
                    at: UNIX_EPOCH + Duration::from_nanos(nanos),
                    source: Source::Docker,
                    text: format!("{action} {name}"),
                });
            }
        })
    }
}

/// Removes ANSI colour sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `2026-05-07T10:00:00.123456Z  INFO x: y` → (that time, `INFO x: y`).
fn split_timestamp(line: &str) -> Option<(SystemTime, &str)> {
    let (first, rest) = line.split_once(char::is_whitespace)?;
    let at = humantime::parse_rfc3339(first).ok()?;
    Some((at, rest.trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracing_line_is_stamped_with_its_own_time() {
        let timeline = Timeline::default();
        let arrived = SystemTime::now();
        let line = "\u{1b}[2m2026-05-07T10:00:00.250000Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m peercompute_provider: deployed route=bench-3";
        timeline.record_line(Source::Provider, line, arrived);
        timeline.record_line(Source::Provider, "error: no timestamp", arrived);
        let at = humantime::parse_rfc3339("2026-05-07T10:00:00.25Z").expect("time");
        let all = timeline.between(UNIX_EPOCH, arrived);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].at, at);
        assert_eq!(
            all[0].text,
            "INFO peercompute_provider: deployed route=bench-3"
        );
        assert!(all[0].has_token("route=bench-3"));
        assert!(!all[0].has_token("route=bench-30"));
        assert_eq!(all[1].at, arrived);
        assert_eq!(all[1].text, "error: no timestamp");
    }
}
