//! The control protocol server (`/peercompute/control/1`): accepts streams from peers,
//! refuses keys a held fleet revoked (the node's block list) and untrusted ones before
//! anything else, verifies the signed request (signature,
//! target, freshness, replay — persisted), validates it and hands it to the deployment
//! manager, streaming progress and logs back. `volumes` serves the volume requests (list,
//! remove, and the export and import streams). Every failure becomes one protocol `Error` a
//! person can act on.

mod replay;
mod volumes;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use peercompute_identity::{PeerId, TrustWatcher};
use peercompute_p2p::{Framed, Node, control_protocol};
use peercompute_tunnel_proto::{
    ControlPlaneMessage, DeployProgress, ErrorCode, ErrorResponse, LogEntry, LogsEnd, Request,
};
use tokio::sync::{Semaphore, mpsc};
use tracing::{Instrument, debug, info, info_span, warn};

pub(crate) use replay::ReplayStore;
pub use replay::ReplayStoreError;

use crate::deploy::{Deployments, error, now_secs};

const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONCURRENT_STREAMS: usize = 64;

/// What a control stream handler needs.
#[derive(Debug)]
pub(crate) struct ControlContext {
    pub(crate) me: PeerId,
    pub(crate) trust: TrustWatcher,
    pub(crate) replay: ReplayStore,
    pub(crate) deployments: Deployments,
    /// Logged with "not trusted" refusals so the operator knows which home to edit.
    pub(crate) home_hint: String,
}

/// Accepts control streams until the node stops.
pub(crate) async fn serve(node: Node, ctx: Arc<ControlContext>) {
    let mut control = node.control();
    let mut incoming = match control.accept(control_protocol()) {
        Ok(incoming) => incoming,
        Err(e) => {
            warn!("cannot accept control streams: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_STREAMS));
    while let Some((peer, stream)) = incoming.next().await {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "too many control streams at once; dropping one");
            continue;
        };
        let ctx = ctx.clone();
        // Blocked: a held fleet revoked this key (a stream opened just before the block).
        let revoked = node.is_blocked(&peer);
        tokio::spawn(
            async move {
                handle(peer, revoked, Framed::new(stream), &ctx).await;
                drop(permit);
            }
            .instrument(info_span!("control", %peer)),
        );
    }
}

async fn handle(peer: PeerId, revoked: bool, mut framed: Framed, ctx: &ControlContext) {
    let answer = if revoked {
        Err(error(
            ErrorCode::NotTrusted,
            format!(
                "provider {} refuses you ({peer}): a fleet it belongs to revoked your key",
                ctx.me
            ),
        ))
    } else {
        respond(peer, &mut framed, ctx).await
    };
    if let Err(e) = answer {
        info!(code = ?e.code, "refused: {}", e.message);
        let _ = framed.write(&ControlPlaneMessage::Error(e)).await;
    }
    framed.close().await;
}

async fn respond(
    peer: PeerId,
    framed: &mut Framed,
    ctx: &ControlContext,
) -> Result<(), ErrorResponse> {
    let first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, framed.read())
        .await
        .map_err(|_| error(ErrorCode::BadRequest, "no request within 10 s"))?
        .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
    let Some(ControlPlaneMessage::Signed(envelope)) = first else {
        return Err(error(ErrorCode::BadRequest, "expected a signed request"));
    };
    // Trust first: an untrusted peer learns only that this provider does not trust it, and
    // costs no Docker call. The command with this daemon's home goes to the local log only:
    // a stranger has no business learning the path.
    if !ctx.trust.is_trusted(&peer) {
        info!(
            "an untrusted peer asked; to trust it run: peerctl{} peers add {peer}",
            ctx.home_hint
        );
        return Err(error(
            ErrorCode::NotTrusted,
            format!(
                "provider {} does not trust you ({peer}); its operator must run: peerctl peers add {peer} (with the provider's --home)",
                ctx.me
            ),
        ));
    }
    let verified = ctx
        .replay
        .verify(&envelope, &peer, &ctx.me, now_secs())
        .map_err(|e| error(e.code(), e.to_string()))?;
    let request = verified.request;
    // A nonce that did not reach the disk (a full disk) could be replayed after a restart:
    // serve only what is harmless to repeat — reads, and stop, which frees space.
    if let Err(why) = verified.saved
        && !matches!(
            request,
            Request::Status(_) | Request::List(_) | Request::Logs(_) | Request::Stop(_)
        )
    {
        return Err(error(ErrorCode::Internal, why));
    }
    request
        .validate()
        .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
    debug!(request = ?request.message_type(), "verified");
    let deployments = &ctx.deployments;
    match request {
        Request::Deploy(req) => {
            let (tx, mut rx) = mpsc::channel::<DeployProgress>(64);
            let deploy = deployments.deploy(peer, req, tx);
            tokio::pin!(deploy);
            let result = loop {
                tokio::select! {
                    r = &mut deploy => break r,
                    Some(p) = rx.recv() => {
                        // A client that went away does not stop the deploy half-way.
                        let _ = framed.write(&ControlPlaneMessage::DeployProgress(p)).await;
                    }
                }
            };
            while let Ok(p) = rx.try_recv() {
                let _ = framed.write(&ControlPlaneMessage::DeployProgress(p)).await;
            }
            reply(framed, ControlPlaneMessage::DeployResponse(result?)).await
        }
        Request::Stop(req) => {
            let resp = deployments.stop(&peer, &req.id).await?;
            reply(framed, ControlPlaneMessage::StopResponse(resp)).await
        }
        Request::Status(req) => {
            let resp = deployments.status(&peer, &req.id).await?;
            reply(framed, ControlPlaneMessage::StatusResponse(resp)).await
        }
        Request::List(_) => {
            let resp = deployments.list(&peer).await?;
            reply(framed, ControlPlaneMessage::ListResponse(resp)).await
        }
        Request::Logs(req) => {
            let mut lines = deployments.logs(&peer, &req.id, req.follow, req.tail)?;
            while let Some(line) = lines.next().await {
                let line = line.map_err(|e| error(ErrorCode::Runtime, e.to_string()))?;
                let entry = LogEntry {
                    stream: crate::deploy::log_stream(line.source),
                    line: line.text,
                    timestamp: line.timestamp,
                };
                if framed
                    .write(&ControlPlaneMessage::LogEntry(entry))
                    .await
                    .is_err()
                {
                    // The client stopped following (Ctrl-C).
                    return Ok(());
                }
            }
            reply(framed, ControlPlaneMessage::LogsEnd(LogsEnd {})).await
        }
        Request::Volumes(_) => volumes::list(&peer, framed, deployments).await,
        Request::VolumeRemove(req) => {
            volumes::remove(&peer, &req.volume, framed, deployments).await
        }
        Request::VolumeExport(req) => {
            volumes::export(&peer, &req.volume, framed, deployments).await
        }
        Request::VolumeImport(req) => volumes::import(&peer, req, framed, deployments).await,
    }
}

async fn reply(framed: &mut Framed, msg: ControlPlaneMessage) -> Result<(), ErrorResponse> {
    framed
        .write(&msg)
        .await
        .map_err(|e| error(ErrorCode::Internal, format!("cannot answer: {e}")))
}
