//! The `/api/v1` handlers (and the three probes that predate them). Each is an
//! `#[utoipa::path]` item, so the router and the OpenAPI document come from the same code.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use peercompute_identity::PeerId;
use peercompute_ops::tokens::Role;

use crate::names::NameStoreError;

use super::AdminState;
use super::auth::Access;
use super::model::{
    CertView, DisconnectRequest, DisconnectedView, ErrorView, HoldLiftedView, ProviderView,
    ReleasedView, RouteView, TrafficTickView, TrafficView, WhoamiView,
};

/// The reason sent to a provider when the operator gives none.
pub(crate) const DEFAULT_REASON: &str = "disconnected by the operator";

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorView {
            error: message.into(),
        }),
    )
        .into_response()
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: 503 while draining at shutdown.
#[utoipa::path(get, path = "/readyz", tag = "probes", responses(
    (status = 200, description = "ready, with the number of routes online (and with `--cluster`, whether etcd answers; it stays 200 while etcd is away)", body = String, content_type = "text/plain"),
    (status = 503, description = "draining", body = String, content_type = "text/plain")))]
pub(crate) async fn readyz(State(st): State<Arc<AdminState>>) -> Response {
    if st.shared.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let routes = st.shared.registry.len();
    match st.shared.names.cluster() {
        None => format!("ready: {routes} routes online\n").into_response(),
        // etcd away does not make the gateway unready: serving known routes is the point.
        Some(store) => {
            let cluster = if *store.up().borrow() {
                "up"
            } else {
                "down (etcd unreachable: new names refused, registered names served)"
            };
            format!("ready: {routes} routes online\ncluster: {cluster}\n").into_response()
        }
    }
}

/// Prometheus / OpenMetrics text.
#[utoipa::path(get, path = "/metrics", tag = "probes", security(("bearer" = [])), responses(
    (status = 200, description = "OpenMetrics text", body = String,
     content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
    (status = 401, description = "token missing or unknown")))]
pub(crate) async fn metrics(State(st): State<Arc<AdminState>>) -> Response {
    // Encoding 500 routes takes tens of milliseconds: off the admin runtime, so event streams
    // keep flowing during a scrape.
    let text = tokio::task::spawn_blocking(move || st.shared.metrics.encode()).await;
    let Ok(text) = text else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        )
            .into_response();
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Connected providers, oldest connection first.
#[utoipa::path(get, path = "/api/v1/providers", tag = "providers", security(("bearer" = [])),
    responses((status = 200, body = [ProviderView]), (status = 401, description = "token missing or unknown")))]
pub(crate) async fn providers(State(st): State<Arc<AdminState>>) -> Json<Vec<ProviderView>> {
    Json(
        st.shared
            .providers()
            .into_iter()
            .map(ProviderView::from)
            .collect(),
    )
}

/// Ends every tunnel of a provider with a reason. The provider reconnects after its backoff:
/// this is not a revocation (remove the key from the allowlist file for that).
#[utoipa::path(post, path = "/api/v1/providers/{peer_id}/disconnect", tag = "providers",
    security(("bearer" = [])),
    params(("peer_id" = String, Path, description = "the provider's peer id")),
    request_body(content = Option<DisconnectRequest>, content_type = "application/json",
        description = "optional; an empty body sends the default reason"),
    responses(
        (status = 202, body = DisconnectedView, description = "the tunnels were asked to close"),
        (status = 400, body = ErrorView, description = "not a peer id, or a malformed body"),
        (status = 401, description = "token missing or unknown"),
        (status = 403, description = "a read token"),
        (status = 404, body = ErrorView, description = "not connected"),
        (status = 503, body = ErrorView, description = "connected but its tunnel has earlier requests waiting; retry")))]
pub(crate) async fn disconnect(
    State(st): State<Arc<AdminState>>,
    Path(peer_id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(peer) = peer_id.parse::<PeerId>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{peer_id:?} is not a peer id (see GET /api/v1/providers)"),
        );
    };
    // An empty body means the default reason.
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        DisconnectRequest::default()
    } else {
        match serde_json::from_slice::<DisconnectRequest>(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body must be {{\"reason\": \"...\"}} or empty: {e}"),
                );
            }
        }
    };
    let reason = request
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_REASON.to_owned());
    let tunnels = st.shared.disconnect_provider(&peer, &reason);
    if tunnels == 0 {
        if !st.shared.tunnels.of_peer(&peer).is_empty() {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("provider {peer_id} is busy with earlier requests; retry in a moment"),
            );
        }
        return error(
            StatusCode::NOT_FOUND,
            format!("provider {peer_id} is not connected"),
        );
    }
    tracing::info!(provider = %peer_id, tunnels, "provider disconnected by the operator");
    (
        StatusCode::ACCEPTED,
        Json(DisconnectedView {
            peer_id,
            tunnels,
            reason,
        }),
    )
        .into_response()
}

/// Names that are owned, served or offline, sorted by name.
#[utoipa::path(get, path = "/api/v1/routes", tag = "routes", security(("bearer" = [])),
    responses((status = 200, body = [RouteView]), (status = 401, description = "token missing or unknown")))]
pub(crate) async fn routes(State(st): State<Arc<AdminState>>) -> Json<Vec<RouteView>> {
    Json(
        st.shared
            .routes()
            .into_iter()
            .map(RouteView::from)
            .collect(),
    )
}

/// Releases a name's ownership. Visitors get 404 for it; a provider serving it is told it lost
/// it and stops registering it. Any other key that registers the name then owns it; the
/// previous owner's key is refused it for 24 h (until a gateway restart).
#[utoipa::path(delete, path = "/api/v1/names/{name}", tag = "routes", security(("bearer" = [])),
    params(("name" = String, Path, description = "the name (subdomain)")),
    responses(
        (status = 200, body = ReleasedView),
        (status = 401, description = "token missing or unknown"),
        (status = 403, description = "a read token"),
        (status = 404, body = ErrorView, description = "nobody owns the name"),
        (status = 500, body = ErrorView, description = "names.json could not be saved; the owner stays"),
        (status = 503, body = ErrorView, description = "`--cluster`: etcd is unreachable; the owner stays")))]
pub(crate) async fn release(
    State(st): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Response {
    match st.shared.release_name(&name).await {
        Ok(Some(r)) => Json(ReleasedView {
            released: name,
            previous_owner: r.previous_owner,
            was_online: r.was_online,
        })
        .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("nobody owns {name:?} (see GET /api/v1/routes)"),
        ),
        Err(e @ NameStoreError::Unavailable(_)) => {
            tracing::warn!(route = %name, error = %e, "releasing a name failed");
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e) => {
            tracing::error!(route = %name, error = %e, "releasing a name failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// Lifts the 24 h hold a release puts on the name's previous owner (a release by mistake): that
/// key may register the name again (its provider dropped it: re-expose the app there).
#[utoipa::path(delete, path = "/api/v1/names/{name}/hold", tag = "routes", security(("bearer" = [])),
    params(("name" = String, Path, description = "the released name")),
    responses(
        (status = 200, body = HoldLiftedView),
        (status = 401, description = "token missing or unknown"),
        (status = 403, description = "a read token"),
        (status = 404, body = ErrorView, description = "no hold on the name"),
        (status = 503, body = ErrorView, description = "`--cluster`: etcd is unreachable")))]
pub(crate) async fn lift_hold(
    State(st): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Response {
    match st.shared.lift_hold(&name).await {
        Err(e) => {
            let status = match e {
                NameStoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.to_string())
        }
        Ok(Some(previous_owner)) => {
            tracing::info!(route = %name, owner = %previous_owner, "hold on a released name lifted");
            Json(HoldLiftedView {
                name,
                previous_owner,
            })
            .into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no hold on {name:?}: it was not released in the last 24 h, or is owned again"),
        ),
    }
}

/// Served certificates: names, issuer, expiry, next renewal, last error.
#[utoipa::path(get, path = "/api/v1/certificates", tag = "certificates", security(("bearer" = [])),
    responses((status = 200, body = [CertView]), (status = 401, description = "token missing or unknown")))]
pub(crate) async fn certificates(State(st): State<Arc<AdminState>>) -> Json<Vec<CertView>> {
    Json(
        st.shared
            .certificates()
            .into_iter()
            .map(CertView::from)
            .collect(),
    )
}

/// The last minute of per-second traffic per route (the event stream's `traffic` messages
/// continue it).
#[utoipa::path(get, path = "/api/v1/traffic", tag = "traffic", security(("bearer" = [])),
    responses((status = 200, body = TrafficView), (status = 401, description = "token missing or unknown")))]
pub(crate) async fn traffic(State(st): State<Arc<AdminState>>) -> Json<TrafficView> {
    let ticks = st.shared.traffic.ticks();
    Json(TrafficView {
        ticks: ticks.iter().map(|t| TrafficTickView::from(&**t)).collect(),
    })
}

/// What the presented token may do, for the dashboard to show or hide its controls.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "meta", security(("bearer" = [])),
    responses((status = 200, body = WhoamiView), (status = 401, description = "token missing or unknown")))]
pub(crate) async fn whoami(Extension(access): Extension<Access>) -> Json<WhoamiView> {
    Json(WhoamiView {
        role: match access.role {
            Role::Admin => "admin",
            Role::Read => "read",
        }
        .to_owned(),
        tokens_required: access.tokens_required,
    })
}

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(("bearer" = [])),
    responses((status = 200, description = "the OpenAPI document", body = Object),
              (status = 401, description = "token missing or unknown")))]
pub(crate) async fn openapi(State(st): State<Arc<AdminState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        st.openapi.get().cloned().unwrap_or_default(),
    )
        .into_response()
}
