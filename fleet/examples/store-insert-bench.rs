//! Insert latency of one e-stop into a fleet log of many entries, on disk: what a robot pays
//! between receiving a stop and acting on it. `FleetStore::insert` (prepare, write the file
//! atomically, commit) is measured against the baseline it replaced in the same run: clone the
//! whole log, insert into the clone, write the file, keep the clone.
//!
//! `cargo run --release -p peercompute-fleet --features fs --example store-insert-bench -- 50000 50`
//! (entries in the log, then samples of each kind).

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use peercompute_fleet::{
    FleetId, FleetLog, FleetStore, Grant, HealthCheck, Op, Release, Role, SignedEntry,
};
use peercompute_tunnel_proto::DeployRequest;

const NOW: u64 = 1_780_000_000;

fn release(group: &str, seq: u64) -> Op {
    let mut spec = DeployRequest::new(
        format!("registry.local/app@sha256:{}", hex::encode([seq as u8; 32])),
        8080,
    );
    spec.name = Some("app".into());
    Op::Release(Release {
        group: group.into(),
        seq,
        version: format!("v{seq}"),
        spec,
        health: HealthCheck {
            path: Some("/healthz".into()),
            timeout_secs: 30,
        },
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what:<34} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  (n={})",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
        samples.len()
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let entries: u64 = args.next().map_or(Ok(50_000), |a| a.parse())?;
    let samples: usize = args.next().map_or(Ok(50), |a| a.parse())?;
    let fleet_key = SigningKey::from_bytes(&[1; 32]);
    let operator = SigningKey::from_bytes(&[13; 32]);
    let fleet = FleetId(fleet_key.verifying_key().to_bytes());

    // The log: a genesis, an operator's grant, then releases of ten groups.
    let started = Instant::now();
    let mut log = FleetLog::new(fleet);
    let genesis = log.author(
        &fleet_key,
        Op::Genesis {
            name: "bench".into(),
        },
        NOW,
    )?;
    log.insert(genesis, NOW)?;
    let grant = Op::Grant(Grant {
        member: peercompute_fleet::MemberKey(operator.verifying_key().to_bytes()),
        role: Role::Operator,
        groups: vec![],
        expires_at: None,
    });
    log.insert(log.author(&fleet_key, grant, NOW)?, NOW)?;
    let mut seq = [0u64; 10];
    while (log.len() as u64) < entries {
        let g = log.len() % 10;
        seq[g] += 1;
        let entry = log.author(&fleet_key, release(&format!("group-{g}"), seq[g]), NOW)?;
        log.insert(entry, NOW)?;
    }
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("entries"))?;
    for e in log.iter() {
        std::fs::write(
            dir.path()
                .join("entries")
                .join(format!("{}.entry", e.hash())),
            e.bytes(),
        )?;
    }
    drop(log);
    let (mut store, report_) = FleetStore::open(dir.path(), fleet, NOW)?;
    assert!(report_.bad.is_empty(), "{:?}", report_.bad);
    eprintln!(
        "log of {} entries built and opened in {:.1} s",
        store.log().len(),
        started.elapsed().as_secs_f64()
    );

    // Alternating stop and resume, so every sample changes the state.
    let op = |i: usize| {
        if i.is_multiple_of(2) {
            Op::estop(vec![], "bench")
        } else {
            Op::Resume { groups: vec![] }
        }
    };
    let mut now_way = Vec::with_capacity(samples);
    for i in 0..samples {
        let entry = store.log().author(&operator, op(i), NOW)?;
        let t = Instant::now();
        store.insert(entry, NOW)?;
        now_way.push(t.elapsed());
    }
    let mut old_way = Vec::with_capacity(samples);
    for i in 0..samples {
        let entry: SignedEntry = store.log().author(&operator, op(i), NOW)?;
        let t = Instant::now();
        // What FleetStore::insert did before prepare/commit.
        let mut next = store.log().clone();
        let hash = entry.hash();
        let bytes = entry.bytes().to_vec();
        next.insert(entry.clone(), NOW)?;
        peercompute_identity::write_atomic(&store.path_of(&hash), &bytes, 0o644)?;
        old_way.push(t.elapsed());
        drop(next);
        // Keep the store in step (the file is already written; insert rewrites it).
        store.insert(entry, NOW)?;
    }
    println!("insert of one e-stop/resume into a log of {entries} entries (fsync on):");
    report("clone + insert + write (before)", old_way);
    report("prepare + write + commit (now)", now_way);
    Ok(())
}
