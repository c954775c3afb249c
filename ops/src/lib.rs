//! What the gateway's and the provider's admin listeners share: the HTTP/1.1 accept loop that
//! serves an axum router with a header timeout and a connection cap ([`serve`]), the admin
//! token file ([`tokens`]), the `Host` check against DNS rebinding ([`hosts`]), the standard
//! `process_*` series ([`process`]),
//! `peercompute_build_info` ([`build`]) and the machine figures the provider reports
//! ([`machine`]).

pub mod build;
pub mod hosts;
pub mod machine;
pub mod process;
pub mod serve;
pub mod tokens;
