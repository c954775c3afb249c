//! The robot's log source (`peerctl fleet logs`): the hub has already checked that the asker
//! may view the group; this finds the container serving the group's release here (from
//! `applied.json`, which the applier writes after every switch) and reads its output through
//! the runtime, through [`LogWindow`] (since, grep, the last lines, the byte budget).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use peercompute_fleet::{FleetId, LogWindow, LogsQuery};
use peercompute_p2p::fleet_hub::{FleetHub, LogLines, LogSource, unix_now};
use peercompute_runtime::{ContainerError, DockerRuntime};

use super::applied::Applied;

/// The source a robot's hub answers `LogsRequest` with.
pub(crate) fn source(runtime: DockerRuntime, hub: FleetHub, dir: PathBuf) -> LogSource {
    Arc::new(move |fleet, query| {
        let (runtime, hub, dir) = (runtime.clone(), hub.clone(), dir.clone());
        Box::pin(async move { read(&runtime, &hub, &dir, fleet, query).await })
    })
}

async fn read(
    runtime: &DockerRuntime,
    hub: &FleetHub,
    dir: &Path,
    fleet: FleetId,
    query: LogsQuery,
) -> Result<LogLines, String> {
    let applied = Applied::load(dir).map_err(|e| e.to_string())?;
    let group = applied
        .fleet(&fleet.to_string())
        .groups
        .remove(&query.group)
        .unwrap_or_default();
    let Some(serving) = group.serving else {
        let why = group.failed.map_or_else(String::new, |f| {
            format!(" (release {} did not become healthy)", f.version)
        });
        return Err(format!(
            "this robot runs no app for group {}{why}",
            query.group
        ));
    };
    if let Some(asked) = &query.app {
        let app = hub
            .with_log(&fleet, |log| {
                let state = log.state()?;
                let releases = &state.groups.get(&query.group)?.releases;
                let record = releases
                    .iter()
                    .find(|r| r.hash.to_string() == serving.release)?;
                Some(record.release.app().to_owned())
            })
            .flatten();
        if app.as_deref() != Some(asked.as_str()) {
            return Err(format!(
                "this robot's app for group {} is {}, not {asked}",
                query.group,
                app.unwrap_or_else(|| serving.route.clone())
            ));
        }
    }
    // Without filters the engine sends only the last lines; with them every line is read.
    let filtered =
        query.since_secs.is_some() || query.grep.as_deref().is_some_and(|g| !g.is_empty());
    let engine_tail = (!filtered).then(|| query.tail_lines());
    let mut window = LogWindow::new(&query, unix_now());
    let mut lines = runtime.logs(&serving.container_id, false, engine_tail);
    while let Some(line) = lines.next().await {
        let line = line.map_err(|e| match e {
            ContainerError::NotFound { .. } => format!(
                "the container of version {} is gone (the robot restarts it on its next reconcile)",
                serving.version
            ),
            other => format!("cannot read the container's logs: {other}"),
        })?;
        let at = line
            .timestamp
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        window.offer(at, &line.text);
    }
    let (lines, truncated) = window.finish();
    Ok(LogLines { lines, truncated })
}

#[cfg(test)]
mod tests {
    #[test]
    fn engine_timestamps_parse_to_unix_seconds() {
        let t = humantime::parse_rfc3339("2026-12-06T20:53:31.123456789Z").expect("parses");
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs();
        assert_eq!(secs, 1_796_590_411);
    }
}
