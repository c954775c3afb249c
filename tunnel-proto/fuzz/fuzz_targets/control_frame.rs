//! Fuzzes `decode_control` on arbitrary bytes; see `check_control_frames` for the properties.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peercompute_tunnel_proto_fuzz::check_control_frames;

fuzz_target!(|data: &[u8]| {
    check_control_frames(data);
});
