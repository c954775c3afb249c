//! Control-plane frames over a libp2p stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
        self.read_with(decode_control_plane).await
    }

    /// The next frame of an import's archive (what a provider reads after a verified
    /// `VolumeImportRequest`): only `VolumeData` is accepted, anything else is an error.
    /// `Ok(None)` when the other side closed cleanly between frames. Shares the read buffer
    /// with [`Framed::read`], so data sent in one write with the request is not lost.
    pub async fn read_import_data(&mut self) -> Result<Option<Bytes>, FrameError> {
        self.read_with(decode_import_data).await
    }

    /// The next frame `decode` accepts, reading until it is whole.
    async fn read_with<T>(
        &mut self,
        decode: fn(&mut BytesMut) -> Result<Option<T>, ControlPlaneDecodeError>,
    ) -> Result<Option<T>, FrameError> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(value) = decode(&mut self.buf)? {
                return Ok(Some(value));
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

    /// Writes and flushes one message unless the other side answers first: returns `Some`
    /// with its message (the write is then abandoned, perhaps half sent) as soon as one
    /// arrives. For a sender streaming data the other side may refuse midway (an import over
    /// its share): that side answers and stops reading, so a plain write would wait forever
    /// for flow-control credit that never comes.
    pub async fn write_unless_answered(
        &mut self,
        msg: &ControlPlaneMessage,
    ) -> Result<Option<ControlPlaneMessage>, FrameError> {
        let mut out = BytesMut::new();
        encode_control_plane(msg, &mut out)?;
        let mut written = 0;
        let mut read_open = true;
        let mut chunk = [0u8; 8192];
        std::future::poll_fn(|cx| {
            if read_open {
                match self.poll_answer(cx, &mut chunk) {
                    Poll::Ready(Ok(Some(answer))) => return Poll::Ready(Ok(Some(answer))),
                    Poll::Ready(Ok(None)) => read_open = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            while written < out.len() {
                match Pin::new(&mut self.stream).poll_write(cx, &out[written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(FrameError::Io(
                            std::io::ErrorKind::WriteZero.into(),
                        )));
                    }
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => return Poll::Pending,
                }
            }
            Pin::new(&mut self.stream)
                .poll_flush(cx)
                .map(|r| r.map(|()| None).map_err(FrameError::from))
        })
        .await
    }

    /// Reads whatever the other side has sent, without waiting: `Ready(Some)` a whole message,
    /// `Ready(None)` its side is closed (what it sent is kept in the buffer), `Pending` nothing
    /// whole yet (the waker is registered).
    fn poll_answer(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut [u8],
    ) -> Poll<Result<Option<ControlPlaneMessage>, FrameError>> {
        loop {
            if let Some(msg) = decode_control_plane(&mut self.buf)? {
                return Poll::Ready(Ok(Some(msg)));
            }
            match Pin::new(&mut self.stream).poll_read(cx, chunk) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Closes our side of the stream.
    pub async fn close(&mut self) {
        let _ = self.stream.close().await;
    }
}
