//! End-to-end harness: starts the real gateway and provider libraries in-process on
//! 127.0.0.1 port 0, with real dev TLS and real QUIC, plus test backends.
//!
//! - [`backend`]: an HTTP/1.1 backend with echo, upload hashing, streaming download, SSE,
//!   slow and hanging endpoints, and a WebSocket echo server — each counts what it received.
//! - [`gateway`]: [`TestGateway`] — start, graceful shutdown, restart on the same ports/state.
//! - [`provider`]: [`TestProvider`] — identity, tunnel, register, graceful stop or crash (abort).
//! - [`daemon`]: [`TestDaemon`] — the whole provider daemon (libp2p control plane, Docker,
//!   tunnel) on 127.0.0.1, and [`TestClient`], a peerctl identity with its own trust file.
//! - [`docker_events`]: the engine's container events (create, start, die) with its own
//!   `timeNano`, for latency figures.
//! - [`site`]: [`site::SiteWorld`] — a gateway, and robots and a laptop on a site LAN in network
//!   namespaces, the WAN cuttable, hosts isolable (robots' container ports mirrored into their
//!   namespaces by `netns::port_mirror`).
//! - [`etcd`]: [`etcd::EtcdServer`] — a real etcd on loopback ports (kill, restart, pause),
//!   shared by gateways started with `GatewayOptions::cluster`.
//! - [`docker_proxy`]: a forwarder in front of the Docker socket that a test stops, so the
//!   engine stops answering for one daemon only.
//! - [`fleet`]: [`fleet::FleetMember`] — a libp2p node with its own fleet hub, dialled to a
//!   gateway (an admin's copy or a robot's log, in-process).
//! - [`fleet_rig`]: robots joined by token, web images pinned by digest in a local registry,
//!   visitors counting failed requests, and [`fleet_rig::Rig`] (a gateway, an admin running
//!   `peerctl`, robots in groups).
//! - [`image`]: a busybox web image built with no registry, loaded under a unique tag.
//! - [`acme`]: bind9 and pebble as child processes, and a gateway with `--tls acme`.
//! - [`crash`]: SIGKILL a state writer mid-write, check the file is the old or new version.
//! - [`small_disk`]: a tmpfs of a few MiB a test fills up and frees.
//! - [`lossy_link`]: a seeded user-space UDP link emulator (loss, delay, jitter per
//!   direction) to put between a provider and a gateway.
//! - [`tunnel_load`]: SHA-checked downloads/uploads and a bounded GET loop, for the loss
//!   test and `tunnel-bench --loss`.
//! - [`procfs`]: machine and process figures from `/proc`, for the benchmark programs.
//! - [`hostile_provider`]: a provider the gateway admits that then misbehaves (raw quinn).
//! - [`open_loop`]: open-loop GET visitors, their p99 over a window, resident-memory sampling.
//! - [`world`]: [`publish`] — gateway + admitted provider + backend published under a name.
//! - [`admin`]: the gateway's admin API from outside: a client with an optional bearer token,
//!   an SSE reader for `/api/v1/events`, a backend answering chosen statuses, token files;
//!   [`event_log`]: that stream read in the background, each message stamped on arrival.
//! - [`browser`]: a headless Chromium over WebDriver (fantoccini + chromedriver) for the
//!   dashboard test; console errors, screenshots and a not-blank check.
//! - [`client`]: HTTPS clients that trust the gateway's dev CA and resolve any
//!   `*.<domain>` to the gateway, over HTTP/1.1 or HTTP/2; raw TLS sockets for abuse tests.
//!
//! Readiness always comes from bound listeners and events (a registration answered, a
//! tunnel status), never from sleeping; every wait has a timeout.

pub mod acme;
pub mod admin;
pub mod backend;
pub mod browser;
pub mod client;
pub mod counted_gets;
pub mod crash;
pub mod daemon;
pub mod docker_events;
pub mod docker_proxy;
pub mod etcd;
pub mod event_log;
pub mod fleet;
pub mod fleet_rig;
mod fleet_rig_admin;
pub mod gateway;
pub mod h2raw;
pub mod hostile_provider;
pub mod image;
pub mod lines;
pub mod lossy_link;
pub mod nat;
pub mod netns;
pub mod open_loop;
pub mod procfs;
pub mod provider;
pub mod rotation_rig;
pub mod site;
pub mod small_disk;
pub mod tunnel_load;
pub mod world;

use std::future::Future;
use std::sync::Once;
use std::time::Duration;

pub use backend::{Backend, WsBackend, download_sha256};
pub use client::{Alpn, https_client, https_client_from, https_client_to, raw_tls, raw_tls_alpn};
pub use daemon::{
    TestClient, TestDaemon, answer, deploy_world, deployment_container, peerctl_bin, run_peerctl,
    run_peerctl_bytes,
};
pub use gateway::{DOMAIN, GatewayOptions, TestGateway};
pub use image::{TEST_PORT, TestImage};
pub use provider::{TestProvider, suite_transport};
pub use world::{Published, publish};

/// Installs the rustls crypto provider and, with `RUST_LOG` set, a log subscriber.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// Awaits `fut` or fails the test with `what` after `secs` seconds.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s waiting for {what}"),
    }
}
