//! The provider's state stores, reachable by the crash tests (`state-writer`): each writes a
//! numbered version of its file through the daemon's own code and reads the number back, so
//! a test can kill a writer mid-write and check the file is the old or the new version.
//! Compiled only with the `testsupport` feature.

use std::path::Path;

use peercompute_identity::Identity;
use peercompute_tunnel_proto::{ListRequest, Nonce, Request, SignedEnvelope};

use crate::control::ReplayStore;
use crate::deploy::{StateRecord, StateStore};

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
