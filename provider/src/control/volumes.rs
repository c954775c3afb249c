//! The volume requests on a control stream: list, remove, and the two transfers. An export
//! goes out as `VolumeData` frames of at most 64 KiB, then `VolumeEnd{bytes, sha256}`. An
//! import is admitted (share, size, free disk, nothing overwritten) before any of its data
//! is read; then exactly the signed number of bytes is read as `VolumeData` frames into the
//! spool, checked, and written into the volume; the answer is `VolumeEnd`.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use peercompute_identity::PeerId;
use peercompute_p2p::Framed;
use peercompute_tunnel_proto::{
    ControlPlaneMessage, ErrorCode, ErrorResponse, MAX_VOLUME_DATA, VolumeEnd, VolumeImportRequest,
};
use sha2::{Digest, Sha256};

use super::reply;
use crate::deploy::{Deployments, error, volume_error};

/// How long an import may wait for its next frame.
const IMPORT_IDLE: Duration = Duration::from_secs(30);

pub(super) async fn list(
    peer: &PeerId,
    framed: &mut Framed,
    deployments: &Deployments,
) -> Result<(), ErrorResponse> {
    let resp = deployments.list_volumes(peer).await?;
    reply(framed, ControlPlaneMessage::VolumesResponse(resp)).await
}

pub(super) async fn remove(
    peer: &PeerId,
    volume: &str,
    framed: &mut Framed,
    deployments: &Deployments,
) -> Result<(), ErrorResponse> {
    let resp = deployments.remove_volume(peer, volume).await?;
    reply(framed, ControlPlaneMessage::VolumeRemoved(resp)).await
}

/// Streams the volume's archive, re-cut into frames of at most [`MAX_VOLUME_DATA`].
pub(super) async fn export(
    peer: &PeerId,
    volume: &str,
    framed: &mut Framed,
    deployments: &Deployments,
) -> Result<(), ErrorResponse> {
    let mut archive = deployments.export_volume(peer, volume).await?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = archive.next().await {
        let mut chunk: Bytes = chunk.map_err(volume_error)?;
        while !chunk.is_empty() {
            let part = chunk.split_to(chunk.len().min(MAX_VOLUME_DATA));
            hasher.update(&part);
            bytes += part.len() as u64;
            if framed
                .write(&ControlPlaneMessage::VolumeData(part))
                .await
                .is_err()
            {
                // The client went away; the helper container goes with `archive`.
                return Ok(());
            }
        }
    }
    let end = VolumeEnd {
        bytes,
        sha256: hex::encode(hasher.finalize()),
    };
    reply(framed, ControlPlaneMessage::VolumeEnd(end)).await
}

/// Admits the import, reads its data into the spool, checks it and fills the volume.
pub(super) async fn import(
    peer: &PeerId,
    request: VolumeImportRequest,
    framed: &mut Framed,
    deployments: &Deployments,
) -> Result<(), ErrorResponse> {
    let mut import = deployments.import_begin(peer, request).await?;
    let declared = import.declared();
    // At least 64 KiB/s on average, plus a minute: a slow trickle cannot hold the share
    // (and the spool) for ever.
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(60 + declared / MAX_VOLUME_DATA as u64);
    let mut got = 0u64;
    while got < declared {
        let wait = IMPORT_IDLE.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let frame = tokio::time::timeout(wait, framed.read_import_data())
            .await
            .map_err(|_| {
                error(
                    ErrorCode::BadRequest,
                    format!(
                        "the import stalled after {got} of {declared} bytes (nothing for 30 s, or slower than 64 KiB/s); the volume is untouched"
                    ),
                )
            })?
            .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
        let Some(chunk) = frame else {
            return Err(error(
                ErrorCode::BadRequest,
                format!(
                    "the import ended after {got} of {declared} bytes; the volume is untouched"
                ),
            ));
        };
        if chunk.is_empty() {
            return Err(error(
                ErrorCode::BadRequest,
                "an empty VolumeData frame: each carries part of the archive; the volume is untouched",
            ));
        }
        import.write(&chunk)?;
        got += chunk.len() as u64;
    }
    let (bytes, sha256) = deployments.import_finish(import).await?;
    reply(
        framed,
        ControlPlaneMessage::VolumeEnd(VolumeEnd { bytes, sha256 }),
    )
    .await
}
