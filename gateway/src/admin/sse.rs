//! `GET /api/v1/events`: the live stream of the event bus ([`crate::events`]) and the
//! per-second traffic ticks, as Server-Sent Events.
//!
//! Message ids are `BOOT-SEQ`: the gateway run (its start, Unix ms) and the event's number,
//! which starts again at 1 in each run. The stream opens with a `snapshot` message (the last
//! [`SNAPSHOT`] events as a JSON array, its `id` the newest one's) — or, with a `Last-Event-ID` header, with every kept event
//! after that number, each as its own message. Then each event goes out as `id: SEQ`,
//! `event: TYPE`, `data: JSON`, and each traffic tick as `event: traffic` (no id: ticks are
//! not resumable). A subscriber that fell behind the bus, or asked to resume from events no
//! longer kept, gets `event: lagged` with `{"missed": N}` and should re-fetch the lists. A
//! comment line every 15 s keeps proxies from closing an idle stream. With the p2p meeting
//! point, `event: fleet` (`{"fleet": ID, "entries": N}`, no id) tells of new entries in a
//! fleet's log (a release, an enrolment), so the fleet page re-reads at once.
//!
//! The subscription is taken before the snapshot is read, and events already sent are
//! skipped by number, so nothing is lost or repeated in between.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::AdminState;
use super::model::TrafficTickView;
use crate::events::{Event, Events};
use crate::traffic::TrafficTick;
use peercompute_p2p::fleet_hub::FleetChange;

/// Events in the opening snapshot.
pub(crate) const SNAPSHOT: usize = 50;
/// Interval of the keep-alive comment.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Open event streams at most, so streams cannot hold every connection of the listener
/// ([`peercompute_ops::serve::MAX_CONNECTIONS`]) and starve the probes and the API.
pub(crate) const MAX_STREAMS: usize = 16;
/// How often an open stream checks that its token is still in the file.
const RECHECK: Duration = Duration::from_secs(1);

struct Feed {
    /// The listener and the `Authorization` the stream was opened with, looked at again every
    /// [`RECHECK`]: a token removed from the file ends its open streams too.
    st: Arc<AdminState>,
    authorization: Option<HeaderValue>,
    recheck: tokio::time::Interval,
    /// One of [`MAX_STREAMS`], given back when the stream ends.
    _slot: OwnedSemaphorePermit,
    events: Receiver<Arc<Event>>,
    ticks: Receiver<Arc<TrafficTick>>,
    /// New entries in the fleets' logs (releases, enrolments), when the meeting point runs.
    fleets: Option<Receiver<FleetChange>>,
    /// The highest event number sent so far.
    sent: u64,
    /// Messages to send before reading the channels again.
    queued: std::collections::VecDeque<SseEvent>,
}

fn message(event: &Event, boot: u64) -> SseEvent {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    let kind = serde_json::to_value(event)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "event".to_owned());
    SseEvent::default()
        .id(format!("{boot}-{}", event.seq))
        .event(kind)
        .data(data)
}

fn lagged(missed: u64) -> SseEvent {
    SseEvent::default()
        .event("lagged")
        .data(format!("{{\"missed\":{missed}}}"))
}

/// The next change of the fleets' logs; never resolves without a meeting point.
async fn next_fleet_change(
    fleets: &mut Option<Receiver<FleetChange>>,
) -> Result<FleetChange, RecvError> {
    match fleets {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The event number to resume after, from a `Last-Event-ID` of `BOOT-SEQ`; `None` (a fresh
/// snapshot) when it is malformed or from another run of the gateway, whose numbers meant
/// other events.
fn resume_point(last_event_id: &str, boot: u64) -> Option<u64> {
    let (b, seq) = last_event_id.trim().split_once('-')?;
    (b.parse::<u64>().ok()? == boot).then(|| seq.parse().ok())?
}

/// The messages that open a stream.
fn opening(events: &Events, last_event_id: Option<u64>, boot: u64) -> (Vec<SseEvent>, u64) {
    match last_event_id {
        // A number from before a restart (numbers start again at 1) gets a fresh snapshot.
        Some(after) if after <= events.last_seq() => {
            let kept = events.recent_since(after);
            let mut out = Vec::with_capacity(kept.len() + 1);
            let first = kept.first().map_or(events.last_seq() + 1, |e| e.seq);
            if first > after + 1 {
                out.push(lagged(first - after - 1));
            }
            let sent = kept.last().map_or(after, |e| e.seq);
            out.extend(kept.iter().map(|e| message(e, boot)));
            (out, sent)
        }
        _ => {
            let kept = events.recent_since(0);
            let tail = &kept[kept.len().saturating_sub(SNAPSHOT)..];
            let sent = tail.last().map_or(events.last_seq(), |e| e.seq);
            let tail: Vec<&Event> = tail.iter().map(|e| &**e).collect();
            let data = serde_json::to_string(&tail).unwrap_or_else(|_| "[]".to_owned());
            let snapshot = SseEvent::default()
                .id(format!("{boot}-{sent}"))
                .event("snapshot")
                .data(data);
            (vec![snapshot], sent)
        }
    }
}

/// The live event stream.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", security(("bearer" = [])),
    params(("Last-Event-ID" = Option<String>, Header, description = "resume after this event id (`BOOT-SEQ`, as sent)")),
    responses(
        (status = 200, content_type = "text/event-stream", body = Event, description =
            "Server-Sent Events; the schema is that of one event's `data`. `snapshot` (data: array of events), then one message per event \
             (`id`: `BOOT-SEQ`, the gateway run and the event's number, `event`: its type, `data`: the event as JSON with `seq`, `at_unix_ms`, \
             `type` and the type's fields), `traffic` (data: TrafficTickView) every second, and \
             `lagged` (data: {\"missed\": N}) when events were missed"),
        (status = 401, description = "token missing or unknown"),
        (status = 503, description = "too many open event streams; retry after Retry-After seconds")))]
pub(crate) async fn events(State(st): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let Ok(slot) = st.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("{MAX_STREAMS} event streams are open already; retry later\n"),
        )
            .into_response();
    };
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| resume_point(v, st.boot));
    // Subscribe first: an event published while the opening is built is both kept and sent,
    // and `sent` drops the repeat.
    let events = st.shared.events.subscribe();
    let ticks = st.shared.traffic.subscribe_ticks();
    let fleets = st.shared.fleet.get().map(|hub| hub.subscribe());
    let (opening, sent) = opening(&st.shared.events, last_event_id, st.boot);
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        authorization: headers.get(header::AUTHORIZATION).cloned(),
        st: st.clone(),
        recheck,
        _slot: slot,
        events,
        ticks,
        fleets,
        sent,
        queued: opening.into(),
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(next) = feed.queued.pop_front() {
                return Some((Ok::<_, Infallible>(next), feed));
            }
            tokio::select! {
                _ = feed.recheck.tick() => {
                    if let Some(tokens) = &feed.st.tokens {
                        // Gone from the file: the stream ends (the page then asks again).
                        feed.authorization.as_ref().and_then(|a| tokens.check(a))?;
                    }
                }
                got = feed.events.recv() => match got {
                    Ok(event) if event.seq <= feed.sent => continue,
                    Ok(event) => {
                        feed.sent = event.seq;
                        return Some((Ok(message(&event, feed.st.boot)), feed));
                    }
                    Err(RecvError::Lagged(n)) => return Some((Ok(lagged(n)), feed)),
                    Err(RecvError::Closed) => return None,
                },
                got = feed.ticks.recv() => match got {
                    Ok(tick) => {
                        let data = serde_json::to_string(&TrafficTickView::from(&*tick))
                            .unwrap_or_else(|_| "{}".to_owned());
                        return Some((Ok(SseEvent::default().event("traffic").data(data)), feed));
                    }
                    // A missed tick is not worth a message: the next one comes in a second.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                },
                got = next_fleet_change(&mut feed.fleets) => match got {
                    Ok(change) => {
                        let data = serde_json::json!({
                            "fleet": change.fleet.to_string(),
                            "entries": change.entries.len(),
                        });
                        return Some((Ok(SseEvent::default().event("fleet").data(data.to_string())), feed));
                    }
                    // Missed changes: one message still tells the page to re-read the fleets.
                    Err(RecvError::Lagged(_)) => {
                        let data = serde_json::json!({"fleet": null, "entries": 0}).to_string();
                        return Some((Ok(SseEvent::default().event("fleet").data(data)), feed));
                    }
                    Err(RecvError::Closed) => feed.fleets = None,
                },
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;

    fn publish(events: &Events, n: usize) {
        for i in 0..n {
            events.publish(EventKind::NameReleased {
                name: format!("n{i}"),
                owner: "o".into(),
            });
        }
    }

    /// The wire text of `msgs`, as a client reads it.
    fn wire(msgs: Vec<SseEvent>) -> String {
        msgs.into_iter().map(|m| format!("{m:?}")).collect()
    }

    #[test]
    fn a_fresh_stream_opens_with_the_last_events_as_one_snapshot() {
        let events = Events::default();
        publish(&events, SNAPSHOT + 7);
        let (msgs, sent) = opening(&events, None, 0);
        assert_eq!(msgs.len(), 1);
        assert_eq!(sent, (SNAPSHOT + 7) as u64);
        let text = wire(msgs);
        assert!(text.contains("snapshot"), "{text}");
        assert!(
            !text.contains("\\\"seq\\\":7,"),
            "older than the snapshot: {text}"
        );
        assert!(text.contains("\\\"seq\\\":8,"), "{text}");
        let (msgs, sent) = opening(&Events::default(), None, 0);
        assert_eq!((msgs.len(), sent), (1, 0), "empty bus: an empty snapshot");
    }

    #[test]
    fn resume_only_within_the_same_run() {
        assert_eq!(resume_point("17-5", 17), Some(5));
        assert_eq!(resume_point(" 17-5 ", 17), Some(5));
        assert_eq!(resume_point("16-5", 17), None, "another run");
        assert_eq!(resume_point("5", 17), None);
        assert_eq!(resume_point("17-x", 17), None);
    }

    #[test]
    fn resume_replays_after_the_id_and_reports_a_gap() {
        let events = Events::default();
        publish(&events, 10);
        let (msgs, sent) = opening(&events, Some(7), 0);
        assert_eq!((msgs.len(), sent), (3, 10));
        let (msgs, sent) = opening(&events, Some(10), 0);
        assert_eq!((msgs.len(), sent), (0, 10), "up to date");
        // 300 published, 256 kept: resuming from 2 misses 3..=44.
        publish(&events, 290);
        let (msgs, sent) = opening(&events, Some(2), 0);
        assert_eq!(sent, 300);
        let text = wire(msgs);
        assert!(
            text.contains("lagged") && text.contains("\\\"missed\\\":42"),
            "{text}"
        );
        // An id from before a restart (larger than any here): a fresh snapshot.
        let (msgs, _) = opening(&events, Some(10_000), 0);
        assert!(wire(msgs).contains("snapshot"));
    }
}
