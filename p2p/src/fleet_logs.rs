//! Answering `LogsRequest` on a robot: the asker's authority is checked against the robot's
//! own verified copy of the fleet log (its peer id carries its key; `FleetState::may_view`),
//! then the robot's [`LogSource`] reads the group's container. A node without a source (the
//! gateway, a client) answers that it is not a robot.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use libp2p::PeerId;
use peercompute_fleet::{FleetId, FleetMessage, LogsQuery, MemberKey};

use crate::fleet_hub::{FleetHub, unix_now};

/// How long a robot's source may take to read the logs (inside the exchange's timeout).
const SOURCE_TIMEOUT: Duration = Duration::from_secs(10);

/// The lines of one answer, oldest first, and whether a limit left some out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogLines {
    pub lines: Vec<String>,
    pub truncated: bool,
}

/// Reads a fleet group's container logs on a robot; `Err` is the reason the asker reads.
pub type LogSource =
    Arc<dyn Fn(FleetId, LogsQuery) -> BoxFuture<'static, Result<LogLines, String>> + Send + Sync>;

/// The answer to a `LogsRequest` from `peer`: `Logs`, or `Error` saying why not.
pub(crate) async fn answer_logs(
    hub: &FleetHub,
    peer: PeerId,
    fleet: FleetId,
    query: LogsQuery,
) -> FleetMessage {
    match read_logs(hub, peer, fleet, query).await {
        Ok(LogLines { lines, truncated }) => FleetMessage::Logs { lines, truncated },
        Err(message) => FleetMessage::Error { message },
    }
}

async fn read_logs(
    hub: &FleetHub,
    peer: PeerId,
    fleet: FleetId,
    query: LogsQuery,
) -> Result<LogLines, String> {
    let Some(source) = hub.log_source() else {
        return Err(
            "not a robot: this node runs no fleet containers (logs are asked of the robots)"
                .to_owned(),
        );
    };
    query.check()?;
    let who = MemberKey::from_peer_id(&peer)
        .ok_or_else(|| format!("{peer} is not an Ed25519 peer id, so it is no fleet member"))?;
    let state = hub
        .with_log(&fleet, |log| log.state().cloned())
        .flatten()
        .ok_or_else(|| format!("fleet {fleet} is not held by this robot"))?;
    state
        .may_view(&who, &query.group, unix_now())
        .map_err(|refusal| {
            format!(
                "refused: may not read the logs of group {}: {refusal}",
                query.group
            )
        })?;
    tokio::time::timeout(SOURCE_TIMEOUT, source(fleet, query))
        .await
        .map_err(|_| format!("reading the container logs took over {SOURCE_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use peercompute_fleet::{FleetLog, Grant, Op, Role};
    use peercompute_identity::Identity;

    use super::*;
    use crate::fleet_hub::HubPolicy;

    fn identity() -> Identity {
        Identity::generate().expect("an identity")
    }

    fn query(group: &str) -> LogsQuery {
        LogsQuery {
            group: group.into(),
            ..LogsQuery::default()
        }
    }

    async fn error_of(hub: &FleetHub, peer: PeerId, fleet: FleetId, q: LogsQuery) -> String {
        match answer_logs(hub, peer, fleet, q).await {
            FleetMessage::Error { message } => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn only_keys_allowed_to_view_the_group_reach_a_robots_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = HubPolicy {
            admit: Arc::new(|_| true),
            accept_new_fleets: true,
            max_fleets: 2,
            max_entries: 100,
        };
        let (hub, _) = FleetHub::open(dir.path(), policy).expect("hub");
        let (fleet_key, viewer, stranger) = (identity(), identity(), identity());
        let fleet = FleetId(fleet_key.public_key_bytes());
        let mut log = FleetLog::new(fleet);
        let now = unix_now();
        let grant = Grant {
            member: MemberKey(viewer.public_key_bytes()),
            role: Role::Viewer,
            groups: vec!["staging".into()],
            expires_at: None,
        };
        for op in [
            Op::Genesis {
                name: "lekiwi".into(),
            },
            Op::Grant(grant),
        ] {
            let entry = log.author(fleet_key.signing_key(), op, now).expect("entry");
            log.insert(entry.clone(), now).expect("valid");
            hub.insert(fleet, vec![entry], None);
        }

        // No source: not a robot, whoever asks.
        let message = error_of(&hub, viewer.peer_id(), fleet, query("staging")).await;
        assert!(message.starts_with("not a robot"), "{message}");

        hub.set_log_source(Arc::new(|_, q: LogsQuery| {
            Box::pin(async move {
                Ok(LogLines {
                    lines: vec![format!("{} line", q.group)],
                    truncated: false,
                })
            })
        }));
        assert_eq!(
            answer_logs(&hub, viewer.peer_id(), fleet, query("staging")).await,
            FleetMessage::Logs {
                lines: vec!["staging line".into()],
                truncated: false
            },
            "the positive control"
        );
        let message = error_of(&hub, viewer.peer_id(), fleet, query("production")).await;
        assert!(
            message.contains("group production") && message.contains("may act only in groups"),
            "{message}"
        );
        let message = error_of(&hub, stranger.peer_id(), fleet, query("staging")).await;
        assert!(
            message.contains("not a member of the fleet with a role"),
            "{message}"
        );
        let other = FleetId(identity().public_key_bytes());
        let message = error_of(&hub, viewer.peer_id(), other, query("staging")).await;
        assert!(message.contains("is not held"), "{message}");
        let mut big = query("staging");
        big.grep = Some("x".repeat(peercompute_fleet::MAX_GREP + 1));
        let message = error_of(&hub, viewer.peer_id(), fleet, big).await;
        assert!(message.contains("grep text"), "{message}");
    }
}
