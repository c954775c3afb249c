//! `state-writer write KIND DIR` rewrites one persisted file kind in `DIR` through the real store
//! code, numbering versions and printing `saved N` after each write returns, until it is killed
//! (or after a bounded number of writes). `state-writer check KIND DIR` opens the file the way
//! the daemon does and prints its version, or the open error with exit status 2.
//!
//! `tests/src/crash.rs` SIGKILLs the writer at random moments and checks every file is the old
//! or the new version. Kinds: `trust`, `deployments`, `nonces`, `volumes`, `applied` (the
//! provider's), `names`, `acme-cert` (the gateway's), `fleet-log`, `identity`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use peercompute_fleet::{FleetId, FleetStore, Grant, MemberKey, Op, Role};
use peercompute_identity::{Identity, TrustStore};

/// A writer that nobody kills stops after this many writes or this long.
const MAX_WRITES: u64 = 100_000;
const MAX_TIME: Duration = Duration::from_secs(60);

trait Kind {
    /// The version the store holds (as read at open, or after the last write).
    fn version(&self) -> Result<u64, String>;
    /// Writes the next version, `version`.
    fn write(&mut self, version: u64) -> Result<(), String>;
}

struct Trust(TrustStore);

impl Kind for Trust {
    fn version(&self) -> Result<u64, String> {
        Ok(self.0.list().len() as u64)
    }

    fn write(&mut self, _version: u64) -> Result<(), String> {
        let peer = Identity::generate().map_err(|e| e.to_string())?.peer_id();
        self.0
            .add(
                &peer.to_string(),
                None,
                &["/ip4/192.0.2.1/udp/4001/quic-v1"],
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A store whose `version` and `write(version)` already have the [`Kind`] shapes.
macro_rules! versioned_kind {
    ($($store:ty),* $(,)?) => {$(
        impl Kind for $store {
            fn version(&self) -> Result<u64, String> {
                <$store>::version(self)
            }

            fn write(&mut self, version: u64) -> Result<(), String> {
                <$store>::write(self, version)
            }
        }
    )*};
}

versioned_kind!(
    peercompute_provider::testsupport::Deployments,
    peercompute_provider::testsupport::Volumes,
    peercompute_provider::testsupport::AppliedReleases,
    peercompute_gateway::testsupport::AcmeCert,
);

impl Kind for peercompute_provider::testsupport::Nonces {
    fn version(&self) -> Result<u64, String> {
        Ok(peercompute_provider::testsupport::Nonces::version(self))
    }

    fn write(&mut self, _version: u64) -> Result<(), String> {
        peercompute_provider::testsupport::Nonces::write(self)
    }
}

impl Kind for peercompute_gateway::testsupport::Names {
    fn version(&self) -> Result<u64, String> {
        Ok(peercompute_gateway::testsupport::Names::version(self))
    }

    fn write(&mut self, version: u64) -> Result<(), String> {
        peercompute_gateway::testsupport::Names::write(self, version)
    }
}

/// A fleet log: one immutable `.entry` file per entry; the version is the number of entries.
struct FleetLog {
    store: FleetStore,
    operator: SigningKey,
}

const NOW: u64 = 1_780_000_000;

impl FleetLog {
    fn open(dir: &Path) -> Result<Self, String> {
        let root = SigningKey::from_bytes(&[1; 32]);
        let operator = SigningKey::from_bytes(&[13; 32]);
        let fleet = FleetId(root.verifying_key().to_bytes());
        let (mut store, report) = FleetStore::open(dir, fleet, NOW).map_err(|e| e.to_string())?;
        if let Some(bad) = report.bad.first() {
            return Err(format!(
                "{} bad entries, e.g. {}: {}",
                report.bad.len(),
                bad.file,
                bad.reason
            ));
        }
        if store.log().is_empty() {
            let genesis = Op::Genesis {
                name: "crash".into(),
            };
            let grant = Op::Grant(Grant {
                member: MemberKey(operator.verifying_key().to_bytes()),
                role: Role::Operator,
                groups: vec![],
                expires_at: None,
            });
            for op in [genesis, grant] {
                let entry = store
                    .log()
                    .author(&root, op, NOW)
                    .map_err(|e| e.to_string())?;
                store.insert(entry, NOW).map_err(|e| e.to_string())?;
            }
        }
        Ok(Self { store, operator })
    }
}

impl Kind for FleetLog {
    fn version(&self) -> Result<u64, String> {
        Ok(self.store.log().len() as u64)
    }

    fn write(&mut self, version: u64) -> Result<(), String> {
        // Alternating stop and resume: every entry changes the state, as an operator's would.
        let op = if version.is_multiple_of(2) {
            Op::estop(vec![], "crash test")
        } else {
            Op::Resume { groups: vec![] }
        };
        let entry = self
            .store
            .log()
            .author(&self.operator, op, NOW)
            .map_err(|e| e.to_string())?;
        self.store
            .insert(entry, NOW)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// `identity.key`: key N is the one whose secret starts with N (little endian).
struct Key(PathBuf);

impl Kind for Key {
    fn version(&self) -> Result<u64, String> {
        if !Identity::path_in(&self.0).exists() {
            return Ok(0);
        }
        let key = Identity::load(&self.0).map_err(|e| e.to_string())?;
        let bytes = key.signing_key().to_bytes();
        let mut n = [0u8; 8];
        n.copy_from_slice(&bytes[..8]);
        Ok(u64::from_le_bytes(n))
    }

    fn write(&mut self, version: u64) -> Result<(), String> {
        let mut seed = [7u8; 32];
        seed[..8].copy_from_slice(&version.to_le_bytes());
        Identity::from_signing_key(SigningKey::from_bytes(&seed))
            .save(&self.0)
            .map_err(|e| e.to_string())
    }
}

fn open(kind: &str, dir: &Path) -> Result<Box<dyn Kind>, String> {
    Ok(match kind {
        "trust" => Box::new(Trust(TrustStore::open(dir).map_err(|e| e.to_string())?)),
        "deployments" => Box::new(peercompute_provider::testsupport::Deployments::open(dir)?),
        "nonces" => Box::new(peercompute_provider::testsupport::Nonces::open(dir)?),
        "volumes" => Box::new(peercompute_provider::testsupport::Volumes::open(dir)?),
        "applied" => Box::new(peercompute_provider::testsupport::AppliedReleases::open(
            dir,
        )?),
        "names" => Box::new(peercompute_gateway::testsupport::Names::open(dir)?),
        "acme-cert" => Box::new(peercompute_gateway::testsupport::AcmeCert::open(dir)?),
        "fleet-log" => Box::new(FleetLog::open(dir)?),
        "identity" => Box::new(Key(dir.to_owned())),
        other => return Err(format!("unknown kind {other:?}")),
    })
}

fn run(mode: &str, kind: &str, dir: &Path) -> Result<(), String> {
    let mut store = open(kind, dir)?;
    let mut version = store.version()?;
    if mode == "check" {
        println!("{version}");
        return Ok(());
    }
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    for _ in 0..MAX_WRITES {
        if started.elapsed() > MAX_TIME {
            break;
        }
        version += 1;
        store.write(version)?;
        let now = store.version()?;
        if now != version {
            return Err(format!("wrote version {version}, the store says {now}"));
        }
        writeln!(out, "saved {version}")
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, kind, dir] = args.as_slice() else {
        eprintln!("usage: state-writer write|check KIND DIR");
        return ExitCode::from(1);
    };
    if mode != "write" && mode != "check" {
        eprintln!("usage: state-writer write|check KIND DIR");
        return ExitCode::from(1);
    }
    match run(mode, kind, Path::new(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{kind} in {dir}: {e}");
            ExitCode::from(2)
        }
    }
}
