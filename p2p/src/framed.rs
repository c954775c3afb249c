//! Control-plane frames over a libp2p stream.

use bytes::BytesMut;
use futures::{AsyncReadExt, AsyncWriteExt};
use peercompute_tunnel_proto::{
    ControlPlaneDecodeError, ControlPlaneEncodeError, ControlPlaneMessage, decode_control_plane,
    encode_control_plane,
};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Decode(#[from] ControlPlaneDecodeError),
    #[error(transparent)]
    Encode(#[from] ControlPlaneEncodeError),
    #[error("the other side closed the stream in the middle of a message")]
    UnexpectedEof,
}

/// A libp2p stream carrying control-plane frames.
#[derive(Debug)]
pub struct Framed {
    stream: libp2p::Stream,
    buf: BytesMut,
}

impl Framed {
    pub fn new(stream: libp2p::Stream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// The next message; `Ok(None)` when the other side closed cleanly between messages.
    pub async fn read(&mut self) -> Result<Option<ControlPlaneMessage>, FrameError> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(msg) = decode_control_plane(&mut self.buf)? {
                return Ok(Some(msg));
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::UnexpectedEof)
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Writes and flushes one message.
    pub async fn write(&mut self, msg: &ControlPlaneMessage) -> Result<(), FrameError> {
        let mut out = BytesMut::new();
        encode_control_plane(msg, &mut out)?;
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Closes our side of the stream.
    pub async fn close(&mut self) {
        let _ = self.stream.close().await;
    }
}
