//! An imported volume archive (peer input: the tar a client streams into `volumes import`)
//! through the provider's check: any bytes are refused or accepted, never a panic, and an
//! accepted archive is within the share. `cargo test -p peercompute-provider --test
//! fuzz_corpus` replays `corpus/volume_archive/`.

#![no_main]

use peercompute_provider::volumes::check_archive;

/// The share the target checks against.
const SHARE: u64 = 1 << 20;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(summary) = check_archive(std::io::Cursor::new(data), SHARE) {
        assert!(summary.file_bytes <= SHARE);
    }
});
