//! Devices granted by the machine's owner, end to end with the real daemon and Docker engine.
//! Two fake nodes made with `mknod` stand for hardware: `arm` (the numbers of `/dev/zero`,
//! 1:5) is granted read-write to one client, `cam` (those of `/dev/null`, 1:3) is on the host
//! but granted to nobody. A deploy asking for `arm` gets exactly that node (16 zero bytes read,
//! a write accepted) with no capability; `cam` is absent inside. Both have numbers Docker's
//! default device rules allow, so a third node, `motor` (240:7, a major with no driver and no
//! default rule), granted read-only, shows the cgroup rule itself: opening it for reading
//! passes the cgroup (the kernel then finds no driver), for writing it is refused. Refused before any container
//! is created, each with the message saying who can change it: an ungranted name (also `cam`,
//! present but granted to nobody), a trusted peer `arm` is not granted to, a GPU grant on an
//! engine without the NVIDIA runtime, and a raw path (signed by hand: peerctl refuses it
//! itself). One daemon serves every case (CI time).

use ed25519_dalek::Signer;
use peercompute_provider::Limits;
use peercompute_provider::devices::DeviceGrant;
use peercompute_runtime::DockerRuntime;
use peercompute_runtime::testsupport::{Cleanup, FakeDevice, ScratchImage, busybox, unique_name};
use peercompute_tests::fleet_rig::gateway_spec;
use peercompute_tests::{
    Alpn, GatewayOptions, TEST_PORT, TestClient, TestDaemon, TestGateway, answer, https_client,
};
use peercompute_tunnel_proto::{
    ControlPlaneMessage, DeployRequest, Nonce, Request, SignedEnvelope, signing_message,
};
use peerctl::{Client, Kind};

/// A CGI script: its body's lines after the header.
fn cgi(body: &str) -> String {
    format!("#!/bin/busybox sh\necho 'Content-Type: text/plain'\necho\n{body}\n")
}

/// A web image whose CGI scripts look at the devices from inside: `/cgi-bin/arm` reads 16
/// bytes of `/dev/arm` (hex), says whether it is a character device and writes to it (the
/// fake nodes have numbers Docker's default device rules allow, so `r` against `rw` cannot be
/// told apart with them: `/cgi-bin/motor` does, on a node with an unassigned major), `/cgi-bin/cam` says whether `/dev/cam` exists
/// and lists `/dev`, `/cgi-bin/status` prints the process's status (capabilities).
async fn device_image(runtime: &DockerRuntime, cleanup: &Cleanup) -> String {
    let tag = format!("{}:1", unique_name("pc-e2e-devices"));
    cleanup.image(&tag);
    ScratchImage::new(&tag)
        .file("/bin/busybox", busybox().expect("busybox"), 0o755)
        .file("/www/index.html", "devices\n", 0o644)
        .file(
            "/www/cgi-bin/arm",
            cgi("busybox head -c 16 /dev/arm | busybox od -An -tx1\n[ -c /dev/arm ] && echo arm-is-char\necho x > /dev/arm && echo write-ok"),
            0o755,
        )
        .file(
            "/www/cgi-bin/cam",
            cgi("if [ -e /dev/cam ]; then echo cam-present; else echo cam-absent; fi\nbusybox ls /dev"),
            0o755,
        )
        .file(
            "/www/cgi-bin/motor",
            cgi("busybox cat /dev/motor 2>&1\n( echo x > /dev/motor ) 2>&1"),
            0o755,
        )
        .file("/www/cgi-bin/status", cgi("busybox cat /proc/self/status"), 0o755)
        .cmd(["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"])
        .env("PATH", "/bin")
        .expose(TEST_PORT)
        .load(runtime)
        .await
        .expect("load the device image");
    tag
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn deploy(image: &str, name: &str, devices: &[&str]) -> Request {
    let mut req = DeployRequest::new(image.to_owned(), TEST_PORT);
    req.name = Some(name.to_owned());
    req.devices = devices.iter().map(|d| (*d).to_owned()).collect();
    Request::Deploy(req)
}

#[tokio::test]
async fn granted_devices_are_mapped_and_everything_else_is_refused_before_a_container_exists() {
    let arm = FakeDevice::char("arm", 1, 5)
        .unwrap_or_else(|e| panic!("this test makes device nodes (root, CAP_MKNOD): {e}"));
    let cam = FakeDevice::char("cam", 1, 3).unwrap_or_else(|e| panic!("{e}"));
    // 240:7 is a major reserved for local use: no driver, and not in Docker's default rules.
    let motor = FakeDevice::char("motor", 240, 7).unwrap_or_else(|e| panic!("{e}"));
    let runtime = DockerRuntime::connect().await.expect("a Docker engine");
    let cleanup = Cleanup::new();
    let image = device_image(&runtime, &cleanup).await;

    let client = TestClient::new();
    let stranger = TestClient::new();
    let (home, provider) = TestDaemon::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![provider],
        ..GatewayOptions::default()
    })
    .await;
    let grants: Vec<DeviceGrant> = [
        format!(
            "name=arm,path={},container_path=/dev/arm,access=rw,peers={}",
            arm.path().display(),
            client.peer_id()
        ),
        format!(
            "name=motor,path={},container_path=/dev/motor,access=r,peers={}",
            motor.path().display(),
            client.peer_id()
        ),
        format!("name=gpu0,kind=gpu,count=1,peers={}", client.peer_id()),
    ]
    .iter()
    .map(|g| g.parse().expect("a grant"))
    .collect();
    let daemon = TestDaemon::start_custom(home, gateway_spec(&gw), Limits::default(), |c| {
        c.devices = grants
    })
    .await;
    for c in [&client, &stranger] {
        c.trust(&daemon);
        daemon.trust(&c.peer_id());
    }
    let conn = client.connect(&daemon).await.expect("reachable");
    let other = stranger.connect(&daemon).await.expect("reachable");

    // Refused before any container exists, each saying who can change it.
    let me = client.peer_id().to_string();
    let them = stranger.peer_id().to_string();
    let refusals: [(&Client, Request, &str); 4] = [
        (
            &conn,
            deploy(&image, "leg", &["leg"]),
            "this provider grants no device named `leg`. Only its owner can grant one: a [[devices]] entry in its config (or --grant-device), then a restart",
        ),
        (
            &conn,
            deploy(&image, "cam", &["cam"]),
            "grants no device named `cam`",
        ),
        (
            &other,
            deploy(&image, "arm", &["arm"]),
            &format!(
                "device `arm` is not granted to you ({them}): the provider's owner adds your peer id to `peers` of its [[devices]] entry `arm`"
            ),
        ),
        (
            &conn,
            deploy(&image, "gpu", &["gpu0"]),
            "device `gpu0` is a GPU and this provider has no NVIDIA container runtime",
        ),
    ];
    for (who, request, expected) in &refusals {
        let before = daemon.managed_count().await;
        let err = answer(who, request)
            .await
            .expect_err("the request is refused");
        if !expected.contains("GPU") {
            assert_eq!(err.kind, Kind::NotGranted, "{}", err.message);
        }
        assert!(
            err.message.contains(expected),
            "{request:?}: {} should say {expected}",
            err.message
        );
        assert!(
            !err.message.contains(&arm.path().display().to_string()),
            "a refusal does not show the owner's paths: {}",
            err.message
        );
        if std::ptr::eq(*who, &other) {
            assert!(
                !err.message.contains(&me),
                "a refusal never names the grant's holder: {}",
                err.message
            );
        }
        assert_eq!(
            daemon.managed_count().await,
            before,
            "{request:?}: no container was created"
        );
    }
    // A raw path, signed by hand (peerctl refuses it before signing): the provider refuses it
    // too, before any container exists.
    let before = daemon.managed_count().await;
    let json =
        format!(r#"{{"image":"{image}","port":{TEST_PORT},"name":"kvm","devices":["/dev/kvm"]}}"#);
    let mut payload = vec![0x10];
    payload.extend_from_slice(&u32::try_from(json.len()).expect("small").to_be_bytes());
    payload.extend_from_slice(json.as_bytes());
    let (nonce, timestamp) = (Nonce::random(), now());
    let signature = client
        .identity
        .signing_key()
        .sign(&signing_message(
            &daemon.peer_id,
            &nonce,
            timestamp,
            &payload,
        ))
        .to_bytes();
    let envelope = SignedEnvelope {
        provider: daemon.peer_id,
        nonce,
        timestamp,
        payload,
        signature,
    };
    let mut framed = conn.send_envelope(envelope).await.expect("send");
    let err = Client::next(&mut framed)
        .await
        .expect_err("a path is refused");
    assert_eq!(err.kind, Kind::BadRequest, "{}", err.message);
    assert!(
        err.message.contains("`/dev/kvm` is not a device name: ask for a device by the name the provider's owner granted"),
        "{}",
        err.message
    );
    assert_eq!(
        daemon.managed_count().await,
        before,
        "no container for a path"
    );

    // The granted device, inside: zeros read, a write accepted, no capability.
    match answer(&conn, &deploy(&image, "robot", &["arm", "motor"])).await {
        Ok(ControlPlaneMessage::DeployResponse(_)) => {}
        other => panic!("deploy with arm: {other:?}"),
    }
    let web = https_client(&gw, &["robot"], Alpn::H1);
    let get = |path: &str| {
        let (web, url) = (web.clone(), gw.url("robot", path));
        async move {
            web.get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"))
                .text()
                .await
                .expect("body")
        }
    };
    let read = get("/cgi-bin/arm").await;
    assert!(
        read.contains(&" 00".repeat(16))
            && read.contains("arm-is-char")
            && read.contains("write-ok"),
        "/dev/arm is the granted node: it reads as /dev/zero and takes writes: {read}"
    );
    // The cgroup rule is for that node and that access only: motor (granted `r`) may be
    // opened for reading (the kernel then finds no driver: ENXIO), not for writing (EPERM).
    let motor_seen = get("/cgi-bin/motor").await;
    assert!(
        motor_seen.contains("No such device or address")
            && motor_seen.contains("can't create /dev/motor: Operation not permitted"),
        "read allowed, write refused by the device cgroup: {motor_seen}"
    );
    let seen = get("/cgi-bin/cam").await;
    assert!(
        seen.contains("cam-absent") && !seen.lines().any(|l| l.trim() == "cam"),
        "the ungranted node is not in the container: {seen}"
    );
    assert!(seen.lines().any(|l| l.trim() == "arm"), "{seen}");
    let status = get("/cgi-bin/status").await;
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    drop(cam);
}
