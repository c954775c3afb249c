//! Who is serving: the provider, deployment and name the Peer Compute daemon passes in the
//! container's environment, the container's hostname, and when the process started. Built
//! once at start ([`Info::from_env`]) and shared by every request.

use std::time::{Duration, Instant};

/// Environment variable naming the provider (peer id) that runs this container.
pub const ENV_PROVIDER: &str = "PEERCOMPUTE_PROVIDER";
/// Environment variable naming the deployment id.
pub const ENV_DEPLOYMENT: &str = "PEERCOMPUTE_DEPLOYMENT";
/// Environment variable naming the public name the deployment is reachable under.
pub const ENV_NAME: &str = "PEERCOMPUTE_NAME";

const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// What the app reports about where it runs; every field is optional because the app also
/// runs outside Peer Compute (plain `docker run`, tests).
#[derive(Debug, Clone)]
pub struct Info {
    /// `PEERCOMPUTE_PROVIDER`, if set and not empty.
    pub provider: Option<String>,
    /// `PEERCOMPUTE_DEPLOYMENT`, if set and not empty.
    pub deployment: Option<String>,
    /// `PEERCOMPUTE_NAME`, if set and not empty.
    pub name: Option<String>,
    /// The kernel hostname (the container id under Docker), if readable.
    pub hostname: Option<String>,
    /// When the process started; uptime is measured from here.
    pub started: Instant,
}

impl Default for Info {
    /// Nothing known, started now.
    fn default() -> Self {
        Self {
            provider: None,
            deployment: None,
            name: None,
            hostname: None,
            started: Instant::now(),
        }
    }
}

impl Info {
    /// Reads the `PEERCOMPUTE_*` variables and the hostname; never fails (missing means `None`).
    pub fn from_env() -> Self {
        Self {
            provider: env_value(ENV_PROVIDER),
            deployment: env_value(ENV_DEPLOYMENT),
            name: env_value(ENV_NAME),
            hostname: read_hostname(),
            started: Instant::now(),
        }
    }

    /// Time since [`Info::started`].
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// One line for the start-up log: `provider=… deployment=… name=… hostname=…`.
    pub fn summary(&self) -> String {
        let show = |v: &Option<String>| v.as_deref().unwrap_or("-").to_owned();
        format!(
            "provider={} deployment={} name={} hostname={}",
            show(&self.provider),
            show(&self.deployment),
            show(&self.name),
            show(&self.hostname)
        )
    }
}

fn env_value(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn read_hostname() -> Option<String> {
    let text = std::fs::read_to_string(HOSTNAME_FILE).ok()?;
    let name = text.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_shows_dashes_for_unknown_fields() {
        let info = Info {
            provider: Some("12D3KooW".into()),
            ..Info::default()
        };
        assert_eq!(
            info.summary(),
            "provider=12D3KooW deployment=- name=- hostname=-"
        );
    }
}
