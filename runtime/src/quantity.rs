//! Resource quantities (`--cpu 500m|0.5`, `--memory 256M|1GiB`): parsed and printed by
//! `peercompute-tunnel-proto`, next to the deploy request fields they fill, so the thin client
//! parses them without linking this crate. Re-exported here for the provider's limits and the
//! admission messages.

pub use peercompute_tunnel_proto::{
    QuantityError, format_cpu, format_memory, parse_cpu, parse_memory,
};
