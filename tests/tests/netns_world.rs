//! The namespace world behaves like the internet it emulates: NAT hides LANs behind their
//! router's WAN address, nothing gets in unasked, endpoint-independent and symmetric NATs map
//! ports as their names say, the root namespace can sit behind a NAT, and dropping a world
//! (or crashing with one) leaves nothing behind. Needs root, `ip` and `nft`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use peercompute_tests::netns::{self, Host, NatKind, World};
use peercompute_tests::within;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::net::UdpSocket;
use tokio::process::{Child, ChildStdout};

const PROBE: &str = env!("CARGO_BIN_EXE_netns-probe");

/// A long-running probe (`tcp-listen`, `udp-echo`) and the port it bound.
struct Listening {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    addr: SocketAddr,
}

impl Listening {
    async fn start(host: &Host, mode: &str) -> Listening {
        let mut child = host
            .command(PROBE)
            .args([mode, "0.0.0.0:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn netns-probe");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let line = within(10, "the probe to listen", lines.next_line())
            .await
            .expect("probe stdout")
            .expect("probe printed its address");
        let bound: SocketAddr = line
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected probe line {line:?}"));
        Listening {
            _child: child,
            lines,
            addr: SocketAddr::new(host.ip().into(), bound.port()),
        }
    }

    async fn next_line(&mut self) -> String {
        within(5, "a probe event", self.lines.next_line())
            .await
            .expect("probe stdout")
            .expect("probe still running")
    }
}

/// Runs a one-shot probe in `host`; returns its exit code and stdout.
async fn probe(host: &Host, args: &[&str]) -> (i32, String) {
    let out = within(
        15,
        "a one-shot probe",
        host.command(PROBE).args(args).output(),
    )
    .await
    .expect("run netns-probe");
    let code = out.status.code().expect("probe exited, not killed");
    (code, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `tcp-connect`: the address the listener saw and the local one, or the exit code.
async fn tcp_connect(host: &Host, to: SocketAddr) -> Result<(SocketAddr, SocketAddr), i32> {
    let (code, out) = probe(host, &["tcp-connect", &to.to_string(), "1500"]).await;
    if code != 0 {
        return Err(code);
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    match words.as_slice() {
        ["observed", seen, "local", local] => Ok((
            seen.parse().expect("observed address"),
            local.parse().expect("local address"),
        )),
        _ => panic!("unexpected tcp-connect output {out:?}"),
    }
}

/// `udp-send` from one socket to every target; the source address each echo saw, in order.
async fn udp_observed(host: &Host, targets: &[SocketAddr]) -> Vec<SocketAddr> {
    let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
    let mut args = vec!["udp-send", "0.0.0.0:0", "2000"];
    args.extend(targets.iter().map(String::as_str));
    let (code, out) = probe(host, &args).await;
    assert_eq!(code, 0, "udp-send failed: {out}");
    out.lines()
        .map(
            |l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["observed", _, seen] => seen.parse().expect("observed address"),
                _ => panic!("unexpected udp-send line {l:?}"),
            },
        )
        .collect()
}

fn namespaces_with(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

fn root_routes(cidr: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["route", "show", cidr])
        .output()
        .expect("ip route show");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn root_link_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", "dev", name])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("ip link show")
        .success()
}

#[tokio::test]
async fn lan_host_reaches_public_host_as_router_wan_address() {
    let world = World::new();
    let gw = world.public_host("gw");
    let home = world.nat_site("home", NatKind::EndpointIndependent);
    let laptop = home.host("laptop");
    let mut listener = Listening::start(&gw, "tcp-listen").await;

    let (seen, local) = tcp_connect(&laptop, listener.addr).await.expect("connects");
    assert_eq!(local.ip(), laptop.ip());
    assert_eq!(
        seen.ip(),
        home.wan_ip(),
        "the gateway sees the router's WAN address"
    );
    assert_eq!(
        seen.port(),
        local.port(),
        "masquerade keeps a free source port"
    );
    assert_eq!(listener.next_line().await, format!("accepted {seen}"));
    for host in [&gw, &laptop, home.router()] {
        assert_eq!(
            host.run("ip", &["-6", "addr"]),
            "",
            "no IPv6 in {}",
            host.name()
        );
    }
}

#[tokio::test]
async fn public_host_cannot_reach_lan_host() {
    let world = World::new();
    let gw = world.public_host("gw");
    let home = world.nat_site("home", NatKind::EndpointIndependent);
    let laptop = home.host("laptop");
    let listener = Listening::start(&laptop, "tcp-listen").await;

    // The internet has no route to a private LAN: fails at once.
    assert_eq!(tcp_connect(&gw, listener.addr).await, Err(1));
    // Even a neighbour routing the LAN via the router's WAN is dropped by its forward filter.
    let wan = home.wan_ip().to_string();
    gw.run("ip", &["route", "add", &home.lan_cidr(), "via", &wan]);
    assert_eq!(
        tcp_connect(&gw, listener.addr).await,
        Err(2),
        "dropped: times out"
    );
    // While the LAN host still gets out.
    assert!(
        tcp_connect(&laptop, Listening::start(&gw, "tcp-listen").await.addr)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn endpoint_independent_nat_shows_one_port_to_every_destination() {
    let world = World::new();
    let (a, b) = (world.public_host("a"), world.public_host("b"));
    let home = world.nat_site("home", NatKind::EndpointIndependent);
    let laptop = home.host("laptop");
    let (ea, eb) = (
        Listening::start(&a, "udp-echo").await,
        Listening::start(&b, "udp-echo").await,
    );

    let seen = udp_observed(&laptop, &[ea.addr, eb.addr]).await;
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.ip() == home.wan_ip()), "{seen:?}");
    assert_eq!(
        seen[0].port(),
        seen[1].port(),
        "one mapping for both destinations"
    );
}

#[tokio::test]
async fn symmetric_nat_shows_each_destination_its_own_port() {
    let world = World::new();
    let (a, b) = (world.public_host("a"), world.public_host("b"));
    let office = world.nat_site("office", NatKind::Symmetric);
    let laptop = office.host("laptop");
    let (ea, eb) = (
        Listening::start(&a, "udp-echo").await,
        Listening::start(&b, "udp-echo").await,
    );

    let seen = udp_observed(&laptop, &[ea.addr, eb.addr]).await;
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.ip() == office.wan_ip()), "{seen:?}");
    assert_ne!(seen[0].port(), seen[1].port(), "a mapping per destination");
}

/// Binds a UDP socket inside `host` (sockets keep their namespace) for use on this runtime.
fn udp_in(host: &Host) -> UdpSocket {
    let socket = host
        .enter(|| std::net::UdpSocket::bind("0.0.0.0:0"))
        .expect("bind UDP");
    socket.set_nonblocking(true).expect("nonblocking");
    UdpSocket::from_std(socket).expect("tokio socket")
}

async fn recv(socket: &UdpSocket, wait: Duration) -> Option<(String, SocketAddr)> {
    let mut buf = [0u8; 1500];
    let (n, from) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .expect("recv_from");
    Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
}

#[tokio::test]
async fn nat_lets_in_replies_but_not_unsolicited_packets() {
    let world = World::new();
    let (gw, other) = (world.public_host("gw"), world.public_host("other"));
    let home = world.nat_site("home", NatKind::EndpointIndependent);
    let laptop = home.host("laptop");
    let (inside, server, server2, stranger) =
        (udp_in(&laptop), udp_in(&gw), udp_in(&gw), udp_in(&other));
    let port = |s: &UdpSocket| s.local_addr().expect("local addr").port();
    let server_addr = SocketAddr::new(gw.ip().into(), port(&server));

    inside.send_to(b"hello", server_addr).await.expect("send");
    let (text, mapped) = recv(&server, Duration::from_secs(3))
        .await
        .expect("reaches gw");
    assert_eq!(
        (text.as_str(), mapped.ip()),
        ("hello", home.wan_ip().into())
    );

    // Unsolicited: another host, and the same host from another port, to the mapped port.
    stranger.send_to(b"stranger", mapped).await.expect("send");
    server2.send_to(b"other port", mapped).await.expect("send");
    // The reply to the mapping arrives.
    server.send_to(b"reply", mapped).await.expect("send");
    let got = recv(&inside, Duration::from_secs(3)).await;
    assert_eq!(got, Some(("reply".to_owned(), server_addr)));
    assert_eq!(recv(&inside, Duration::from_millis(500)).await, None);
}

#[tokio::test]
async fn root_site_reaches_public_hosts_through_the_nat_and_leaves_no_route() {
    let world = World::new();
    let public = world.public_cidr();
    let link = format!("{}root", world.prefix());
    let gw = world.public_host("gw");
    assert_eq!(root_routes(&public), "", "no route before the root site");

    let (site, root) = world.nat_site_root("prov", NatKind::EndpointIndependent);
    assert_eq!(root.netns(), None);
    let via = site.lan_gateway();
    assert_eq!(
        root_routes(&public),
        format!("{public} via {via} dev {link}")
    );

    // This very process (the root namespace) connects through the NAT.
    let listener = Listening::start(&gw, "tcp-listen").await;
    let mut stream = within(5, "connect", tokio::net::TcpStream::connect(listener.addr))
        .await
        .expect("root reaches the gateway");
    let mut seen = String::new();
    within(5, "the observed address", stream.read_to_string(&mut seen))
        .await
        .expect("read");
    let seen: SocketAddr = seen.trim().parse().expect("address");
    assert_eq!(seen.ip(), site.wan_ip());
    // So does a command run on the root host; and the public side cannot get back in.
    let (seen, _) = tcp_connect(&root, listener.addr).await.expect("connects");
    assert_eq!(seen.ip(), site.wan_ip());
    let inside = SocketAddr::new(root.ip().into(), 1);
    assert_eq!(tcp_connect(&gw, inside).await, Err(1));

    drop(site);
    drop(world);
    assert_eq!(root_routes(&public), "", "the route went with the world");
    assert!(
        !root_link_exists(&link),
        "the root link went with the world"
    );
}

#[tokio::test]
async fn hosts_on_one_lan_reach_each_other_directly() {
    let world = World::new();
    let home = world.nat_site("home", NatKind::Symmetric);
    let (a, b) = (home.host("a"), home.host("b"));
    let listener = Listening::start(&b, "tcp-listen").await;

    let (seen, _) = tcp_connect(&a, listener.addr).await.expect("connects");
    assert_eq!(seen.ip(), a.ip(), "no NAT inside the LAN");
    let (seen, _) = tcp_connect(&b, Listening::start(&a, "tcp-listen").await.addr)
        .await
        .expect("connects");
    assert_eq!(seen.ip(), b.ip());
}

#[tokio::test]
async fn spawn_thread_runs_a_future_inside_the_namespace() {
    let world = World::new();
    let gw = world.public_host("gw");
    let home = world.nat_site("home", NatKind::EndpointIndependent);
    let laptop = home.host("laptop");
    let listener = Listening::start(&gw, "tcp-listen").await;

    let (ip, to) = (laptop.ip(), listener.addr);
    let node = laptop.spawn_thread(move || async move {
        // The LAN address exists only inside the laptop's namespace.
        let own = tokio::net::TcpListener::bind((ip, 0)).await?;
        let mut stream = tokio::net::TcpStream::connect(to).await?;
        let mut seen = String::new();
        stream.read_to_string(&mut seen).await?;
        std::io::Result::Ok((own.local_addr()?, seen))
    });
    let (own, seen) = within(10, "the namespaced thread", node.join())
        .await
        .expect("works inside the namespace");
    assert_eq!(own.ip(), ip);
    let seen: SocketAddr = seen.trim().parse().expect("address");
    assert_eq!(seen.ip(), home.wan_ip());
    assert!(
        tokio::net::TcpListener::bind((ip, 0)).await.is_err(),
        "not in root"
    );
}

#[tokio::test]
async fn drop_deletes_every_namespace_even_when_unwinding() {
    let world = World::new();
    let prefix = world.prefix().to_owned();
    let home = world.nat_site("home", NatKind::Symmetric);
    home.host("laptop");
    world.public_host("gw");
    assert_eq!(
        namespaces_with(&prefix).len(),
        4,
        "net, home, home-laptop, gw"
    );
    drop(home);
    drop(world);
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());

    let prefix = std::panic::catch_unwind(|| {
        let world = World::new();
        let _site = world.nat_site_root("prov", NatKind::EndpointIndependent);
        panic!("{}", world.prefix());
    })
    .expect_err("panicked")
    .downcast::<String>()
    .expect("the prefix");
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());
    assert!(!root_link_exists(&format!("{prefix}root")));
}

/// Not a test by itself: the world a killed process leaves, for the test below.
#[tokio::test]
#[ignore = "run by crashed_world_is_reclaimed"]
async fn world_left_by_a_crash() {
    if std::env::var_os("NETNS_CRASH_CHILD").is_none() {
        return;
    }
    let world = World::new();
    world.public_host("gw");
    let _site = world.nat_site_root("prov", NatKind::EndpointIndependent);
    println!("prefix {}", world.prefix());
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn crashed_world_is_reclaimed() {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "world_left_by_a_crash",
            "--ignored",
            "--nocapture",
        ])
        .env("NETNS_CRASH_CHILD", "1")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the test binary");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let prefix = loop {
        let line = within(20, "the child's world", lines.next_line())
            .await
            .expect("child stdout")
            .expect("child printed its prefix");
        if let Some(p) = line.strip_prefix("prefix ") {
            break p.to_owned();
        }
    };
    assert_eq!(namespaces_with(&prefix).len(), 3, "net, gw, prov");
    assert!(root_link_exists(&format!("{prefix}root")));

    within(10, "kill the child", child.kill())
        .await
        .expect("kill");
    assert_eq!(
        netns::reclaim_stale(),
        Vec::<String>::new(),
        "reclaim errors"
    );
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());
    assert!(!root_link_exists(&format!("{prefix}root")));
}
