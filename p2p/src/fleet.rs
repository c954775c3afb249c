//! Fleet exchange frames (`/peercompute/fleet/1`, codec in `peercompute-fleet`) over a libp2p
//! stream: the 4-byte length is read and checked before the body is buffered.

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::StreamProtocol;
use peercompute_fleet::{
    FLEET_PROTOCOL, FleetMessage, WireError, body_len, decode_body, encode_message,
};

/// The fleet protocol id.
pub fn fleet_protocol() -> StreamProtocol {
    StreamProtocol::new(FLEET_PROTOCOL)
}

/// Why a fleet frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FleetStreamError {
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// A libp2p stream carrying fleet frames.
#[derive(Debug)]
pub struct FleetStream {
    stream: libp2p::Stream,
}

impl FleetStream {
    pub fn new(stream: libp2p::Stream) -> Self {
        Self { stream }
    }

    /// The next message; `Ok(None)` when the other side closed cleanly between messages.
    pub async fn read(&mut self) -> Result<Option<FleetMessage>, FleetStreamError> {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            let n = self.stream.read(&mut header[got..]).await?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            got += n;
        }
        let mut body = vec![0u8; body_len(header)?];
        self.stream.read_exact(&mut body).await?;
        Ok(Some(decode_body(&body)?))
    }

    /// Writes and flushes one message.
    pub async fn write(&mut self, message: &FleetMessage) -> Result<(), FleetStreamError> {
        let frame = encode_message(message)?;
        self.stream.write_all(&frame).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Closes our side of the stream.
    pub async fn close(&mut self) {
        let _ = self.stream.close().await;
    }
}
