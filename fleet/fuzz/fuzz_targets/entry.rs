//! Fuzzes `SignedEntry::decode` on arbitrary bytes; see `check_entry` for the properties.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peercompute_fleet_fuzz::check_entry;

fuzz_target!(|data: &[u8]| {
    check_entry(data);
});
