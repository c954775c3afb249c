//! ACME with several gateways sharing one etcd (`--cluster` + `--tls acme`, issue 14): one
//! orderer (the holder of the cluster's ACME lock), every gateway serving what it published.
//! Real parts: `/usr/bin/etcd`, bind9 (RFC 2136 + TSIG) and pebble on loopback, three
//! in-process gateways with one `--cluster-secret-file`.
//!
//! - DNS-01 wildcard: exactly one order in total (the three gateways' `acme_orders_total`,
//!   and pebble's log), and the three present the same leaf in a TLS handshake; the private
//!   key in etcd is sealed (not in clear).
//! - The lock holder dies (its task aborted, its lease left to expire): another gateway
//!   takes the lock within the lease TTL (time printed) and orders nothing.
//! - etcd killed, a gateway that never ordered restarts: it serves the adopted certificate
//!   from its own state dir.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peercompute_cluster::{ClusterOptions, ClusterStore};
use peercompute_gateway::AcmeChallenge;
use peercompute_tests::acme::{ACME_DOMAIN, AcmeGateway, Bind9, Pebble, PebbleOptions};
use peercompute_tests::etcd::EtcdServer;

const ORDERS: &str = "peercompute_gateway_acme_orders_total";
const LOCK_HELD: &str = "peercompute_gateway_cluster_acme_lock_held";

/// The cluster's shared sealing key, as an operator makes it.
fn secret_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("cluster-secret");
    let bytes: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    std::fs::write(&path, bytes).expect("write secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

async fn three_gateways(
    etcd: &EtcdServer,
    bind: &Bind9,
    pebble: &Pebble,
    secret: &std::path::Path,
) -> Vec<AcmeGateway> {
    let mut gateways = Vec::new();
    for _ in 0..3 {
        let (ports, listeners) = AcmeGateway::bind().await;
        let state = Arc::new(tempfile::tempdir().expect("state dir"));
        let mut config = AcmeGateway::config(&state, &ports);
        config.acme_directory = pebble.directory.clone();
        config.acme_ca = Some(pebble.ca_path.clone());
        config.acme_challenge = Some(AcmeChallenge::Dns01);
        config.dns_server = Some(bind.addr.to_string());
        config.dns_tsig_key = Some(bind.key_path.clone());
        config.cluster = vec![etcd.cluster_endpoint()];
        config.cluster_secret_file = Some(secret.to_path_buf());
        gateways.push(AcmeGateway::start(state, ports, listeners, config));
    }
    gateways
}

/// The leaf `gw` presents for `x.acme.test`, once it presents one pebble's root verifies.
async fn leaf(gw: &AcmeGateway, root: &[u8], secs: u64) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match gw.handshake("x.acme.test", root, &[b"h2"]).await {
            Ok(leaf) => return leaf.as_ref().to_vec(),
            Err(e) if Instant::now() >= deadline => {
                panic!(
                    "gateway {} serves no verified certificate after {secs}s: {e}",
                    gw.ports.https
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn three_gateways_one_order_same_certificate_and_the_lock_moves_on() {
    peercompute_tests::init();
    let etcd = EtcdServer::start().await;
    let bind = Bind9::start(ACME_DOMAIN).await;
    // HTTP-01/TLS-ALPN-01 ports are unused (DNS-01); any free ones do.
    let pebble = Pebble::start(PebbleOptions {
        dns: bind.addr,
        http_port: peercompute_tests::acme::process::free_port(),
        tls_port: peercompute_tests::acme::process::free_port(),
        validity_secs: None,
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let secret = secret_file(&dir);
    let started = Instant::now();
    let mut gws = three_gateways(&etcd, &bind, &pebble, &secret).await;
    let root = pebble.root_pem().await;

    let mut leaves = Vec::new();
    for gw in &gws {
        leaves.push(leaf(gw, &root, 60).await);
    }
    eprintln!(
        "figure: all three gateways serve a verified wildcard certificate {:?} after they started",
        started.elapsed()
    );
    assert!(
        leaves.iter().all(|l| *l == leaves[0]),
        "the three gateways present the same leaf"
    );
    let mut orders = Vec::new();
    for gw in &gws {
        orders.push(gw.metric(ORDERS).await);
    }
    let issued = pebble.issued();
    eprintln!("figure: acme_orders_total per gateway {orders:?}; pebble issued {issued}");
    assert_eq!(
        orders.iter().sum::<f64>(),
        1.0,
        "exactly one order in the cluster"
    );
    assert_eq!(
        issued,
        1,
        "pebble issued one certificate; {}",
        pebble.log_tail()
    );

    // What etcd holds: the chain in clear, the private key sealed.
    let reader = ClusterStore::connect(
        &[etcd.cluster_endpoint()],
        ClusterOptions::new(ACME_DOMAIN, "test-reader"),
    )
    .await
    .expect("reader store");
    let mut published = reader.follow("acme/certs/");
    let map = peercompute_tests::within(10, "published certificate", async {
        loop {
            if let Some(map) = published.borrow_and_update().clone() {
                return map;
            }
            published.changed().await.expect("follow task");
        }
    })
    .await;
    let value = String::from_utf8(map.get(ACME_DOMAIN).expect("acme/certs/acme.test").clone())
        .expect("JSON text");
    assert!(
        value.contains("BEGIN CERTIFICATE"),
        "the chain is published"
    );
    assert!(
        !value.contains("PRIVATE KEY"),
        "the key is not in clear: {value}"
    );

    // The holder dies without a goodbye: another gateway takes the lock when its lease ends.
    let mut holder = None;
    for (i, gw) in gws.iter().enumerate() {
        if gw.metric(LOCK_HELD).await == 1.0 {
            holder = Some(i);
        }
    }
    let holder = holder.expect("one gateway holds the ACME lock");
    assert_eq!(orders[holder], 1.0, "the holder is the one that ordered");
    let killed = Instant::now();
    gws[holder].abort().await;
    let deadline = killed + Duration::from_secs(15);
    let next = loop {
        let mut next = None;
        for (i, gw) in gws.iter().enumerate() {
            if i != holder && gw.metric(LOCK_HELD).await == 1.0 {
                next = Some(i);
            }
        }
        if let Some(i) = next {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no gateway took the ACME lock within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let handover = killed.elapsed();
    eprintln!(
        "figure: ACME lock handed over from gateway {holder} to {next} in {handover:?} (lease TTL 10 s)"
    );
    assert!(
        handover <= Duration::from_secs(12),
        "within the lease TTL: {handover:?}"
    );
    // The new holder adopted the published certificate: it does not order again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        gws[next].metric(ORDERS).await,
        0.0,
        "the new holder orders nothing"
    );
    assert_eq!(pebble.issued(), 1);

    // etcd gone, a gateway that never ordered restarts: it serves the certificate it
    // adopted, from its own state dir.
    let mut etcd = etcd;
    etcd.kill();
    let third = 3 - holder - next;
    let restarted = gws.remove(third).restart().await;
    let after = leaf(&restarted, &root, 20).await;
    assert_eq!(
        after, leaves[0],
        "the adopted certificate, served with etcd down"
    );
    eprintln!("figure: gateway {third} restarted with etcd down serves the adopted certificate");
    let mut restarted = restarted;
    restarted.shutdown().await;
    for gw in &mut gws {
        gw.shutdown().await;
    }
}
