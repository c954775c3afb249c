//! Propagation of one fleet entry to many members through the gateway, in-process with real
//! libp2p: an admin pushes a release to the gateway, which verifies it and pushes it on to
//! every enrolled member; each member verifies and stores it. A sample is the time from the
//! admin's push to one member having stored the entry.
//!
//! The baseline, measured in the same run, is one push round trip from the admin to the
//! gateway (verify + store + ack): propagation can be no faster than that plus a second hop.
//!
//! `cargo run --release -p peercompute-tests --bin fleet-bench -- --members 50 --rounds 20`

use std::time::{Duration, Instant};

use clap::Parser;
use ed25519_dalek::SigningKey;
use peercompute_fleet::{EntryHash, Op, PushResult};
use peercompute_p2p::fleet_hub;
use peercompute_tests::fleet::{FleetMember, release};
use peercompute_tests::{GatewayOptions, TestGateway, within};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(about = "Propagation of fleet entries to many members through the gateway")]
struct Args {
    /// Members (robots) enrolled in the group.
    #[arg(long, default_value_t = 50)]
    members: usize,
    /// Releases pushed, one after the other.
    #[arg(long, default_value_t = 20)]
    rounds: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let gw = TestGateway::start(GatewayOptions {
        p2p: true,
        open: true,
        ..GatewayOptions::default()
    })
    .await;
    let gateway = gw.p2p_addr().await;
    let admin = FleetMember::start(&gateway, true).await;
    let fleet = admin.found(&SigningKey::from_bytes(&[9; 32]), "bench");
    let admin_key = admin.identity.signing_key().clone();
    eprintln!("starting {} members…", args.members);
    let mut members = Vec::with_capacity(args.members);
    for i in 0..args.members {
        let m = FleetMember::start(&gateway, false).await;
        admin.write(
            fleet,
            &admin_key,
            Op::Enroll {
                member: m.key(),
                name: format!("robot-{i}"),
                groups: vec!["production".into()],
            },
        );
        m.hub.hold(fleet).expect("hold");
        members.push(m);
    }
    fleet_hub::sync_with(&admin.node, gw.peer_id, &admin.hub, fleet)
        .await
        .expect("admin sync");
    for m in &members {
        within(
            30,
            "member sync",
            fleet_hub::sync_with(&m.node, gw.peer_id, &m.hub, fleet),
        )
        .await
        .expect("member sync");
    }
    let expected = admin.len(&fleet);
    assert!(
        members.iter().all(|m| m.len(&fleet) == expected),
        "every member caught up"
    );

    // Every member reports each entry it stores.
    let (tx, mut rx) = mpsc::channel::<(EntryHash, Instant)>(args.members * 4);
    for m in &members {
        let mut changes = m.hub.subscribe();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(change) = changes.recv().await {
                let now = Instant::now();
                for hash in change.entries {
                    let _ = tx.send((hash, now)).await;
                }
            }
        });
    }

    // Baseline: a push round trip to the gateway (an entry the gateway then forwards too).
    let mut baseline = Vec::new();
    let mut samples = Vec::new();
    for round in 1..=args.rounds {
        let entry = admin.write(
            fleet,
            &admin_key,
            release("production", round, &format!("v{round}")),
        );
        let started = Instant::now();
        let results =
            fleet_hub::push_to(&admin.node, gw.peer_id, fleet, vec![entry.bytes().to_vec()])
                .await
                .expect("push");
        baseline.push(started.elapsed());
        assert_eq!(results, vec![PushResult::Stored(entry.hash())]);
        let mut got = 0;
        while got < args.members {
            let (hash, at) = within(10, "every member stores the release", rx.recv())
                .await
                .expect("receipts");
            if hash == entry.hash() {
                samples.push(at - started);
                got += 1;
            }
        }
    }
    samples.sort();
    baseline.sort();
    let base = percentile(&baseline, 0.5);
    let (p50, p99, max) = (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        *samples.last().expect("samples"),
    );
    println!(
        "fleet entry propagation: {} members × {} releases = {} samples",
        args.members,
        args.rounds,
        samples.len()
    );
    println!("| figure | ms | × baseline |");
    println!("|---|---|---|");
    println!(
        "| baseline: push round trip admin → gateway (median) | {:.1} | 1.0 |",
        ms(base)
    );
    for (name, d) in [
        ("propagation p50", p50),
        ("propagation p99", p99),
        ("propagation max", max),
    ] {
        println!("| {name} | {:.1} | {:.1} |", ms(d), ms(d) / ms(base));
    }
    let target = Duration::from_millis(500);
    println!(
        "target p99 ≤ 500 ms: {}",
        if p99 <= target { "met" } else { "MISSED" }
    );
}
