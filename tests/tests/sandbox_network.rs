//! Checklist S1, S2: a container deployed through the provider reaches the internet, but
//! neither the provider's host (its services, on any of its addresses) nor private and
//! link-local networks beyond it (the LAN, 169.254.169.254), except for the DNS port. And
//! deployments cannot reach each other. Without the rules, the same probes connect.
//!
//! Real Docker engine, real nftables, real routing: a network namespace behind a veth plays
//! the world outside the host, with a LAN address, a link-local address (the range of the
//! cloud metadata one) and a public (TEST-NET-3) address, served by busybox httpd. Needs
//! root, as CI runs.

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use peercompute_provider::Limits;
use peercompute_runtime::testsupport::BUSYBOX_PATH;
use peercompute_runtime::{
    EGRESS_TABLE, SANDBOX_BRIDGE, SANDBOX_NETWORK, install_egress_firewall, remove_egress_firewall,
};
use peercompute_tests::netns::sh;
use peercompute_tests::{TEST_PORT, TestClient, TestImage, deploy_world, run_peerctl, within};

/// Port of the web servers outside the container.
const OUTSIDE_PORT: u16 = 18_099;

/// The world outside the host: namespace `ns` on a veth, with its web server. Removed on drop.
struct Outside {
    ns: String,
    servers: Vec<std::process::Child>,
}

impl Outside {
    /// Host side `10.99.N.1` and `203.0.113.1`; the namespace holds `lan_ip()`, the metadata
    /// address and `public_ip()`.
    fn new() -> Self {
        // Leftovers of a run that was killed (their addresses would shadow ours).
        for old in sh::list_netns()
            .expect("ip netns list")
            .iter()
            .filter(|name| name.starts_with("pc-egress-"))
        {
            let _ = sh::try_run("ip", &["netns", "del", old]);
        }
        let n = std::process::id() % 200 + 20;
        let ns = format!("pc-egress-{n}");
        let host_link = format!("pcegr{n}");
        let _ = sh::try_run("ip", &["link", "del", &host_link]);
        sh::ip(None, &["netns", "add", &ns]);
        sh::ip(
            None,
            &[
                "link", "add", &host_link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        for addr in [format!("10.99.{n}.1/24"), "203.0.113.1/24".to_owned()] {
            sh::ip(None, &["addr", "add", &addr, "dev", &host_link]);
        }
        sh::ip(None, &["link", "set", &host_link, "up"]);
        let inside = |args: &[&str]| sh::ip(Some(&ns), args);
        // A link-local address of our own rather than 169.254.169.254 itself: routing that
        // one here would hijack a cloud machine's metadata service while the test runs.
        for addr in [
            format!("10.99.{n}.2/24"),
            format!("169.254.{n}.254/32"),
            "203.0.113.2/24".to_owned(),
        ] {
            inside(&["addr", "add", &addr, "dev", "eth0"]);
        }
        inside(&["link", "set", "eth0", "up"]);
        inside(&["link", "set", "lo", "up"]);
        inside(&["route", "add", "default", "via", &format!("10.99.{n}.1")]);
        sh::ip(
            None,
            &[
                "route",
                "add",
                &format!("169.254.{n}.254/32"),
                "via",
                &format!("10.99.{n}.2"),
                "dev",
                &host_link,
            ],
        );
        let www = std::env::temp_dir().join(format!("pc-egress-www-{n}"));
        std::fs::create_dir_all(&www).expect("www dir");
        std::fs::write(www.join("index.html"), "outside\n").expect("index");
        // The web server, and a second one on the DNS port (TCP 53), which containers may
        // reach anywhere: the engine's resolver asks the host's upstream servers from inside
        // the container.
        let servers = [OUTSIDE_PORT, 53]
            .into_iter()
            .map(|port| {
                Command::new("ip")
                    .args(["netns", "exec", &ns, BUSYBOX_PATH, "httpd", "-f", "-p"])
                    .arg(port.to_string())
                    .arg("-h")
                    .arg(&www)
                    .spawn()
                    .expect("busybox httpd in the namespace")
            })
            .collect();
        Outside { ns, servers }
    }

    fn n(&self) -> &str {
        self.ns.trim_start_matches("pc-egress-")
    }

    fn lan_ip(&self) -> String {
        format!("10.99.{}.2", self.n())
    }

    fn host_ip(&self) -> String {
        format!("10.99.{}.1", self.n())
    }

    fn link_local_ip(&self) -> String {
        format!("169.254.{}.254", self.n())
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = sh::try_run("ip", &["netns", "del", &self.ns]);
    }
}

/// Whether `container` gets an answer from `http://ip:port/` within 3 s.
async fn reaches(container: &str, ip: &str, port: u16) -> bool {
    let url = format!("http://{ip}:{port}/");
    within(
        20,
        "docker exec wget",
        tokio::process::Command::new("docker")
            .args(["exec", container, "busybox", "timeout", "3"])
            .args(["busybox", "wget", "-q", "-O", "/dev/null", &url])
            .output(),
    )
    .await
    .expect("docker exec")
    .status
    .success()
}

/// Deploys the test image as `name` and returns its container id.
async fn deploy(client: &TestClient, image: &TestImage, name: &str) -> String {
    let (code, out, err) = run_peerctl(
        client.home.path(),
        &[
            "deploy",
            &image.tag,
            "--peer",
            "prov",
            "--port",
            &TEST_PORT.to_string(),
            "--name",
            name,
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "deploy {name}: {err}");
    let deployed: serde_json::Value = serde_json::from_str(&out).expect("deploy JSON");
    let id = deployed["id"].as_str().expect("deployment id");
    let out = sh::run(
        "docker",
        &[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=peercompute.deployment={id}"),
        ],
    );
    let container = out.trim().to_owned();
    assert!(!container.is_empty(), "no container for deployment {id}");
    container
}

fn inspect(container: &str, format: &str) -> String {
    sh::run("docker", &["inspect", "-f", format, container])
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_reach_the_internet_but_not_this_host_nor_private_networks() {
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root (nftables, network namespaces), as CI runs");
        return;
    }
    let outside = Outside::new();
    // A web service of the host's, on every address (as sshd or a database would be); it
    // counts who connects.
    let host_service = std::net::TcpListener::bind(("0.0.0.0", 0)).expect("host service");
    let host_port = host_service.local_addr().expect("addr").port();
    let knocks = Arc::new(AtomicUsize::new(0));
    let counted = knocks.clone();
    std::thread::spawn(move || {
        for mut conn in host_service.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhost\n");
        }
    });

    // The daemon installs the egress firewall as it starts (the default, as root): take away
    // any left by an earlier run first.
    remove_egress_firewall().await.expect("remove old rules");
    let (_gw, daemon, image) = deploy_world(Limits::default()).await;
    let client = TestClient::new();
    daemon.trust(&client.peer_id());
    client.trust(&daemon);
    let table = sh::run("nft", &["list", "table", "inet", EGRESS_TABLE]);
    assert!(
        table.contains(SANDBOX_BRIDGE),
        "the daemon installed the egress rules"
    );

    let first = deploy(&client, &image, "egress").await;
    let second = deploy(&client, &image, "neighbour").await;
    let network = format!("{{{{index .NetworkSettings.Networks \"{SANDBOX_NETWORK}\"}}}}");
    assert_ne!(
        inspect(&first, &network),
        "<no value>",
        "on the sandbox network"
    );
    let gateway_ip = inspect(
        &first,
        &format!("{{{{(index .NetworkSettings.Networks \"{SANDBOX_NETWORK}\").Gateway}}}}"),
    );
    let neighbour_ip = inspect(
        &second,
        &format!("{{{{(index .NetworkSettings.Networks \"{SANDBOX_NETWORK}\").IPAddress}}}}"),
    );

    // The positive control: the path out works, to a public address behind the same veth
    // and server as the private ones.
    assert!(
        reaches(&first, "203.0.113.2", OUTSIDE_PORT).await,
        "a public address is reachable (masqueraded through the host)"
    );
    assert!(
        reaches(&first, &outside.lan_ip(), 53).await,
        "the DNS port on the LAN is reachable (the host's resolver may be there)"
    );
    let blocked = [
        ("the LAN", outside.lan_ip(), OUTSIDE_PORT),
        (
            "a link-local address (as the cloud metadata one)",
            outside.link_local_ip(),
            OUTSIDE_PORT,
        ),
        (
            "the host on its bridge address",
            gateway_ip.clone(),
            host_port,
        ),
        ("the host on its LAN address", outside.host_ip(), host_port),
    ];
    for (what, ip, port) in &blocked {
        assert!(
            !reaches(&first, ip, *port).await,
            "{what} ({ip}:{port}) is reachable"
        );
    }
    assert!(
        !reaches(&first, &neighbour_ip, TEST_PORT).await,
        "another deployment is reachable"
    );
    // Nothing even opened a connection to the host's service.
    assert_eq!(
        knocks.load(Ordering::SeqCst),
        0,
        "connections to the host's service"
    );
    // Inbound still works: the provider reaches the container through its published port.
    let addr = inspect(
        &first,
        &format!("{{{{(index (index .NetworkSettings.Ports \"{TEST_PORT}/tcp\") 0).HostPort}}}}"),
    );
    let body = reqwest::get(format!("http://127.0.0.1:{addr}/"))
        .await
        .expect("the published port answers")
        .text()
        .await
        .expect("body");
    assert_eq!(body, "hello from the container\n");

    // It was these rules that stopped them: without them every blocked probe connects. Then
    // they go back (the next deploy would put them back too).
    remove_egress_firewall().await.expect("remove the rules");
    for (what, ip, port) in &blocked {
        assert!(
            reaches(&first, ip, *port).await,
            "{what} ({ip}:{port}) is unreachable even without the rules: the probe proves nothing"
        );
    }
    install_egress_firewall()
        .await
        .expect("reinstall the rules");

    drop(daemon);
    drop(image);
    drop(outside);
}
