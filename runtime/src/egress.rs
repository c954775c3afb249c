//! The egress firewall of the sandbox network (checklist S1, S2): containers on
//! [`SANDBOX_BRIDGE`] may answer the connections the provider opens to them and may open
//! connections to the internet, but not to this host (any of its addresses, so none of its
//! services) and not to private, link-local (169.254.169.254, the cloud metadata address),
//! loopback, carrier-grade NAT or multicast ranges: the provider's LAN stays out of reach.
//! One exception: DNS (port 53), because the engine's resolver inside each container asks
//! the host's own upstream servers, which are usually on the LAN (the home router). The
//! sandbox network has no IPv6, and any IPv6 packet from it is dropped.
//!
//! One nftables table of our own, `inet peercompute_sandbox`, replaced atomically (`nft -f`),
//! so it never touches the engine's own rules nor anyone else's. A drop in any base chain is
//! final in nftables, whatever other tables accept. Needs CAP_NET_ADMIN (root); the rules last
//! until reboot, so the daemon (or the systemd unit, before it) installs them at every start.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::network::SANDBOX_BRIDGE;

/// The nftables table holding the rules.
pub const EGRESS_TABLE: &str = "peercompute_sandbox";

/// IPv4 destinations containers may not open connections to.
pub const BLOCKED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/3",
];

/// Why the firewall could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// No `nft` program.
    #[error(
        "the nft program is not installed (Debian: apt-get install nftables), so containers could reach this host and its LAN"
    )]
    NoNft,
    /// Not allowed to change the firewall.
    #[error(
        "changing the firewall needs root (CAP_NET_ADMIN): run `sudo peercomputed firewall{}`{}",
        if *.remove { " --remove" } else { "" },
        if *.remove { "" } else { " once per boot (the systemd unit does), or run peercomputed as root" }
    )]
    Denied {
        /// Whether removing was refused (installing otherwise).
        remove: bool,
    },
    /// `nft` refused the rules.
    #[error("nft refused the egress rules: {0}")]
    Refused(String),
    /// Running `nft` failed.
    #[error("running nft failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The whole ruleset, as `nft -f` takes it: it replaces the table if it exists. Anything
/// but a reply (`ct state` established or related) is dropped, so invalid and untracked
/// packets are too.
pub fn egress_ruleset() -> String {
    let v4 = BLOCKED_V4.join(", ");
    format!(
        "\
table inet {EGRESS_TABLE}
delete table inet {EGRESS_TABLE}
table inet {EGRESS_TABLE} {{
    set blocked_v4 {{
        type ipv4_addr
        flags interval
        elements = {{ {v4} }}
    }}
    # Containers open no connection to this host but DNS; replies to the provider's own
    # connections into them pass.
    chain input {{
        type filter hook input priority filter - 10; policy accept;
        iifname \"{SANDBOX_BRIDGE}\" meta l4proto {{ tcp, udp }} th dport 53 accept
        iifname \"{SANDBOX_BRIDGE}\" ct state != {{ established, related }} counter drop
    }}
    # Nor to private, link-local, loopback, CGNAT or multicast addresses beyond it, but DNS
    # (the engine's resolver asks the host's upstream servers from inside the container).
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        iifname \"{SANDBOX_BRIDGE}\" meta nfproto ipv6 counter drop
        iifname \"{SANDBOX_BRIDGE}\" meta l4proto {{ tcp, udp }} th dport 53 accept
        iifname \"{SANDBOX_BRIDGE}\" ip daddr @blocked_v4 ct state != {{ established, related }} counter drop
    }}
}}
"
    )
}

/// Runs `nft ARGS` with `stdin`; the error says what to do.
async fn nft(args: &[&str], stdin: &str) -> Result<(), EgressError> {
    let mut child = match tokio::process::Command::new("nft")
        .args(args)
        // Its messages are matched below.
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(EgressError::NoNft),
        Err(e) => return Err(e.into()),
    };
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") {
        return Err(EgressError::Denied {
            remove: args.first() == Some(&"delete"),
        });
    }
    Err(EgressError::Refused(stderr))
}

/// Installs (or replaces) the egress rules: a few milliseconds, so it can run before every
/// container start (and put back rules that `nft flush ruleset` removed).
pub async fn install_egress_firewall() -> Result<(), EgressError> {
    nft(&["-f", "-"], &egress_ruleset()).await
}

/// Removes the egress rules; `Ok(false)` when they were not there.
pub async fn remove_egress_firewall() -> Result<bool, EgressError> {
    match nft(&["delete", "table", "inet", EGRESS_TABLE], "").await {
        Ok(()) => Ok(true),
        Err(EgressError::Refused(e)) if e.contains("No such file or directory") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the egress rules are in place now (`nft list table`); needs the same privileges as
/// installing them.
pub async fn egress_firewall_present() -> Result<bool, EgressError> {
    match nft(&["list", "table", "inet", EGRESS_TABLE], "").await {
        Ok(()) => Ok(true),
        Err(EgressError::Refused(e)) if e.contains("No such file or directory") => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_replaces_one_table_and_matches_the_sandbox_bridge_only() {
        let rules = egress_ruleset();
        assert!(rules.starts_with(&format!(
            "table inet {EGRESS_TABLE}\ndelete table inet {EGRESS_TABLE}\n"
        )));
        let rules_lines: Vec<&str> = rules
            .lines()
            .filter(|l| (l.contains("drop") || l.contains("accept")) && !l.contains("policy"))
            .collect();
        assert_eq!(rules_lines.len(), 5, "{rules}");
        for line in rules_lines {
            assert!(
                line.contains(&format!("iifname \"{SANDBOX_BRIDGE}\"")),
                "{line}"
            );
            assert!(
                line.contains("ct state != { established, related }")
                    || line.contains("nfproto ipv6")
                    || line.contains("dport 53 accept"),
                "{line}"
            );
        }
        for range in [
            "169.254.0.0/16",
            "10.0.0.0/8",
            "192.168.0.0/16",
            "127.0.0.0/8",
        ] {
            assert!(rules.contains(range), "{range}");
        }
    }
}
