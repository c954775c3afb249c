//! F6: full disks. The gateway's state directory, then the provider's home, on a tmpfs of a few
//! MiB that the test fills: what already works keeps working, what needs the disk is refused
//! with a sentence that says so, and everything recovers by itself once space is freed.
//! Needs root (a tmpfs mount); the provider half needs Docker.

use std::time::{Duration, Instant};

use peercompute_identity::{Identity, TrustStore};
use peercompute_provider::Limits;
use peercompute_tests::admin::AdminClient;
use peercompute_tests::event_log::EventLog;
use peercompute_tests::small_disk::SmallDisk;
use peercompute_tests::{
    Alpn, Backend, GatewayOptions, TEST_PORT, TestClient, TestDaemon, TestGateway, TestImage,
    TestProvider, https_client, run_peerctl,
};

/// The gateway's state disk: its identity, dev certificates, names.json and access log fit.
const GATEWAY_DISK: u64 = 4 << 20;
/// The provider's home: identity, trust, state files, fleet dir.
const PROVIDER_DISK: u64 = 8 << 20;
/// The provider registers a name again after 1, 2, 4, 8, 16 s: within this of space returning.
const RECOVERY: Duration = Duration::from_secs(35);

async fn get_status(client: &reqwest::Client, url: &str) -> u16 {
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_state_disk_full_refuses_new_names_with_try_later_and_recovers() {
    let disk = SmallDisk::mount(GATEWAY_DISK, None).expect("small disk");
    let key = TestProvider::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![key.peer_id()],
        state_parent: Some(disk.path().to_path_buf()),
        access_log: Some(disk.path().join("access.log")),
        ..GatewayOptions::default()
    })
    .await;
    let admin = AdminClient::new(gw.admin);
    let log = EventLog::start(&admin).await;
    let backend = Backend::start().await;
    let provider = TestProvider::start(key.clone(), &gw);
    provider
        .register("known", backend.addr)
        .await
        .expect("register before the disk fills");
    let client = https_client(&gw, &["known", "fresh"], Alpn::H1);
    assert_eq!(get_status(&client, &gw.url("known", "/")).await, 200);

    let filled = disk.fill().expect("fill");
    println!(
        "gateway state disk full: {filled} bytes of filler, {} bytes free",
        disk.available()
    );
    for _ in 0..5 {
        assert_eq!(
            get_status(&client, &gw.url("known", "/")).await,
            200,
            "a known name keeps answering on a full disk"
        );
    }

    // A new name cannot be recorded: refused with TryLater and the io error, kept by the
    // provider, which registers it again by itself.
    let mark = log.mark();
    let handle = provider.handle.clone();
    let target = backend.addr;
    let fresh = tokio::spawn(async move {
        handle
            .register("fresh", &target.ip().to_string(), target.port())
            .await
    });
    let refused = log
        .wait_from(mark, 15, "name_refused", |j| j["name"] == "fresh")
        .await;
    let reason = refused.json["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    println!("name_refused reason on a full disk: {reason:?}");
    assert!(
        reason.to_lowercase().contains("no space left"),
        "the reason names the cause: {reason}"
    );
    assert!(
        reason.starts_with("gateway cannot record the name right now: ")
            && reason.ends_with("; retrying"),
        "{reason}"
    );
    // A release cannot be recorded either: the owner stays.
    let (status, body) = admin.delete("/api/v1/names/known").await;
    assert_eq!(status, 500, "{body}");
    println!("release on a full disk: {status} {body}");
    assert_eq!(get_status(&client, &gw.url("known", "/")).await, 200);
    // The provider keeps trying: a second refusal comes after its backoff.
    log.wait_from(mark + 1, 15, "name_refused", |j| j["name"] == "fresh")
        .await;
    assert!(!fresh.is_finished(), "the registration is still pending");

    // Space returns: the name registers with no provider action.
    disk.free(1 << 20).expect("free");
    let freed = Instant::now();
    let url = tokio::time::timeout(RECOVERY, fresh)
        .await
        .expect("the name registers within 35 s of space returning")
        .expect("register task")
        .expect("registered");
    let took = freed.elapsed();
    println!(
        "`fresh` registered {:.1} s after 1 MiB was freed",
        took.as_secs_f64()
    );
    assert_eq!(url, gw.url("fresh", ""));
    assert_eq!(get_status(&client, &gw.url("fresh", "/")).await, 200);

    // A restart on a full disk starts, and names.json still holds both names.
    disk.fill().expect("fill again");
    let gw = gw.restart().await;
    let names: serde_json::Value = serde_json::from_slice(
        &std::fs::read(gw.state.path().join("names.json")).expect("names.json"),
    )
    .expect("names.json parses");
    let owners = names["owners"].as_object().expect("owners");
    assert!(
        owners.contains_key("known") && owners.contains_key("fresh"),
        "{names}"
    );
    let stale: Vec<_> = std::fs::read_dir(gw.state.path())
        .expect("ls state")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .map(|e| e.file_name())
        .collect();
    assert!(stale.is_empty(), "temporary files left: {stale:?}");
    provider.registered(2, 2).await;
    let client = https_client(&gw, &["known", "fresh"], Alpn::H1);
    assert_eq!(get_status(&client, &gw.url("known", "/")).await, 200);
    assert_eq!(get_status(&client, &gw.url("fresh", "/")).await, 200);
}

/// `peerctl deploy IMAGE --peer box --port P --name NAME --json`: exit code, stdout, stderr.
async fn deploy(client: &TestClient, image: &TestImage, name: &str) -> (i32, String, String) {
    run_peerctl(
        client.home.path(),
        &[
            "deploy",
            &image.tag,
            "--peer",
            "box",
            "--port",
            &TEST_PORT.to_string(),
            "--name",
            name,
            "--json",
        ],
    )
    .await
}

fn tmp_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_home_full_refuses_deploys_clearly_serves_the_rest_and_recovers() {
    let disk = SmallDisk::mount(PROVIDER_DISK, None).expect("small disk");
    let home = tempfile::tempdir_in(disk.path()).expect("provider home");
    let (id, _) = Identity::load_or_create(home.path()).expect("provider identity");
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![id.peer_id()],
        ..GatewayOptions::default()
    })
    .await;
    let image = TestImage::load().await;
    let mut daemon = TestDaemon::start(home, &gw, Limits::default()).await;
    let client = TestClient::new();
    daemon.trust(&client.peer_id());
    let mut store = TrustStore::open(client.home.path()).expect("client trust");
    store
        .add(&daemon.peer_id.to_string(), Some("box"), &[daemon.addr()])
        .expect("trust provider");

    let (code, out, err) = deploy(&client, &image, "alpha").await;
    assert_eq!(code, 0, "deploy before the disk fills: {err}");
    let alpha: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let alpha_id = alpha["id"].as_str().expect("id").to_owned();
    let web = https_client(&gw, &["alpha", "beta"], Alpn::H1);
    assert_eq!(get_status(&web, &gw.url("alpha", "/")).await, 200);

    let filled = disk.fill().expect("fill");
    println!("provider home full: {filled} bytes of filler");
    let (code, _, err) = deploy(&client, &image, "beta").await;
    println!("deploy on a full disk: exit {code}: {}", err.trim());
    assert_ne!(code, 0, "a deploy on a full disk fails");
    let lower = err.to_lowercase();
    assert!(
        lower.contains("no space left") && lower.contains("free space and retry"),
        "the error says why and what to do: {err}"
    );
    assert_eq!(daemon.managed_count().await, 1, "no container for beta");
    // Reads are served, and alpha keeps answering.
    let (code, out, err) = run_peerctl(client.home.path(), &["ls", "--peer", "box"]).await;
    assert_eq!(code, 0, "ls on a full disk: {err}");
    assert!(out.contains("alpha"), "{out}");
    let (code, _, err) = run_peerctl(
        client.home.path(),
        &["status", &alpha_id, "--peer", "box", "--json"],
    )
    .await;
    assert_eq!(code, 0, "status on a full disk: {err}");
    assert_eq!(get_status(&web, &gw.url("alpha", "/")).await, 200);

    // Space returns: the same deploy works, no restart.
    disk.free(PROVIDER_DISK / 2).expect("free");
    let freed = Instant::now();
    let (code, _, err) = deploy(&client, &image, "beta").await;
    assert_eq!(code, 0, "deploy once space is back: {err}");
    println!(
        "deploy after freeing space answered in {:.1} s",
        freed.elapsed().as_secs_f64()
    );
    assert_eq!(get_status(&web, &gw.url("beta", "/")).await, 200);

    // A restart on a full disk starts, with no temporary file left and both apps listed.
    disk.fill().expect("fill again");
    daemon.restart().await;
    let state = daemon.home.path().join("state");
    assert!(tmp_files(&state).is_empty(), "{:?}", tmp_files(&state));
    let (code, out, err) = run_peerctl(client.home.path(), &["ls", "--peer", "box"]).await;
    assert_eq!(code, 0, "ls after a restart on a full disk: {err}");
    assert!(out.contains("alpha") && out.contains("beta"), "{out}");
    // Stop is served on a full disk (it frees space); its record cannot be dropped yet.
    let (code, _, err) =
        run_peerctl(client.home.path(), &["stop", &alpha_id, "--peer", "box"]).await;
    println!("stop on a full disk: exit {code}: {}", err.trim());
    assert_eq!(daemon.managed_count().await, 1, "alpha's container is gone");
    if code != 0 {
        assert!(err.contains("could not be saved"), "{err}");
    }
    disk.free(PROVIDER_DISK / 2).expect("free");
    let (code, _, err) =
        run_peerctl(client.home.path(), &["stop", &alpha_id, "--peer", "box"]).await;
    assert_eq!(
        code, 0,
        "stop again once space is back drops the record: {err}"
    );
}
