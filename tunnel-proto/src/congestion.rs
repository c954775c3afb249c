//! The tunnel's congestion controller as people choose it (`--tunnel-congestion`,
//! `tunnel_congestion = "bbr"`): one name for the gateway and the provider, which each map it
//! to quinn's controller (this crate has no QUIC dependency). The sender of a transfer decides
//! its rate: the provider for downloads (responses), the gateway for uploads (request bodies).

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// Which QUIC congestion controller a side of the tunnel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelCongestion {
    /// CUBIC (RFC 9438), loss-based: quinn's default. Rate falls as 1/√loss.
    #[default]
    Cubic,
    /// BBR (model-based: bottleneck bandwidth and RTT); keeps its rate under random loss.
    /// quinn marks its BBR experimental.
    Bbr,
    /// NewReno (RFC 9002's reference controller), loss-based.
    NewReno,
}

impl TunnelCongestion {
    /// Every choice, in the order `--help` lists them.
    pub const ALL: [TunnelCongestion; 3] = [Self::Cubic, Self::Bbr, Self::NewReno];

    /// The name on the command line and in TOML files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cubic => "cubic",
            Self::Bbr => "bbr",
            Self::NewReno => "newreno",
        }
    }
}

impl fmt::Display for TunnelCongestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TunnelCongestion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown congestion controller {s:?}: use cubic, bbr or newreno")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_typos_are_refused() {
        for c in TunnelCongestion::ALL {
            assert_eq!(c.name().parse::<TunnelCongestion>(), Ok(c));
            assert_eq!(
                c.to_string().to_uppercase().parse::<TunnelCongestion>(),
                Ok(c)
            );
        }
        let Err(err) = "reno".parse::<TunnelCongestion>() else {
            panic!("reno was accepted");
        };
        assert!(err.contains("cubic, bbr or newreno"), "{err}");
        assert_eq!(TunnelCongestion::default(), TunnelCongestion::Cubic);
    }

    #[test]
    fn toml_style_values_deserialize() {
        #[derive(Deserialize)]
        struct K {
            c: TunnelCongestion,
        }
        let k: K = serde_json::from_str(r#"{"c":"newreno"}"#).expect("newreno");
        assert_eq!(k.c, TunnelCongestion::NewReno);
        assert!(serde_json::from_str::<K>(r#"{"c":"vegas"}"#).is_err());
    }
}
