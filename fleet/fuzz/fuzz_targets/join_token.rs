//! Fuzzes `JoinToken::parse` on arbitrary text; see `check_join_token` for the properties.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peercompute_fleet_fuzz::check_join_token;

fuzz_target!(|data: &[u8]| {
    check_join_token(data);
});
