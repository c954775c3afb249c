//! `GET /api/v1/cluster`: this gateway's view of the cluster store (`--cluster`): whether
//! etcd answers, which endpoints, the last error, this gateway's id (what other gateways'
//! "served by another gateway" answers name), the owned names and whether it holds the ACME
//! lock. Without `--cluster`: `enabled: false`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AdminState;

/// `GET /api/v1/cluster`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ClusterView {
    /// Whether this gateway runs with `--cluster`.
    pub(crate) enabled: bool,
    /// Whether etcd answers now (new names need it; known names keep working without).
    pub(crate) up: bool,
    /// The etcd endpoints as configured.
    pub(crate) endpoints: Vec<String>,
    /// Why etcd is unreachable, while it is.
    pub(crate) last_error: Option<String>,
    /// This gateway's id (its peer id), as other gateways name it.
    pub(crate) gateway_id: String,
    /// Names owned in the cluster (from this gateway's cache).
    pub(crate) names: usize,
    /// Whether this gateway holds the cluster's ACME lock (orders and renews for all).
    pub(crate) acme_lock_held: bool,
}

/// The cluster store as this gateway sees it.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "meta", security(("bearer" = [])),
    responses((status = 200, body = ClusterView), (status = 401, description = "token missing or unknown")))]
pub(crate) async fn cluster(State(st): State<Arc<AdminState>>) -> Json<ClusterView> {
    let shared = &st.shared;
    let store = shared.names.cluster();
    Json(ClusterView {
        enabled: store.is_some(),
        up: store.is_some_and(|s| *s.up().borrow()),
        endpoints: shared.config.cluster.clone(),
        last_error: store.and_then(|s| s.last_error()).map(|e| e.to_string()),
        gateway_id: shared.peer_id.to_string(),
        names: store.map_or(0, |s| s.owners().len()),
        acme_lock_held: shared.metrics.cluster_acme_lock.get() == 1,
    })
}
