//! `peerctl fleet …`: a fleet of robots run from one client, with no central server. The
//! client keeps its own verified copy of each fleet's log and speaks to the gateways it
//! knows, the fleet's always-on store-and-forward members; robots sync with their gateway.
//!
//! A write goes: sync the local copy with each reachable gateway → author the entry on the
//! local copy with the client identity (the fleet key only for `create`) → insert it locally
//! (the same checks every robot runs, so a refusal here reads as a robot's would) → push it
//! to the gateways reached. Without a reachable gateway the entry stays in the local copy
//! and goes out with the next command that reaches one.
//!
//! - [`cli`]: the clap [`FleetCommand`] and its [`FleetAction`]s.
//! - `config`: `<home>/fleets.json`, the fleets known by name and the default.
//! - `local`: the local copy (`<home>/fleets/`, a `FleetHub` root) and writing to it.
//! - `sync`: reaching the gateways: anti-entropy, pushes, robot statuses.
//! - `write`: the commands that add entries (create, invite, enroll, set-groups, grant,
//!   ungrant, release, rollback, and the stop ones below).
//! - `stop`: estop (`--all`), resume and revoke: the entry published, then what it covers.
//! - `rotate`: rotate-member (a key vouched for by its predecessor) and rotate-root.
//! - `release`: the release and rollback ops from what was typed (image pinning, defaults).
//! - `read`: list, members, log (and `--verify`), status.
//! - `group_urls`: the group names (`<app>.<domain>`) `status` prints once per group.
//! - `logs`: `logs`, the group's container logs fanned out to its robots.
//! - `render`: the rows and tables `log` and `members` print (pure).
//! - `watch`: one release's propagation per robot, live (pure core: target, progress, changes).
//! - `metrics`: success and rollback rates, time to healthy, from robots' histories (pure core).

pub mod cli;
mod config;
mod group_urls;
mod local;
mod logs;
mod metrics;
mod read;
mod release;
mod render;
mod rotate;
mod stop;
mod sync;
mod watch;
mod write;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cli::{FleetAction, FleetCommand};
use peercompute_fleet::MemberKey;
use peercompute_identity::{Identity, IdentityError};
use peercompute_p2p::{Multiaddr, PeerId};
pub use rotate::id_rotate;
pub use sync::LanArgs;

use crate::exit::{CliError, Kind};
use crate::places::Places;

/// What every fleet command works with.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) home: PathBuf,
    timeout: Duration,
    json: bool,
    fleet_arg: Option<String>,
    gateways: Vec<(PeerId, Vec<Multiaddr>)>,
    /// `--lan-wait`, `--no-lan`.
    lan: LanArgs,
}

impl Ctx {
    /// A note for people on stderr; with `--json` it goes to the log instead, so stderr
    /// carries only the one JSON error object.
    fn note(&self, line: &str) {
        if self.json {
            tracing::info!("{line}");
        } else {
            eprintln!("{line}");
        }
    }

    /// The client identity (`peerctl init`).
    fn identity(&self) -> Result<Identity, CliError> {
        Identity::load(&self.home).map_err(|e| match e {
            IdentityError::Missing { .. } => CliError::new(
                Kind::Other,
                format!(
                    "no identity in {}: run `peerctl init` first",
                    self.home.display()
                ),
            ),
            other => CliError::new(Kind::Other, other.to_string()),
        })
    }

    /// The client's key as a fleet member, when it has an identity.
    pub(crate) fn me(&self) -> Option<MemberKey> {
        Identity::load(&self.home)
            .ok()
            .map(|id| MemberKey(id.public_key_bytes()))
    }

    /// Records a fleet chosen by id (one this client joined as a developer, say) under its
    /// name once its genesis is here, so `fleet list` shows it and `--fleet NAME` finds it.
    fn remember(&self, chosen: &config::Chosen, local: &local::Local) -> Result<(), CliError> {
        let mut fleets = config::Fleets::load(&self.home)?;
        let id = chosen.id.to_string();
        if fleets.fleets.values().any(|f| f.id == id) {
            return Ok(());
        }
        let Ok(state) = local.state(&chosen.id) else {
            return Ok(());
        };
        let name = if fleets.fleets.contains_key(&state.name) {
            id
        } else {
            state.name
        };
        fleets.add(&name, chosen.id, None);
        fleets.save(&self.home)?;
        self.note(&format!("fleet {} is now known here as {name}", chosen.id));
        Ok(())
    }

    /// The local copy, warning about entries that did not verify.
    fn local(&self) -> Result<local::Local, CliError> {
        let local = local::Local::open(&self.home)?;
        for line in local.warnings() {
            self.note(&line);
        }
        Ok(local)
    }
}

/// Runs one `peerctl fleet …` command. `timeout` bounds reaching each gateway.
pub async fn run(home: &Path, command: FleetCommand, timeout: Duration) -> Result<(), CliError> {
    let json = command.wants_json();
    let places = Places::open(home).map_err(|e| CliError::new(Kind::Other, e.to_string()))?;
    let ctx = Ctx {
        home: home.to_path_buf(),
        timeout,
        json,
        fleet_arg: command.fleet,
        gateways: sync::configured(&places),
        lan: command.lan,
    };
    if let Ok(local) = local::Local::open(home) {
        rotate::finish_own_rotation(home, &local)?;
    }
    match command.action {
        FleetAction::Create {
            name, fleet_key, ..
        } => write::create(&ctx, &name, fleet_key).await,
        FleetAction::List { .. } => read::list(&ctx),
        FleetAction::Members { .. } => read::members(&ctx).await,
        FleetAction::Log { verify, .. } => read::log(&ctx, verify).await,
        FleetAction::Status { group, .. } => read::status(&ctx, group.as_deref()).await,
        FleetAction::Logs {
            group,
            app,
            since,
            grep,
            tail,
            ..
        } => {
            let args = logs::LogsArgs {
                group,
                app,
                since,
                grep,
                tail,
            };
            logs::logs(&ctx, args).await
        }
        FleetAction::Watch {
            release,
            group,
            wait,
            ..
        } => watch::watch(&ctx, release.as_deref(), group.as_deref(), wait).await,
        FleetAction::Metrics { group, last, .. } => {
            metrics::metrics(&ctx, group.as_deref(), last).await
        }
        action => write::entry(&ctx, action).await,
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::new(Kind::Other, e.to_string()))?;
    println!("{text}");
    Ok(())
}
