//! `GET /api/v1/fleets` and `GET /api/v1/fleets/{fleet_id}/robots`: the fleets this gateway
//! holds as a meeting point (`--p2p-listen`), their robots from the fleet log (name, groups)
//! and from the robots' latest signed statuses (release per group, phase, last seen). Empty
//! when the meeting point does not run.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AdminState;
use super::model::{ErrorView, rfc3339_ms};

/// A fleet held here.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FleetView {
    pub(crate) fleet_id: String,
    /// The name given at its creation (empty before the log's first entry arrived).
    pub(crate) name: String,
    /// Robots enrolled in the log.
    pub(crate) robots: usize,
    pub(crate) groups: Vec<String>,
    /// Robots whose signed status reached this gateway.
    pub(crate) reporting: usize,
}

/// One group's app on a robot, from its latest status.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RobotAppView {
    pub(crate) group: String,
    /// The release version being applied or applied last.
    pub(crate) version: String,
    /// `pending`, `fetching`, `starting`, `healthy`, `rolled back` or `failed`.
    pub(crate) phase: String,
    /// The version serving now (the previous one after a rollback).
    pub(crate) serving: Option<String>,
    pub(crate) reason: Option<String>,
}

/// A robot: from the log, its status, or both.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RobotView {
    /// The robot's key.
    pub(crate) robot: String,
    /// Its name in the fleet log (null: not enrolled in the log this gateway holds).
    pub(crate) name: Option<String>,
    pub(crate) groups: Vec<String>,
    /// `healthy` (every app healthy), `updating`, `degraded` (an app rolled back or failed),
    /// `unknown` (no status yet).
    pub(crate) health: String,
    /// Time of its latest status (its clock, RFC 3339; null: never heard from).
    pub(crate) last_seen: Option<String>,
    pub(crate) agent: Option<String>,
    pub(crate) apps: Vec<RobotAppView>,
}

fn health(apps: &[RobotAppView]) -> &'static str {
    if apps
        .iter()
        .any(|a| a.phase == "failed" || a.phase == "rolled back")
    {
        "degraded"
    } else if apps.iter().all(|a| a.phase == "healthy") {
        "healthy"
    } else {
        "updating"
    }
}

/// Fleets held by this gateway's meeting point.
#[utoipa::path(get, path = "/api/v1/fleets", tag = "fleets", security(("bearer" = [])),
    responses((status = 200, body = [FleetView]), (status = 401, description = "token missing or unknown")))]
pub(crate) async fn fleets(State(st): State<Arc<AdminState>>) -> Json<Vec<FleetView>> {
    let Some(hub) = st.shared.fleet.get() else {
        return Json(Vec::new());
    };
    let mut out: Vec<FleetView> = hub
        .fleet_ids()
        .into_iter()
        .map(|id| {
            let (name, robots, groups) = hub
                .with_log(&id, |log| {
                    log.state().map(|s| {
                        (
                            s.name.clone(),
                            s.members.len(),
                            s.groups.keys().cloned().collect(),
                        )
                    })
                })
                .flatten()
                .unwrap_or_default();
            FleetView {
                fleet_id: id.to_string(),
                name,
                robots,
                groups,
                reporting: hub.statuses(&id).len(),
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.fleet_id).cmp(&(&b.name, &b.fleet_id)));
    Json(out)
}

/// The robots of a fleet: those enrolled in its log and every robot that reported a status.
#[utoipa::path(get, path = "/api/v1/fleets/{fleet_id}/robots", tag = "fleets", security(("bearer" = [])),
    params(("fleet_id" = String, Path, description = "the fleet's id")),
    responses((status = 200, body = [RobotView]),
        (status = 401, description = "token missing or unknown"),
        (status = 404, body = ErrorView, description = "no such fleet here")))]
pub(crate) async fn robots(
    State(st): State<Arc<AdminState>>,
    Path(fleet_id): Path<String>,
) -> Response {
    let hub = st.shared.fleet.get();
    let Some((hub, id)) = hub.and_then(|h| {
        h.fleet_ids()
            .into_iter()
            .find(|f| f.to_string() == fleet_id)
            .map(|id| (h, id))
    }) else {
        return (
            StatusCode::NOT_FOUND,
            Json(ErrorView {
                error: format!("this gateway holds no fleet {fleet_id:?} (see GET /api/v1/fleets)"),
            }),
        )
            .into_response();
    };
    let mut robots: BTreeMap<String, RobotView> = hub
        .with_log(&id, |log| {
            log.state().map(|s| {
                s.members
                    .values()
                    .map(|m| {
                        let view = RobotView {
                            robot: m.key.to_string(),
                            name: Some(m.name.clone()),
                            groups: m.groups.clone(),
                            health: "unknown".to_owned(),
                            last_seen: None,
                            agent: None,
                            apps: Vec::new(),
                        };
                        (view.robot.clone(), view)
                    })
                    .collect()
            })
        })
        .flatten()
        .unwrap_or_default();
    for status in hub.statuses(&id) {
        let r = &status.report;
        let key = r.robot.to_string();
        let apps: Vec<RobotAppView> = r
            .apps
            .iter()
            .map(|a| RobotAppView {
                group: a.group.clone(),
                version: a.version.clone(),
                phase: a.phase.as_str().to_owned(),
                serving: a.serving.clone(),
                reason: a.reason.clone(),
            })
            .collect();
        let view = robots.entry(key.clone()).or_insert_with(|| RobotView {
            robot: key,
            name: None,
            groups: Vec::new(),
            health: String::new(),
            last_seen: None,
            agent: None,
            apps: Vec::new(),
        });
        view.health = health(&apps).to_owned();
        view.last_seen = Some(rfc3339_ms(r.at_ms));
        view.agent = Some(r.agent.clone());
        view.apps = apps;
    }
    Json(robots.into_values().collect::<Vec<_>>()).into_response()
}
