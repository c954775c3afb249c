//! The admin listener (`--admin-listen`, loopback by default): health probes, metrics, the
//! JSON API under `/api/v1` with its OpenAPI document, the live event stream and the
//! dashboard.
//!
//! - [`api`]: the handlers, each an `#[utoipa::path]` item, so a route cannot exist
//!   undocumented; [`model`]: their JSON bodies; [`sse`]: `GET /api/v1/events`.
//! - [`auth`]: Host check, bearer tokens (`--admin-token-file`), read-only tokens, JSON-only
//!   mutations.
//! - [`fleet`]: the fleets held by the p2p meeting point and their robots.
//! - [`cluster`]: `GET /api/v1/cluster`, the cluster store (`--cluster`) as seen from here.
//! - [`dashboard`]: the embedded page at `/`.
//!
//! Served by [`peercompute_ops::serve::serve_admin`] (header timeout, connection cap, drain).

mod api;
mod auth;
mod cluster;
mod dashboard;
mod fleet;
mod model;
mod sse;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::routing::get;
use peercompute_ops::tokens::{TokenFileError, Tokens};
use tokio::net::TcpListener;
use tokio::sync::watch;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContactBuilder, InfoBuilder, OpenApi, OpenApiBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::Shared;

/// What every admin handler reads.
pub(crate) struct AdminState {
    pub(crate) shared: Arc<Shared>,
    /// `None` without `--admin-token-file` (loopback only; `config.validate` sees to that).
    pub(crate) tokens: Option<Tokens>,
    /// The OpenAPI document as JSON, written once the router is built.
    pub(crate) openapi: OnceLock<String>,
    /// This run's start (Unix ms), the first half of event stream ids.
    pub(crate) boot: u64,
    /// Slots for open event streams ([`sse::MAX_STREAMS`]).
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
}

/// The API's routes and their document, before state and middleware.
fn api_router() -> OpenApiRouter<Arc<AdminState>> {
    OpenApiRouter::with_openapi(base_document())
        .routes(routes!(api::healthz))
        .routes(routes!(api::readyz))
        .routes(routes!(api::metrics))
        .routes(routes!(api::providers))
        .routes(routes!(api::disconnect))
        .routes(routes!(api::routes))
        .routes(routes!(api::release))
        .routes(routes!(api::lift_hold))
        .routes(routes!(api::certificates))
        .routes(routes!(api::traffic))
        .routes(routes!(sse::events))
        .routes(routes!(fleet::fleets))
        .routes(routes!(fleet::robots))
        .routes(routes!(api::whoami))
        .routes(routes!(cluster::cluster))
        .routes(routes!(api::openapi))
}

fn base_document() -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Peer Compute gateway admin API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Providers, routes, certificates, traffic and live events of one gateway. \
                     With --admin-token-file every /api/v1 path and /metrics need \
                     `Authorization: Bearer TOKEN`; read tokens may only GET. Mutations need \
                     `Content-Type: application/json`.",
                ))
                .contact(Some(
                    ContactBuilder::new().name(Some("Peer Compute")).build(),
                ))
                .build(),
        )
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    doc
}

/// The OpenAPI document (also served at `/api/v1/openapi.json`).
#[cfg(test)]
pub(crate) fn document() -> OpenApi {
    api_router().into_openapi()
}

/// Builds the admin router for `shared`. Loads `config.admin_token_file`: a file that is
/// readable by others, empty or malformed is a start error.
pub(crate) fn router(shared: Arc<Shared>) -> Result<Router, TokenFileError> {
    let tokens = match &shared.config.admin_token_file {
        Some(path) => Some(Tokens::load(path)?),
        None => None,
    };
    let state = Arc::new(AdminState {
        shared,
        tokens,
        openapi: OnceLock::new(),
        boot: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        streams: Arc::new(tokio::sync::Semaphore::new(sse::MAX_STREAMS)),
    });
    let (api, doc) = api_router().split_for_parts();
    let json = doc
        .to_pretty_json()
        .expect("the OpenAPI document is plain data and serialises");
    let _ = state.openapi.set(json);
    let router = api
        .route("/", get(dashboard::index))
        .route("/app.js", get(dashboard::app_js))
        .route("/app.css", get(dashboard::app_css))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .with_state(state);
    Ok(router)
}

async fn not_found() -> (axum::http::StatusCode, &'static str) {
    (
        axum::http::StatusCode::NOT_FOUND,
        "not here: try /, /healthz, /readyz, /metrics or /api/v1/openapi.json\n",
    )
}

/// Serves `router` (from [`router`]) on `listener` until `stop`.
pub(crate) async fn serve(listener: TcpListener, router: Router, stop: watch::Receiver<bool>) {
    peercompute_ops::serve::serve_admin(listener, router, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route_and_is_openapi_3_1() {
        let doc = document();
        let json = serde_json::to_value(&doc).expect("json");
        assert!(
            json["openapi"]
                .as_str()
                .expect("version")
                .starts_with("3.1")
        );
        let mut paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/api/v1/certificates",
                "/api/v1/cluster",
                "/api/v1/events",
                "/api/v1/fleets",
                "/api/v1/fleets/{fleet_id}/robots",
                "/api/v1/names/{name}",
                "/api/v1/names/{name}/hold",
                "/api/v1/openapi.json",
                "/api/v1/providers",
                "/api/v1/providers/{peer_id}/disconnect",
                "/api/v1/routes",
                "/api/v1/traffic",
                "/api/v1/whoami",
                "/healthz",
                "/metrics",
                "/readyz",
            ]
        );
        let schemas = &json["components"]["schemas"];
        for name in [
            "ProviderView",
            "RouteView",
            "CertView",
            "TrafficView",
            "Figures",
        ] {
            assert!(schemas.get(name).is_some(), "{name} in components");
        }
    }
}
