//! Control-plane frames over a libp2p stream.

use bytes::{Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt};
use peercompute_tunnel_proto::{
    ControlPlaneDecodeError, ControlPlaneEncodeError, ControlPlaneMessage, decode_control_plane,
    decode_import_data, encode_control_plane,
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
            if !self.fill(&mut chunk).await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::UnexpectedEof)
                };
            }
        }
    }

    /// The next frame of an import's archive (what a provider reads after a verified
    /// `VolumeImportRequest`): only `VolumeData` is accepted, anything else is an error.
    /// `Ok(None)` when the other side closed cleanly between frames. Shares the read buffer
    /// with [`Framed::read`], so data sent in one write with the request is not lost.
    pub async fn read_import_data(&mut self) -> Result<Option<Bytes>, FrameError> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(data) = decode_import_data(&mut self.buf)? {
                return Ok(Some(data));
            }
            if !self.fill(&mut chunk).await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::UnexpectedEof)
                };
            }
        }
    }

    /// Reads more bytes into the buffer; `false` at the end of the stream.
    async fn fill(&mut self, chunk: &mut [u8]) -> Result<bool, FrameError> {
        let n = self.stream.read(chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
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
