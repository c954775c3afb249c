//! Readiness from the probes' last results (pure; the probe tasks live in `mod.rs`): the
//! gateway tunnel is up (or no gateway is configured), the Docker engine answered its last
//! ping, and the egress firewall is in place when the daemon installs it. `/readyz` answers
//! 200 only when every check is ok, and names each one either way.

use serde::Serialize;

use crate::config::Firewall;
use crate::tunnel::TunnelStatus;

/// The Docker engine as the last probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DockerProbe {
    /// It answered the last ping.
    Up,
    /// It did not (the error says why).
    Down(String),
    /// There was no engine when the daemon started: deploys are refused until a restart.
    NotConnectedAtStart(String),
}

/// The egress firewall as the last probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FirewallProbe {
    /// `--firewall install` and the table is there.
    Installed,
    /// `--firewall install` and the table is not there.
    Missing,
    /// `--firewall install` and the table could not be listed (the error says why).
    Unknown(String),
    /// `--firewall external` or `off`: nothing to check, the mode is reported.
    NotChecked(Firewall),
}

/// What the probes last saw.
#[derive(Debug, Clone)]
pub(crate) struct Probes {
    /// `None` when no gateway is configured.
    pub(crate) tunnel: Option<TunnelStatus>,
    /// Each gateway's link (`links()`), shown when there are several.
    pub(crate) links: Vec<crate::tunnel::LinkStatus>,
    pub(crate) docker: DockerProbe,
    pub(crate) firewall: FirewallProbe,
}

/// One line of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

/// Whether the daemon is ready, and why (not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Readiness {
    pub(crate) ready: bool,
    pub(crate) checks: Vec<Check>,
}

impl Readiness {
    /// The checks as text, one `name: ok|FAIL detail` per line.
    pub(crate) fn text(&self) -> String {
        let mut out = String::from(if self.ready { "ready\n" } else { "not ready\n" });
        for c in &self.checks {
            let mark = if c.ok { "ok" } else { "FAIL" };
            out.push_str(&format!("{}: {mark} {}\n", c.name, c.detail));
        }
        out
    }
}

/// Readiness from `probes`.
pub(crate) fn readiness(probes: &Probes) -> Readiness {
    let tunnel = match &probes.tunnel {
        None => check("tunnel", true, "no gateway configured".into()),
        Some(TunnelStatus::Connected {
            gateway,
            session,
            transport,
            ..
        }) => check(
            "tunnel",
            true,
            format!("connected to {gateway} over {transport} (connection {session})"),
        ),
        Some(TunnelStatus::Connecting) => {
            check("tunnel", false, "connecting to the gateway".into())
        }
        Some(TunnelStatus::Refused { reason }) => check(
            "tunnel",
            false,
            format!("the gateway refused this provider: {reason}"),
        ),
        Some(TunnelStatus::WrongGateway {
            expected,
            presented,
        }) => check(
            "tunnel",
            false,
            format!("the gateway presented {presented}, not the pinned {expected}: fix --gateway"),
        ),
        Some(TunnelStatus::Stopped) => check("tunnel", false, "stopped".into()),
    };
    let tunnel = with_links(tunnel, &probes.links);
    let docker = match &probes.docker {
        DockerProbe::Up => check("docker", true, "the engine answers".into()),
        DockerProbe::Down(e) => check("docker", false, e.clone()),
        DockerProbe::NotConnectedAtStart(e) => check(
            "docker",
            false,
            format!("not connected at start ({e}); start Docker and restart peercomputed"),
        ),
    };
    let firewall = match &probes.firewall {
        FirewallProbe::Installed => check("firewall", true, "egress rules installed".into()),
        FirewallProbe::Missing => check(
            "firewall",
            false,
            "egress rules missing: deploys reinstall them, or run `sudo peercomputed firewall`"
                .into(),
        ),
        FirewallProbe::Unknown(e) => check("firewall", false, format!("cannot check: {e}")),
        FirewallProbe::NotChecked(mode) => {
            check("firewall", true, format!("not checked (firewall = {mode})"))
        }
    };
    let checks = vec![tunnel, docker, firewall];
    Readiness {
        ready: checks.iter().all(|c| c.ok),
        checks,
    }
}

/// With several gateways the tunnel check starts with how many links are up
/// ("2/3 gateways; connected to …"); with one it is left as it is.
fn with_links(mut tunnel: Check, links: &[crate::tunnel::LinkStatus]) -> Check {
    if links.len() > 1 {
        let up = links
            .iter()
            .filter(|l| matches!(l.status, TunnelStatus::Connected { .. }))
            .count();
        tunnel.detail = format!("{up}/{} gateways; {}", links.len(), tunnel.detail);
    }
    tunnel
}

fn check(name: &'static str, ok: bool, detail: String) -> Check {
    Check { name, ok, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes() -> Probes {
        Probes {
            tunnel: Some(TunnelStatus::Connected {
                gateway: "127.0.0.1:8443".parse().expect("addr"),
                session: 2,
                registered: 1,
                transport: crate::tunnel::Transport::Quic,
            }),
            links: Vec::new(),
            docker: DockerProbe::Up,
            firewall: FirewallProbe::Installed,
        }
    }

    #[test]
    fn ready_only_when_every_check_is_ok() {
        let all = readiness(&probes());
        assert!(all.ready);
        assert_eq!(all.checks.len(), 3);
        assert!(
            all.text()
                .starts_with("ready\ntunnel: ok connected to 127.0.0.1:8443")
        );

        type Change = Box<dyn Fn(&mut Probes)>;
        let table: Vec<(Change, &str)> = vec![
            (
                Box::new(|p| p.tunnel = Some(TunnelStatus::Connecting)),
                "tunnel",
            ),
            (
                Box::new(|p| {
                    p.tunnel = Some(TunnelStatus::Refused {
                        reason: "not on the allowlist".into(),
                    })
                }),
                "tunnel",
            ),
            (
                Box::new(|p| p.tunnel = Some(TunnelStatus::Stopped)),
                "tunnel",
            ),
            (
                Box::new(|p| p.docker = DockerProbe::Down("timed out".into())),
                "docker",
            ),
            (
                Box::new(|p| p.docker = DockerProbe::NotConnectedAtStart("no socket".into())),
                "docker",
            ),
            (
                Box::new(|p| p.firewall = FirewallProbe::Missing),
                "firewall",
            ),
            (
                Box::new(|p| p.firewall = FirewallProbe::Unknown("needs root".into())),
                "firewall",
            ),
        ];
        for (change, failing) in table {
            let mut p = probes();
            change(&mut p);
            let r = readiness(&p);
            assert!(!r.ready, "{failing}");
            let failed: Vec<&str> = r.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
            assert_eq!(failed, [failing]);
            assert!(
                r.text().contains(&format!("{failing}: FAIL")),
                "{}",
                r.text()
            );
        }
    }

    #[test]
    fn no_gateway_and_unchecked_firewall_are_ok() {
        let mut p = probes();
        p.tunnel = None;
        p.firewall = FirewallProbe::NotChecked(Firewall::External);
        let r = readiness(&p);
        assert!(r.ready);
        assert!(
            r.text()
                .contains("firewall: ok not checked (firewall = external)")
        );
        assert!(r.text().contains("tunnel: ok no gateway configured"));
    }

    #[test]
    fn several_gateways_show_how_many_links_are_up() {
        let link = |host: &str, status: TunnelStatus| crate::tunnel::LinkStatus {
            gateway: format!("{host}:8443").parse().expect("spec"),
            status,
        };
        let mut p = probes();
        let up = p.tunnel.clone().expect("connected");
        p.links = vec![
            link("gw1", up.clone()),
            link("gw2", TunnelStatus::Connecting),
            link("gw3", up),
        ];
        let r = readiness(&p);
        assert!(r.ready);
        assert!(
            r.text()
                .contains("tunnel: ok 2/3 gateways; connected to 127.0.0.1:8443"),
            "{}",
            r.text()
        );
        p.links.truncate(1);
        assert!(readiness(&p).text().contains("tunnel: ok connected to"));
    }
}
