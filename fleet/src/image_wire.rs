//! The image exchange protocol (`/peercompute/image/1`), sans-IO: how a robot fetches a
//! peer-pinned image from a member that holds it, and the frames it travels in.
//!
//! ```text
//!  control frame:  length: u32 BE (at most MAX_IMAGE_FRAME) | postcard bytes of an ImageMessage
//!
//!  fetcher                               holder (member or grantee check, recent releases only)
//!   │ Want{digest} ───────────────────▶ │
//!   │ ◀─── Have{manifest, blobs}        │   manifest: the canonical OCI manifest bytes whose
//!   │      | NotHere | Error{message}   │   sha256 is `digest`; blobs: (digest, size) of each
//!   │ Blob{digest, offset} ───────────▶ │
//!   │ ◀─── BlobStart{size}              │   size: bytes that follow, from `offset` to the end
//!   │ ◀─── raw bytes × size             │   (not framed; hashed by the fetcher as they stream)
//!   │ Blob{..} ─────────────────────▶   │   (more blobs on the same stream, one at a time)
//! ```
//!
//! A stream starts with `Want` or `Blob`; after a blob's bytes the fetcher may ask for
//! another. Nothing here is trusted: the fetcher checks the manifest against the digest it
//! pinned and every blob against the digest the manifest names. The length is checked before
//! a byte of the body is buffered, so an oversized length allocates nothing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Protocol id on libp2p.
pub const IMAGE_PROTOCOL: &str = "/peercompute/image/1";
/// Largest control frame body, in bytes (blob bytes are not framed).
pub const MAX_IMAGE_FRAME: usize = 64 * 1024;
/// Most blobs one `Have` may list.
pub const MAX_IMAGE_BLOBS: usize = 256;

/// A sha256 digest (`sha256:<64 lowercase hex>` in text).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobDigest(pub [u8; 32]);

impl fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}…", hex::encode(&self.0[..6]))
    }
}

/// Text that is not `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a sha256 digest (sha256:<64 lowercase hex>)")]
pub struct BadDigest(pub String);

impl FromStr for BlobDigest {
    type Err = BadDigest;

    fn from_str(s: &str) -> Result<Self, BadDigest> {
        let bad = || BadDigest(s.to_owned());
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex, &mut bytes).map_err(|_| bad())?;
        Ok(BlobDigest(bytes))
    }
}

/// One control message of the exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageMessage {
    /// Asks for the image whose peer manifest hashes to `digest`.
    Want { digest: BlobDigest },
    /// The answer to `Want`: the manifest bytes and each blob's digest and size.
    Have {
        manifest: Vec<u8>,
        blobs: Vec<(BlobDigest, u64)>,
    },
    /// The holder has no such image (or does not serve it to this asker).
    NotHere,
    /// Asks for a blob's bytes from `offset` on (a resumed download starts past 0).
    Blob { digest: BlobDigest, offset: u64 },
    /// The answer to `Blob`: exactly `size` raw bytes follow.
    BlobStart { size: u64 },
    /// The request could not be served, with the reason a person reads.
    Error { message: String },
}

impl ImageMessage {
    /// The variant's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            ImageMessage::Want { .. } => "Want",
            ImageMessage::Have { .. } => "Have",
            ImageMessage::NotHere => "NotHere",
            ImageMessage::Blob { .. } => "Blob",
            ImageMessage::BlobStart { .. } => "BlobStart",
            ImageMessage::Error { .. } => "Error",
        }
    }
}

/// Why a control frame could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageWireError {
    #[error("an image frame of {0} bytes exceeds the {MAX_IMAGE_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("an image frame does not decode: {0}")]
    Malformed(String),
}

/// The frame of `message` (length prefix included).
pub fn encode_image_message(message: &ImageMessage) -> Result<Vec<u8>, ImageWireError> {
    let body =
        postcard::to_allocvec(message).map_err(|e| ImageWireError::Malformed(e.to_string()))?;
    if body.len() > MAX_IMAGE_FRAME {
        return Err(ImageWireError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| ImageWireError::TooLarge(body.len()))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The body length a frame header announces, checked against the limit (read the 4 header
/// bytes, call this, then read exactly that many bytes and call [`decode_image_body`]).
pub fn image_body_len(header: [u8; 4]) -> Result<usize, ImageWireError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_IMAGE_FRAME {
        return Err(ImageWireError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame body; a `Have` listing more than [`MAX_IMAGE_BLOBS`] blobs is refused.
pub fn decode_image_body(body: &[u8]) -> Result<ImageMessage, ImageWireError> {
    if body.len() > MAX_IMAGE_FRAME {
        return Err(ImageWireError::TooLarge(body.len()));
    }
    let (message, rest): (ImageMessage, _) =
        postcard::take_from_bytes(body).map_err(|e| ImageWireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ImageWireError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    if let ImageMessage::Have { blobs, .. } = &message
        && blobs.len() > MAX_IMAGE_BLOBS
    {
        return Err(ImageWireError::Malformed(format!(
            "{} blobs listed, over the {MAX_IMAGE_BLOBS} allowed",
            blobs.len()
        )));
    }
    Ok(message)
}

/// Decodes one whole frame from the front of `buf`: the message and the bytes it took, or
/// `None` while the frame is incomplete.
pub fn decode_image_frame(buf: &[u8]) -> Result<Option<(ImageMessage, usize)>, ImageWireError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = image_body_len(header.try_into().expect("4 bytes"))?;
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some((decode_image_body(body)?, 4 + len)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn digest_strategy() -> impl Strategy<Value = BlobDigest> {
        any::<[u8; 32]>().prop_map(BlobDigest)
    }

    fn message_strategy() -> impl Strategy<Value = ImageMessage> {
        prop_oneof![
            digest_strategy().prop_map(|digest| ImageMessage::Want { digest }),
            (
                proptest::collection::vec(any::<u8>(), 0..600),
                proptest::collection::vec((digest_strategy(), any::<u64>()), 0..20)
            )
                .prop_map(|(manifest, blobs)| ImageMessage::Have { manifest, blobs }),
            Just(ImageMessage::NotHere),
            (digest_strategy(), any::<u64>())
                .prop_map(|(digest, offset)| ImageMessage::Blob { digest, offset }),
            any::<u64>().prop_map(|size| ImageMessage::BlobStart { size }),
            ".{0,80}".prop_map(|message| ImageMessage::Error { message }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip_and_decode_split_at_every_byte(message in message_strategy()) {
            let frame = encode_image_message(&message).expect("encodes");
            for cut in 0..frame.len() {
                prop_assert_eq!(decode_image_frame(&frame[..cut]), Ok(None), "cut at {}", cut);
            }
            let mut twice = frame.clone();
            twice.extend_from_slice(&frame);
            let (first, used) = decode_image_frame(&twice).expect("decodes").expect("whole");
            prop_assert_eq!(&first, &message);
            prop_assert_eq!(used, frame.len());
            let (second, _) = decode_image_frame(&twice[used..]).expect("decodes").expect("whole");
            prop_assert_eq!(second, message);
        }

        #[test]
        fn digests_round_trip_as_text(digest in digest_strategy()) {
            prop_assert_eq!(digest.to_string().parse::<BlobDigest>(), Ok(digest));
        }
    }

    #[test]
    fn oversized_lengths_are_refused_before_any_body_arrives() {
        let over = (MAX_IMAGE_FRAME as u32 + 1).to_be_bytes();
        assert_eq!(
            decode_image_frame(&over),
            Err(ImageWireError::TooLarge(MAX_IMAGE_FRAME + 1))
        );
        assert_eq!(
            decode_image_frame(&u32::MAX.to_be_bytes()),
            Err(ImageWireError::TooLarge(u32::MAX as usize))
        );
        let at_limit = (MAX_IMAGE_FRAME as u32).to_be_bytes();
        assert_eq!(
            decode_image_frame(&at_limit),
            Ok(None),
            "at the limit: wait"
        );
        let huge = ImageMessage::Have {
            manifest: vec![0; MAX_IMAGE_FRAME],
            blobs: vec![],
        };
        assert_eq!(
            encode_image_message(&huge),
            Err(ImageWireError::TooLarge(MAX_IMAGE_FRAME + 5))
        );
    }

    #[test]
    fn too_many_blobs_and_trailing_bytes_are_malformed() {
        let many = ImageMessage::Have {
            manifest: vec![],
            blobs: vec![(BlobDigest([1; 32]), 1); MAX_IMAGE_BLOBS + 1],
        };
        let frame = encode_image_message(&many).expect("fits the frame");
        assert!(matches!(
            decode_image_frame(&frame),
            Err(ImageWireError::Malformed(m)) if m.contains("blobs listed")
        ));
        let mut body = postcard::to_allocvec(&ImageMessage::NotHere).expect("body");
        body.push(0);
        assert!(matches!(
            decode_image_body(&body),
            Err(ImageWireError::Malformed(m)) if m.contains("after the message")
        ));
        assert!(decode_image_body(&[9]).is_err(), "no variant 9");
    }

    #[test]
    fn digest_text_is_strict() {
        let good = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(good.parse::<BlobDigest>(), Ok(BlobDigest([0xab; 32])));
        for bad in [
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:{}", "ab".repeat(31)),
            format!("sha512:{}", "ab".repeat(32)),
            format!("sha256:{}zz", "ab".repeat(31)),
            "ab".repeat(32),
        ] {
            assert!(bad.parse::<BlobDigest>().is_err(), "{bad}");
        }
    }

    /// Golden vectors: postcard 1.x (variants and lengths as varints, `[u8; 32]` as its bytes).
    #[test]
    fn golden_frames() {
        let digest = BlobDigest([0x11; 32]);
        let cases: Vec<(ImageMessage, String)> = vec![
            (
                ImageMessage::Want { digest },
                format!("00000021 00 {}", "11".repeat(32)),
            ),
            (
                ImageMessage::Have {
                    manifest: b"{}".to_vec(),
                    blobs: vec![(digest, 300)],
                },
                // 01 | manifest: 02 "{}" | blobs: 01 | digest | 300 = ac 02
                format!("00000027 01 02 7b7d 01 {} ac02", "11".repeat(32)),
            ),
            (ImageMessage::NotHere, "00000001 02".to_owned()),
            (
                ImageMessage::Blob {
                    digest,
                    offset: 128,
                },
                format!("00000023 03 {} 8001", "11".repeat(32)),
            ),
            (
                ImageMessage::BlobStart { size: 1 << 20 },
                "00000004 04 808040".to_owned(),
            ),
            (
                ImageMessage::Error {
                    message: "no".into(),
                },
                "00000004 05 02 6e6f".to_owned(),
            ),
        ];
        for (message, hex_text) in cases {
            let bytes = hex::decode(hex_text.replace(' ', "")).expect("hex");
            assert_eq!(
                encode_image_message(&message).expect("encodes"),
                bytes,
                "{}",
                message.name()
            );
            assert_eq!(decode_image_frame(&bytes), Ok(Some((message, bytes.len()))));
        }
    }
}
