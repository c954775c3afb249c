//! The properties the `image_frame` fuzz target checks, shared with `cargo test`: the target
//! includes this file, and the fleet crate's `tests/image_frame_corpus.rs` includes it with
//! `#[path]` to replay every file of `corpus/image_frame/`. Only the fleet crate is used, so
//! the file compiles in both crates.
//!
//! For any input bytes, nothing panics, and decoding repeatedly from the front of one buffer:
//! each frame takes its 4-byte header and the length it announces; its message re-encodes to
//! a frame no longer than it (postcard accepts overlong varints) that decodes to the same
//! message; "need more bytes" is only answered while the announced frame is incomplete, and
//! never for a length over [`MAX_IMAGE_FRAME`]; a `Have` never lists more than
//! [`MAX_IMAGE_BLOBS`] blobs.

use peercompute_fleet::{
    ImageMessage, ImageWireError, MAX_IMAGE_BLOBS, MAX_IMAGE_FRAME, decode_image_frame,
    encode_image_message,
};

/// Frame header: `length: u32 BE`.
const HEADER: usize = 4;

/// How a buffer of image frames ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageFrameEnd {
    /// Every byte was used by whole frames.
    Complete,
    /// The last frame was incomplete.
    NeedMore,
    /// A header announced more than the limit.
    TooLarge,
    /// A body did not decode.
    Malformed,
}

/// The names of the messages decoded, in order, and how the buffer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFrameReport {
    pub messages: Vec<&'static str>,
    pub end: ImageFrameEnd,
}

/// Decodes `data` as a sequence of image frames, checking the properties above.
pub fn check_image_frames(data: &[u8]) -> ImageFrameReport {
    let mut rest = data;
    let mut messages = Vec::new();
    loop {
        if rest.is_empty() {
            return ImageFrameReport {
                messages,
                end: ImageFrameEnd::Complete,
            };
        }
        let end = match decode_image_frame(rest) {
            Ok(Some((message, used))) => {
                check_message(rest, &message, used);
                messages.push(message.name());
                rest = &rest[used..];
                continue;
            }
            Ok(None) => {
                if let Some(header) = rest.get(..HEADER) {
                    let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
                    assert!(len <= MAX_IMAGE_FRAME, "waits for a frame over the limit");
                    assert!(rest.len() < HEADER + len, "waits though the frame is whole");
                }
                ImageFrameEnd::NeedMore
            }
            Err(ImageWireError::TooLarge(len)) => {
                assert!(len > MAX_IMAGE_FRAME, "refused a length within the limit");
                ImageFrameEnd::TooLarge
            }
            Err(ImageWireError::Malformed(_)) => ImageFrameEnd::Malformed,
        };
        return ImageFrameReport { messages, end };
    }
}

fn check_message(frame: &[u8], message: &ImageMessage, used: usize) {
    let len = u32::from_be_bytes(frame[..HEADER].try_into().expect("4 bytes")) as usize;
    assert_eq!(
        used,
        HEADER + len,
        "a frame takes its header and its length"
    );
    if let ImageMessage::Have { blobs, .. } = message {
        assert!(blobs.len() <= MAX_IMAGE_BLOBS, "too many blobs accepted");
    }
    let again = encode_image_message(message).expect("a decoded message encodes");
    assert!(again.len() <= used, "re-encoding grew the frame");
    let (back, back_used) = decode_image_frame(&again)
        .expect("a re-encoded frame decodes")
        .expect("whole");
    assert_eq!(&back, message);
    assert_eq!(back_used, again.len());
}
