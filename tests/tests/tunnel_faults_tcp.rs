//! The tests of `tunnel_faults.rs` with every provider on the TCP transport (TLS 1.3 to the
//! gateway's HTTPS port, yamux inside; [`peercompute_tests::suite_transport`] picks TCP from
//! this binary's name).

#[path = "tunnel_faults.rs"]
mod suite;
