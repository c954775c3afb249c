//! Fuzzes `decode_stream_header` on arbitrary bytes; see `check_stream_headers` for the
//! properties.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peercompute_tunnel_proto_fuzz::check_stream_headers;

fuzz_target!(|data: &[u8]| {
    check_stream_headers(data);
});
