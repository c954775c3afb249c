//! Fuzzes `decode_image_frame` (`/peercompute/image/1` control frames) on arbitrary bytes; see
//! `check_image_frames` for the properties.

#![no_main]

#[path = "../src/image_frame.rs"]
mod image_frame;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    image_frame::check_image_frames(data);
});
