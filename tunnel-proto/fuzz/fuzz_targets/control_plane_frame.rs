//! Fuzzes the control-plane codec (`decode_control_plane`, `decode_request`, signed envelope
//! verification) on arbitrary bytes; see `src/control_plane.rs` for the properties.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../src/control_plane.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::check_control_plane(data);
});
