//! `peerctl fleet logs --group G`: the container logs of a group's fleet app, fanned out to
//! every robot of the group. The robots are the members whose groups include G in the local
//! copy of the log, brought in step with the gateways first as every read command does. Each
//! robot is reached through the configured gateways' relays (`<gw>/p2p-circuit/p2p/<robot>`),
//! all in parallel, each within `--timeout`; the robot checks our role itself before it
//! answers. Lines are printed robot by robot (name order), each prefixed `name | `.
//!
//! Failures are reported per robot on stderr with the reason (unreachable, refused, no app)
//! and set the exit code: every robot answered → 0; some did not → 1 (their lines are still
//! printed); none did → 4 (unreachable), or 3 (trust) when every robot refused us.

use std::time::Duration;

use peercompute_fleet::{FleetState, LogsQuery};
use peercompute_identity::Identity;
use peercompute_p2p::fleet_hub::{HubError, LogLines, request_logs};
use peercompute_p2p::{Multiaddr, Node, NodeConfig, PeerId};
use serde::Serialize;

use super::config::Fleets;
use super::read::refresh;
use super::{Ctx, print_json};
use crate::client::dial_via_gateways;
use crate::exit::{CliError, Kind};

/// What `fleet logs` was asked.
#[derive(Debug, Clone)]
pub(crate) struct LogsArgs {
    pub(crate) group: String,
    pub(crate) app: Option<String>,
    pub(crate) since: Option<Duration>,
    pub(crate) grep: Option<String>,
    pub(crate) tail: Option<u32>,
}

/// A robot of the group, as the log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Robot {
    pub(crate) name: String,
    pub(crate) peer: PeerId,
}

/// Why one robot gave no lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Not reached (dial, stream or timeout).
    Unreachable(String),
    /// It answered with a refusal or an error (no app, not allowed…).
    Refused(String),
}

/// One robot's answer, as `--json` prints it.
#[derive(Debug, Serialize)]
struct RobotLogs<'a> {
    robot: &'a str,
    peer_id: String,
    lines: &'a [String],
    truncated: bool,
    error: Option<String>,
}

/// `fleet logs`.
pub(super) async fn logs(ctx: &Ctx, args: LogsArgs) -> Result<(), CliError> {
    let chosen = Fleets::load(&ctx.home)?.choose(ctx.fleet_arg.as_deref())?;
    let local = ctx.local()?;
    refresh(ctx, &local, &chosen).await?;
    let state = local.state(&chosen.id)?;
    let robots = robots_of(&state, &args.group);
    if robots.is_empty() {
        return Err(CliError::new(
            Kind::NotFound,
            format!(
                "no robot of fleet {} is in group {} (see `peerctl fleet members`)",
                chosen.name, args.group
            ),
        ));
    }
    if ctx.gateways.is_empty() {
        return Err(CliError::new(
            Kind::Unreachable,
            "robots are reached through a gateway's relay, and none is configured: `peerctl gateways add`",
        ));
    }
    let identity = ctx.identity()?;
    let node = start_fanout_node(&identity, robots.len() + ctx.gateways.len()).await?;
    let query = LogsQuery {
        group: args.group.clone(),
        app: args.app.clone(),
        since_secs: args.since.map(|d| d.as_secs().max(1)),
        tail: args.tail,
        grep: args.grep.clone(),
    };
    // Every robot at once, each within the timeout.
    let mut asks = tokio::task::JoinSet::new();
    for (i, robot) in robots.iter().enumerate() {
        let (node, gateways, peer) = (node.clone(), ctx.gateways.clone(), robot.peer);
        let (fleet, query, timeout) = (chosen.id, query.clone(), ctx.timeout);
        asks.spawn(async move { (i, ask(&node, &gateways, peer, fleet, query, timeout).await) });
    }
    let mut answers: Vec<Option<Result<LogLines, Failure>>> = vec![None; robots.len()];
    while let Some(done) = asks.join_next().await {
        if let Ok((i, answer)) = done {
            answers[i] = Some(answer);
        }
    }
    let results: Vec<(&Robot, Result<LogLines, Failure>)> = robots
        .iter()
        .zip(answers)
        .map(|(robot, answer)| {
            let answer = answer
                .unwrap_or_else(|| Err(Failure::Unreachable("the request failed".to_owned())));
            (robot, answer)
        })
        .collect();
    if ctx.json {
        let rows: Vec<RobotLogs<'_>> = results.iter().map(|(r, a)| json_row(r, a)).collect();
        print_json(&rows)?;
    } else {
        let width = robots.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for (robot, answer) in &results {
            if let Ok(answer) = answer {
                for line in prefixed(&robot.name, width, &answer.lines) {
                    println!("{line}");
                }
            }
        }
    }
    for (robot, answer) in &results {
        match answer {
            Ok(a) if a.truncated => ctx.note(&format!(
                "{}: older or longer lines left out by the answer's limits (narrow with --since, --grep or --tail)",
                robot.name
            )),
            Ok(_) => {}
            Err(Failure::Unreachable(why) | Failure::Refused(why)) => {
                ctx.note(&format!("{}: {why}", robot.name));
            }
        }
    }
    verdict(&results, &args.group)
}

/// The members whose groups include `group`, by name.
pub(crate) fn robots_of(state: &FleetState, group: &str) -> Vec<Robot> {
    let mut robots: Vec<Robot> = state
        .members
        .values()
        .filter(|m| m.groups.iter().any(|g| g == group))
        .filter_map(|m| {
            Some(Robot {
                name: m.name.clone(),
                peer: m.key.peer_id()?,
            })
        })
        .collect();
    robots.sort_by(|a, b| a.name.cmp(&b.name));
    robots
}

/// `line`s prefixed with the robot's name, padded to `width` so the bars line up.
pub(crate) fn prefixed(robot: &str, width: usize, lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|line| format!("{robot:<width$} | {line}"))
        .collect()
}

/// The exit: 0 if every robot answered, 1 if some did not, 4 if none did (3 if every one
/// refused us).
pub(crate) fn verdict(
    results: &[(&Robot, Result<LogLines, Failure>)],
    group: &str,
) -> Result<(), CliError> {
    let failed = results.iter().filter(|(_, a)| a.is_err()).count();
    if failed == 0 {
        return Ok(());
    }
    let total = results.len();
    if failed < total {
        return Err(CliError::new(
            Kind::Other,
            format!("{failed} of {total} robots of group {group} gave no logs (reasons above)"),
        ));
    }
    let all_refused = results
        .iter()
        .all(|(_, a)| matches!(a, Err(Failure::Refused(_))));
    let kind = if all_refused {
        Kind::Trust
    } else {
        Kind::Unreachable
    };
    Err(CliError::new(
        kind,
        format!("none of the {total} robots of group {group} gave logs (reasons above)"),
    ))
}

fn json_row<'a>(robot: &'a Robot, answer: &'a Result<LogLines, Failure>) -> RobotLogs<'a> {
    let (lines, truncated, error): (&[String], bool, Option<String>) = match answer {
        Ok(a) => (&a.lines, a.truncated, None),
        Err(Failure::Unreachable(why) | Failure::Refused(why)) => (&[], false, Some(why.clone())),
    };
    RobotLogs {
        robot: &robot.name,
        peer_id: robot.peer.to_string(),
        lines,
        truncated,
        error,
    }
}

/// Reaches `robot` through the gateways' relays and asks it, within `timeout` in all.
async fn ask(
    node: &Node,
    gateways: &[(PeerId, Vec<Multiaddr>)],
    robot: PeerId,
    fleet: peercompute_fleet::FleetId,
    query: LogsQuery,
    timeout: Duration,
) -> Result<LogLines, Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    dial_via_gateways(node, robot, gateways, deadline)
        .await
        .map_err(|why| Failure::Unreachable(format!("not reached: {}", why.join("; "))))?;
    match tokio::time::timeout_at(deadline, request_logs(node, robot, fleet, query)).await {
        Err(_) => Err(Failure::Unreachable(format!(
            "no answer within {timeout:?}"
        ))),
        Ok(Ok(lines)) => Ok(lines),
        Ok(Err(HubError::Remote { message, .. })) => Err(Failure::Refused(message)),
        Ok(Err(e)) => Err(Failure::Unreachable(e.to_string())),
    }
}

/// A node for the fan-out: no listening socket, no mDNS, a connection per robot (relayed)
/// and per gateway. One answer is at most ~0.5 MiB, well inside a relay circuit's byte
/// limit, so the relayed connection is used at once rather than waiting for hole punching.
async fn start_fanout_node(identity: &Identity, peers: usize) -> Result<Node, CliError> {
    Node::start(
        identity,
        NodeConfig {
            listen: Vec::new(),
            mdns: false,
            max_connections: u32::try_from(peers + 4).unwrap_or(u32::MAX),
            hole_punch_wait: Duration::ZERO,
            ..NodeConfig::default()
        },
    )
    .await
    .map_err(|e| CliError::new(Kind::Other, format!("cannot start the libp2p node: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn robot(name: &str) -> Robot {
        Robot {
            name: name.into(),
            peer: PeerId::random(),
        }
    }

    #[test]
    fn the_robots_are_the_members_of_the_group_by_name() {
        use peercompute_fleet::{FleetId, Member, MemberKey};
        let mut state = FleetState::genesis(FleetId([1; 32]), "lekiwi");
        for (seed, name, groups) in [
            (2u8, "lekiwi-2", &["production"][..]),
            (3, "lekiwi-1", &["staging", "production"][..]),
            (4, "bench", &["staging"][..]),
        ] {
            let key = MemberKey(
                ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
                    .verifying_key()
                    .to_bytes(),
            );
            state.members.insert(
                key,
                Member {
                    key,
                    name: name.into(),
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                    since: 0,
                },
            );
        }
        let names =
            |g| -> Vec<String> { robots_of(&state, g).into_iter().map(|r| r.name).collect() };
        assert_eq!(names("production"), ["lekiwi-1", "lekiwi-2"]);
        assert_eq!(names("staging"), ["bench", "lekiwi-1"]);
        assert!(names("lab").is_empty());
    }

    #[test]
    fn lines_carry_the_robot_name_aligned() {
        let lines = vec!["GET / 200".to_owned(), String::new()];
        assert_eq!(
            prefixed("lekiwi-1", 10, &lines),
            ["lekiwi-1   | GET / 200", "lekiwi-1   | "]
        );
        assert_eq!(prefixed("a", 0, &lines[..1]), ["a | GET / 200"]);
    }

    #[test]
    fn the_exit_says_whether_some_none_or_all_answered() {
        let (a, b) = (robot("a"), robot("b"));
        let ok = || Ok(LogLines::default());
        let down = || Err(Failure::Unreachable("down".into()));
        let refused = || Err(Failure::Refused("refused".into()));
        assert!(verdict(&[(&a, ok()), (&b, ok())], "g").is_ok());
        let table = [
            (vec![(&a, ok()), (&b, down())], Kind::Other, "1 of 2"),
            (
                vec![(&a, down()), (&b, refused())],
                Kind::Unreachable,
                "none of the 2",
            ),
            (
                vec![(&a, refused()), (&b, refused())],
                Kind::Trust,
                "none of the 2",
            ),
        ];
        for (results, kind, says) in table {
            let e = verdict(&results, "g").expect_err("a robot failed");
            assert_eq!(e.kind, kind, "{}", e.message);
            assert!(e.message.contains(says), "{}", e.message);
        }
    }
}
