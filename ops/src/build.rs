//! `peercompute_build_info{version,commit,program} 1`: which build a scrape came from.
//!
//! `version` is the crate version; `commit` is `PEERCOMPUTE_COMMIT` at compile time
//! (`scripts/package` and `.ci/run` export `git rev-parse --short HEAD`), else `unknown`. A
//! git-calling build script was rejected: in a shared work tree it would rerun on every HEAD
//! move. Register it on an *unprefixed* registry so the name is exactly
//! `peercompute_build_info`.

use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The commit this binary was built from, or `unknown`.
pub const COMMIT: &str = match option_env!("PEERCOMPUTE_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// The version of the Peer Compute crates.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Registers `peercompute_build_info` for `program` (`peercompute-gateway`, `peercomputed`).
pub fn register(registry: &mut Registry, program: &'static str) {
    let info = Info::new(vec![
        ("version", VERSION),
        ("commit", COMMIT),
        ("program", program),
    ]);
    registry.register(
        "peercompute_build",
        "Which build is running (always 1)",
        info,
    );
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn the_series_is_named_as_the_issue_asks() {
        let mut registry = Registry::default();
        register(&mut registry, "peercomputed");
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        let want = format!(
            "peercompute_build_info{{version=\"{VERSION}\",commit=\"{COMMIT}\",program=\"peercomputed\"}} 1"
        );
        assert!(text.contains(&want), "{text}");
    }
}
