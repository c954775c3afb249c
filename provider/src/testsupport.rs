//! The provider's state stores (deployments, nonces, the volume ledger, the fleet's applied
//! releases), reachable by the crash tests (`state-writer`): each writes a
//! numbered version of its file through the daemon's own code and reads the number back, so
//! a test can kill a writer mid-write and check the file is the old or the new version.
//! Compiled only with the `testsupport` feature.

use std::path::Path;

use peercompute_identity::Identity;
use peercompute_tunnel_proto::{ListRequest, Nonce, Request, SignedEnvelope};

use crate::control::ReplayStore;
use crate::deploy::{StateRecord, StateStore};
use crate::fleet::{Applied, AppliedGroup, Serving};
use crate::volumes::{Grant, LedgerFile, VolumeId};

/// How many deployment records `deployments.json` holds besides the versioned one.
const DEPLOYMENTS: u64 = 200;

/// `<state>/deployments.json` through the daemon's `Store`: 200 records plus one, `v`, whose
/// `created_at` is the version.
#[derive(Debug)]
pub struct Deployments(StateStore);

impl Deployments {
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        let mut store = StateStore::open(state_dir).map_err(|e| e.to_string())?;
        for i in 0..DEPLOYMENTS {
            let id = format!("d{i:03}");
            if store.get(&id).is_none() {
                store.put(record(&id, 0)).map_err(|e| e.to_string())?;
            }
        }
        Ok(Self(store))
    }

    /// The version on disk as the daemon reads it: `v`'s `created_at`, 0 without one.
    pub fn version(&self) -> Result<u64, String> {
        let count = self.0.all().count() as u64;
        if count < DEPLOYMENTS {
            return Err(format!("{count} records, expected at least {DEPLOYMENTS}"));
        }
        Ok(self.0.get("v").map_or(0, |r| r.created_at))
    }

    pub fn write(&mut self, version: u64) -> Result<(), String> {
        self.0.put(record("v", version)).map_err(|e| e.to_string())
    }
}

fn record(id: &str, created_at: u64) -> StateRecord {
    StateRecord {
        id: id.to_owned(),
        name: format!("app-{id}"),
        image: "registry.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
        owner: "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
        container_id: format!("{id:0>64}"),
        port: 8080,
        cpu_millis: 500,
        memory_bytes: 256 << 20,
        url: format!("https://app-{id}.gw.example"),
        created_at,
        volumes: Vec::new(),
        devices: Vec::new(),
        stopped_reason: None,
    }
}

/// `<state>/nonces.json` through the daemon's `ReplayStore`: every write verifies one freshly
/// signed `List`, as every signed request does; the version is the number of nonces held.
#[derive(Debug)]
pub struct Nonces {
    store: ReplayStore,
    client: Identity,
    me: Identity,
}

impl Nonces {
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(state_dir).map_err(|e| e.to_string())?;
        Ok(Self {
            store: ReplayStore::open(state_dir).map_err(|e| e.to_string())?,
            client: Identity::generate().map_err(|e| e.to_string())?,
            me: Identity::generate().map_err(|e| e.to_string())?,
        })
    }

    pub fn version(&self) -> u64 {
        self.store.recorded() as u64
    }

    pub fn write(&mut self) -> Result<(), String> {
        let now = crate::deploy::now_secs();
        let envelope = SignedEnvelope::sign(
            self.client.signing_key(),
            self.me.peer_id(),
            &Request::List(ListRequest {}),
            Nonce::random(),
            now,
        )
        .map_err(|e| e.to_string())?;
        self.store
            .verify(&envelope, &self.client.peer_id(), &self.me.peer_id(), now)
            .map_err(|e| e.to_string())?
            .saved
    }
}

/// How many volumes `volumes.json` holds besides the versioned one.
const VOLUMES: u64 = 60;
/// The engine name of the versioned volume.
const VERSIONED_VOLUME: &str = "pcv-versioned";

/// `<state>/volumes.json` through the daemon's `LedgerFile`: 60 volumes plus one whose share
/// is the version (a share only grows, as a larger `:SIZE` raises it).
#[derive(Debug)]
pub struct Volumes(LedgerFile);

impl Volumes {
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(state_dir).map_err(|e| e.to_string())?;
        let mut file = LedgerFile::open(state_dir).map_err(|e| e.to_string())?;
        if file.ledger.iter().count() < VOLUMES as usize {
            let grants: Vec<Grant> = (0..VOLUMES)
                .map(|i| volume_grant(&format!("pcv-{i:03}"), 1 << 30))
                .collect();
            file.change(|l| l.grant(&grants, 1_780_000_000))
                .map_err(|e| e.to_string())?;
        }
        Ok(Self(file))
    }

    /// The versioned volume's share, 0 without one; an error if the other volumes are gone
    /// (a damaged file is set aside and the ledger starts empty).
    pub fn version(&self) -> Result<u64, String> {
        let count = self.0.ledger.iter().count() as u64;
        if count < VOLUMES {
            return Err(format!("{count} volumes, expected at least {VOLUMES}"));
        }
        Ok(self
            .0
            .ledger
            .get(VERSIONED_VOLUME)
            .map_or(0, |e| e.share_bytes))
    }

    pub fn write(&mut self, version: u64) -> Result<(), String> {
        let grant = volume_grant(VERSIONED_VOLUME, version);
        self.0
            .change(|l| l.grant(&[grant], 1_780_000_000))
            .map_err(|e| e.to_string())
    }
}

fn volume_grant(name: &str, share_bytes: u64) -> Grant {
    Grant {
        name: name.to_owned(),
        id: VolumeId {
            scope: "peer:12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
            app: "app".into(),
            volume: name.to_owned(),
        },
        share_bytes,
        new: true,
    }
}

/// How many groups `applied.json` holds besides the versioned one.
const GROUPS: u64 = 40;

/// `<state>/applied.json` through the daemon's `Applied`: 40 groups serving a release plus one
/// whose `gap_ms` is the version.
#[derive(Debug)]
pub struct AppliedReleases {
    dir: std::path::PathBuf,
    applied: Applied,
}

impl AppliedReleases {
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(state_dir).map_err(|e| e.to_string())?;
        let mut applied = Applied::load(state_dir).map_err(|e| e.to_string())?;
        let fleet = applied.fleets.entry("fleet".into()).or_default();
        for i in 0..GROUPS {
            fleet
                .groups
                .entry(format!("g{i:02}"))
                .or_insert_with(|| serving_group(i, None));
        }
        Ok(Self {
            dir: state_dir.to_owned(),
            applied,
        })
    }

    /// The versioned group's `gap_ms`, 0 without one.
    pub fn version(&self) -> Result<u64, String> {
        let on_disk = Applied::load(&self.dir).map_err(|e| e.to_string())?;
        let Some(fleet) = on_disk.fleets.get("fleet") else {
            return Ok(0);
        };
        if (fleet.groups.len() as u64) < GROUPS {
            return Err(format!(
                "{} groups, expected at least {GROUPS}",
                fleet.groups.len()
            ));
        }
        Ok(fleet
            .groups
            .get("versioned")
            .and_then(|g| g.serving.as_ref())
            .and_then(|s| s.gap_ms)
            .unwrap_or(0))
    }

    pub fn write(&mut self, version: u64) -> Result<(), String> {
        *self.applied.group_mut("fleet", "versioned") = serving_group(version, Some(version));
        self.applied.save(&self.dir).map_err(|e| e.to_string())
    }
}

fn serving_group(i: u64, gap_ms: Option<u64>) -> AppliedGroup {
    AppliedGroup {
        serving: Some(Serving {
            release: format!("{i:064x}"),
            version: format!("1.{i}.0"),
            route: format!("app{i}-robot"),
            container_id: format!("{i:0>64}"),
            image: format!("registry.example/app@sha256:{i:064x}"),
            url: Some(format!("https://app{i}-robot.gw.example")),
            cpu_millis: 500,
            memory_bytes: 256 << 20,
            gap_ms,
            ..Serving::default()
        }),
        failed: None,
        kept_images: vec![format!("registry.example/app@sha256:{i:064x}")],
    }
}
