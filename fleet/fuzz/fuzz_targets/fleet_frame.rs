//! Fuzzes `decode_frame` (and the entries and statuses frames carry) on arbitrary bytes; see
//! `check_fleet_frames` for the properties.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peercompute_fleet_fuzz::check_fleet_frames;

fuzz_target!(|data: &[u8]| {
    check_fleet_frames(data);
});
