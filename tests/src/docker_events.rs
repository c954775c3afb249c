//! The Docker engine's own clock for latency figures: [`DockerEvents`] records the `create`,
//! `start` and `die` events of containers carrying a provider label, each stamped with the
//! engine's `timeNano`, from the moment it is started. Tests wait on what was recorded
//! ([`DockerEvents::wait_for`]) and measure from a wall-clock instant to an event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::EventsOptions;
use futures_util::StreamExt;
use tokio::sync::watch;

/// One container event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// `create`, `start` or `die`.
    pub action: String,
    pub container: String,
    /// The container's provider label (`<peer id>/fleet` for a robot's fleet apps).
    pub provider: String,
    /// The engine's time of the event, nanoseconds since the Unix epoch.
    pub at_nanos: i64,
}

/// Container events recorded in the background; see the module docs. Stops when dropped.
#[derive(Debug)]
pub struct DockerEvents {
    seen: Arc<Mutex<Vec<ContainerEvent>>>,
    count: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl DockerEvents {
    /// Starts recording events of containers labelled `label_key` (any value) that happen
    /// from now on.
    pub async fn start(label_key: &str) -> DockerEvents {
        let docker = Docker::connect_with_defaults().expect("a Docker engine");
        // Events from this instant on, replayed by the engine if the subscription lands
        // later: nothing is missed, and no readiness wait is needed.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970");
        let since = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
        let options = EventsOptions {
            since: Some(since),
            filters: Some(HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                (
                    "event".to_owned(),
                    vec!["create".to_owned(), "start".to_owned(), "die".to_owned()],
                ),
                ("label".to_owned(), vec![label_key.to_owned()]),
            ])),
            ..Default::default()
        };
        let seen: Arc<Mutex<Vec<ContainerEvent>>> = Arc::default();
        let (count_tx, count) = watch::channel(0);
        let (sink, key) = (seen.clone(), label_key.to_owned());
        let task = tokio::spawn(async move {
            let mut stream = Box::pin(docker.events(Some(options)));
            loop {
                let next = stream.next().await;
                let Some(Ok(message)) = next else {
                    eprintln!("docker events: the stream ended: {next:?}");
                    return;
                };
                let actor = message.actor.unwrap_or_default();
                let attributes = actor.attributes.unwrap_or_default();
                let event = ContainerEvent {
                    action: message.action.unwrap_or_default(),
                    container: actor.id.unwrap_or_default(),
                    provider: attributes.get(&key).cloned().unwrap_or_default(),
                    at_nanos: message.time_nano.unwrap_or_default(),
                };
                let n = {
                    let mut seen = sink.lock().unwrap_or_else(|p| p.into_inner());
                    seen.push(event);
                    seen.len()
                };
                let _ = count_tx.send(n);
            }
        });
        DockerEvents { seen, count, task }
    }

    /// Everything recorded so far, in the engine's order.
    pub fn all(&self) -> Vec<ContainerEvent> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits (at most `secs`) until `done` holds for the events recorded; returns them.
    pub async fn wait_for(
        &self,
        secs: u64,
        what: &str,
        done: impl Fn(&[ContainerEvent]) -> bool,
    ) -> Vec<ContainerEvent> {
        let mut count = self.count.clone();
        crate::within(secs, what, async {
            loop {
                let all = self.all();
                if done(&all) {
                    return all;
                }
                if count.changed().await.is_err() {
                    panic!("docker events: the recorder stopped while waiting for {what}");
                }
            }
        })
        .await
    }
}

impl Drop for DockerEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Nanoseconds since the Unix epoch of `t` (the wall clock the engine's `timeNano` uses).
pub fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The events of `provider` with `action`, from the `from`-th recorded event on.
pub fn of(
    events: &[ContainerEvent],
    from: usize,
    provider: &str,
    action: &str,
) -> Vec<ContainerEvent> {
    events
        .iter()
        .skip(from)
        .filter(|e| e.provider == provider && e.action == action)
        .cloned()
        .collect()
}
