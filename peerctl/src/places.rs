//! What peerctl remembers besides trust: the gateways it can look providers up at
//! (`gateways.json`) and how each peer was last reached (`paths.json`), both in the home
//! directory, written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use peercompute_identity::{PeerId, parse_peer_id, write_atomic};
use peercompute_p2p::{Multiaddr, PathKind, PeerPath, Protocol};
use serde::{Deserialize, Serialize};

/// A gateway whose rendezvous and relay peerctl uses to reach providers behind NAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    pub peer_id: String,
    pub addrs: Vec<String>,
    /// `manual` (gateways add) or the provider it was learned from.
    pub source: String,
}

impl Gateway {
    /// The peer id and parsed addresses; entries that do not parse are skipped.
    pub fn parsed(&self) -> Option<(PeerId, Vec<Multiaddr>)> {
        let id = parse_peer_id(&self.peer_id).ok()?;
        let addrs = self.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        Some((id, addrs))
    }
}

/// How a peer was last reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastPath {
    pub kind: PathKind,
    pub address: String,
    pub rtt_ms: Option<f64>,
    /// Unix seconds.
    pub at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Files {
    #[serde(default)]
    gateways: Vec<Gateway>,
    #[serde(default)]
    paths: BTreeMap<String, LastPath>,
}

/// Why the files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PlacesError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// The gateways and last paths of one home directory.
#[derive(Debug)]
pub struct Places {
    home: PathBuf,
    files: Files,
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T, PlacesError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| PlacesError::File {
            path: path.to_path_buf(),
            reason: format!("{e} (fix or delete the file)"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(PlacesError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Splits `PEERID@MULTIADDR` or `MULTIADDR/p2p/PEERID` into the id and the bare address.
pub fn parse_gateway(text: &str) -> Result<(PeerId, Multiaddr), PlacesError> {
    let usage = |why: String| {
        PlacesError::Invalid(format!(
            "`{text}` is not PEERID@MULTIADDR or MULTIADDR/p2p/PEERID ({why}); e.g. 12D3KooW…@/ip4/203.0.113.7/udp/4001/quic-v1"
        ))
    };
    let (id, addr) = match text.split_once('@') {
        Some((id, addr)) => (
            Some(parse_peer_id(id).map_err(usage)?),
            addr.parse::<Multiaddr>()
                .map_err(|e| usage(e.to_string()))?,
        ),
        None => (
            None,
            text.parse::<Multiaddr>()
                .map_err(|e| usage(e.to_string()))?,
        ),
    };
    let mut addr = addr;
    let in_addr = match addr.iter().last() {
        Some(Protocol::P2p(p)) => {
            addr.pop();
            Some(p)
        }
        _ => None,
    };
    let id = match (id, in_addr) {
        (Some(a), Some(b)) if a != b => {
            return Err(usage(format!("two different peer ids: {a} and {b}")));
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => return Err(usage("no peer id".into())),
    };
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return Err(usage("a gateway address cannot be a relayed one".into()));
    }
    Ok((id, addr))
}

/// The gateway part of a relayed address `…/p2p/GATEWAY/p2p-circuit[/p2p/PEER]`.
pub fn gateway_of_circuit(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let parts: Vec<Protocol<'_>> = addr.iter().collect();
    let at = parts
        .windows(2)
        .position(|w| matches!(w[0], Protocol::P2p(_)) && matches!(w[1], Protocol::P2pCircuit))?;
    let Protocol::P2p(id) = parts[at] else {
        return None;
    };
    Some((id, parts[..at].iter().cloned().collect()))
}

impl Places {
    pub fn open(home: &Path) -> Result<Self, PlacesError> {
        let gateways: Vec<Gateway> = read_json(&home.join("gateways.json"))?;
        let paths: BTreeMap<String, LastPath> = read_json(&home.join("paths.json"))?;
        Ok(Self {
            home: home.to_path_buf(),
            files: Files { gateways, paths },
        })
    }

    fn save(&self, name: &str, value: &impl Serialize) -> Result<(), PlacesError> {
        let path = self.home.join(name);
        let text = serde_json::to_vec_pretty(value).map_err(|e| PlacesError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::create_dir_all(&self.home).map_err(|e| PlacesError::File {
            path: self.home.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &text, 0o600).map_err(|e| PlacesError::File {
            path,
            reason: e.to_string(),
        })
    }

    pub fn gateways(&self) -> &[Gateway] {
        &self.files.gateways
    }

    /// Adds (or extends with a new address) the gateway `id`; returns whether anything
    /// changed.
    pub fn add_gateway(
        &mut self,
        id: PeerId,
        addr: &Multiaddr,
        source: &str,
    ) -> Result<bool, PlacesError> {
        let id_text = id.to_string();
        let addr_text = addr.to_string();
        let changed = match self
            .files
            .gateways
            .iter_mut()
            .find(|g| g.peer_id == id_text)
        {
            Some(g) if g.addrs.contains(&addr_text) => false,
            Some(g) => {
                g.addrs.push(addr_text);
                true
            }
            None => {
                self.files.gateways.push(Gateway {
                    peer_id: id_text,
                    addrs: vec![addr_text],
                    source: source.to_owned(),
                });
                true
            }
        };
        if changed {
            self.save("gateways.json", &self.files.gateways)?;
        }
        Ok(changed)
    }

    pub fn remove_gateway(&mut self, id: &str) -> Result<Gateway, PlacesError> {
        let pos = self
            .files
            .gateways
            .iter()
            .position(|g| g.peer_id == id)
            .ok_or_else(|| {
                PlacesError::Invalid(format!(
                    "no gateway {id}: `peerctl gateways list` shows the known ones"
                ))
            })?;
        let removed = self.files.gateways.remove(pos);
        self.save("gateways.json", &self.files.gateways)?;
        Ok(removed)
    }

    pub fn last_path(&self, peer: &PeerId) -> Option<&LastPath> {
        self.files.paths.get(&peer.to_string())
    }

    pub fn record_path(&mut self, peer: &PeerId, path: &PeerPath) -> Result<(), PlacesError> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.files.paths.insert(
            peer.to_string(),
            LastPath {
                kind: path.kind,
                address: path.address.to_string(),
                rtt_ms: path.rtt.map(|d| d.as_secs_f64() * 1000.0),
                at,
            },
        );
        self.save("paths.json", &self.files.paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> PeerId {
        peercompute_identity::Identity::generate()
            .expect("id")
            .peer_id()
    }

    #[test]
    fn gateway_forms() {
        let gw = id();
        let (a, addr) =
            parse_gateway(&format!("{gw}@/ip4/1.2.3.4/udp/4001/quic-v1")).expect("at form");
        assert_eq!(
            (a, addr.to_string().as_str()),
            (gw, "/ip4/1.2.3.4/udp/4001/quic-v1")
        );
        let (b, addr) =
            parse_gateway(&format!("/ip4/1.2.3.4/tcp/4001/p2p/{gw}")).expect("p2p form");
        assert_eq!(
            (b, addr.to_string().as_str()),
            (gw, "/ip4/1.2.3.4/tcp/4001")
        );
        assert!(parse_gateway("/ip4/1.2.3.4/tcp/4001").is_err(), "no id");
        assert!(parse_gateway(&format!("{gw}@/ip4/1.2.3.4/tcp/4001/p2p/{}", id())).is_err());
        assert!(parse_gateway(&format!("{gw}@nonsense")).is_err());
    }

    #[test]
    fn gateway_of_a_circuit() {
        let (gw, peer) = (id(), id());
        let circuit: Multiaddr =
            format!("/ip4/1.2.3.4/udp/4001/quic-v1/p2p/{gw}/p2p-circuit/p2p/{peer}")
                .parse()
                .expect("ma");
        let (g, base) = gateway_of_circuit(&circuit).expect("gateway");
        assert_eq!(
            (g, base.to_string().as_str()),
            (gw, "/ip4/1.2.3.4/udp/4001/quic-v1")
        );
        let direct: Multiaddr = format!("/ip4/1.2.3.4/tcp/1/p2p/{peer}")
            .parse()
            .expect("ma");
        assert!(gateway_of_circuit(&direct).is_none());
    }

    #[test]
    fn stores_round_trip_and_reject_garbage() {
        let dir = tempfile::tempdir().expect("dir");
        let mut places = Places::open(dir.path()).expect("empty home");
        let gw = id();
        let addr: Multiaddr = "/ip4/1.2.3.4/tcp/4001".parse().expect("ma");
        assert!(places.add_gateway(gw, &addr, "manual").expect("add"));
        assert!(!places.add_gateway(gw, &addr, "manual").expect("again"));
        let peer = id();
        let path = PeerPath {
            address: addr.clone(),
            kind: PathKind::Relayed,
            rtt: Some(std::time::Duration::from_millis(12)),
        };
        places.record_path(&peer, &path).expect("record");
        let again = Places::open(dir.path()).expect("reopen");
        assert_eq!(again.gateways().len(), 1);
        assert_eq!(
            again.last_path(&peer).map(|p| p.kind),
            Some(PathKind::Relayed)
        );
        std::fs::write(dir.path().join("gateways.json"), b"{not json").expect("write");
        let err = Places::open(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains("gateways.json"), "{err}");
    }
}
