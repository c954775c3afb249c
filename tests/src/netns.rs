//! A small emulated internet in Linux network namespaces, for NAT-traversal tests.
//!
//! A [`World`] is a "public internet" (a bridge in its own namespace, subnet `10.x.0.0/24`)
//! where [`World::public_host`]s (a gateway, a relay) and the WAN sides of NAT routers live.
//! [`World::nat_site`] adds a router namespace — WAN on the public bridge, a LAN bridge with
//! `10.x.k.0/24`, IPv4 forwarding, nftables masquerade of the [`NatKind`] asked for, and a
//! forward filter that lets in only replies — and [`Site::host`] puts hosts on its LAN (a
//! laptop, two providers for mDNS). [`World::nat_site_root`] makes the *root* namespace a host
//! of a site instead: a provider must stay there, where Docker publishes container ports on
//! 127.0.0.1. It gets a veth into the router's LAN and one route, to the world's public subnet
//! only; its default route and everything else are untouched.
//!
//! IPv6 is off in every namespace the world creates and loopback is up. Dropping the world
//! (also while unwinding from a panic) kills processes left in its namespaces and deletes the
//! namespaces, the root-side link with its route, and the slot's lock file.
//!
//! ```no_run
//! # async fn demo() {
//! use peercompute_tests::netns::{NatKind, World};
//! let world = World::new();
//! let gw = world.public_host("gw");
//! let home = world.nat_site("home", NatKind::EndpointIndependent);
//! let laptop = home.host("laptop");
//! let out = laptop
//!     .command("ping")
//!     .args(["-c1", "-W2", &gw.ip().to_string()])
//!     .status()
//!     .await
//!     .expect("ping runs");
//! assert!(out.success());
//! # }
//! ```
//!
//! Names and subnets never collide between concurrent test processes: see the `slot` module.

mod host;
pub mod port_mirror;
pub mod sh;
mod slot;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

pub use host::{Host, NsThread};

use slot::Slot;

/// How a site's router maps inner `ip:port`s to its WAN address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Linux's default masquerade: the source port is kept when free, so one inner
    /// `ip:port` shows the same outer port to every destination (a "cone" NAT; filtering is
    /// still address-and-port dependent, as conntrack only lets replies in).
    EndpointIndependent,
    /// `masquerade random,fully-random`: every new flow (each destination) gets its own
    /// random outer port.
    Symmetric,
}

/// An emulated internet; see the module docs. Dropping it deletes everything it created.
#[derive(Debug)]
pub struct World {
    slot: Option<Slot>,
    prefix: String,
    octet: u8,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    names: HashSet<String>,
    next_public: u8,
    next_site: u8,
    root_attached: bool,
}

/// A NAT router and its LAN; add hosts with [`Site::host`].
#[derive(Debug)]
pub struct Site<'w> {
    world: &'w World,
    name: String,
    kind: NatKind,
    router: Host,
    lan: u8,
    next_host: AtomicU8,
}

/// The public bridge's namespace suffix and the bridge's name there.
const PUBLIC_NS: &str = "net";
const PUBLIC_BRIDGE: &str = "br0";

impl World {
    /// Creates the public internet of a new world. Panics, saying what is missing, unless the
    /// process is root and `ip netns` and `nft` work.
    pub fn new() -> World {
        check_prerequisites();
        for e in slot::reclaim_stale() {
            eprintln!("netns world: cleaning up after a crashed run: {e}");
        }
        let slot = Slot::acquire();
        let world = World {
            prefix: slot::prefix(slot.index),
            octet: slot::octet(slot.index),
            slot: Some(slot),
            state: Mutex::new(State {
                next_public: 2,
                next_site: 1,
                ..State::default()
            }),
        };
        let public = world.netns_name(PUBLIC_NS);
        new_netns(&public);
        sh::ip(
            Some(&public),
            &["link", "add", PUBLIC_BRIDGE, "type", "bridge"],
        );
        sh::ip(Some(&public), &["link", "set", PUBLIC_BRIDGE, "up"]);
        world
    }

    /// The prefix of every namespace this world creates (`pcw<nnn>-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The public subnet, `10.x.0.0/24`.
    pub fn public_cidr(&self) -> String {
        format!("10.{}.0.0/24", self.octet)
    }

    /// A host on the public bridge with a public address (where a gateway or relay runs).
    /// `name`: 1–12 of `a-z0-9`, unique in the world.
    pub fn public_host(&self, name: &str) -> Host {
        let ns = self.claim(check_name(name));
        let ip = self.attach_public(&ns, "eth0");
        Host {
            name: name.to_owned(),
            netns: Some(ns),
            ip,
        }
    }

    /// A NAT router named `name` with its WAN on the public bridge and an empty LAN.
    /// `name` as for [`World::public_host`].
    pub fn nat_site(&self, name: &str, kind: NatKind) -> Site<'_> {
        let ns = self.claim(check_name(name));
        let lan = {
            let mut state = self.lock_state();
            let lan = state.next_site;
            state.next_site = lan.checked_add(1).expect("at most 254 sites per world");
            lan
        };
        let wan_ip = self.attach_public(&ns, "wan");
        let lan_ip = format!("10.{}.{lan}.1/24", self.octet);
        sh::ip(Some(&ns), &["link", "add", "lan", "type", "bridge"]);
        sh::ip(Some(&ns), &["addr", "add", &lan_ip, "dev", "lan"]);
        sh::ip(Some(&ns), &["link", "set", "lan", "up"]);
        host::sysctl(&ns, &[("net.ipv4.ip_forward", "1")]);
        sh::nft(&ns, &router_ruleset(kind));
        Site {
            world: self,
            name: name.to_owned(),
            kind,
            router: Host {
                name: name.to_owned(),
                netns: Some(ns),
                ip: wan_ip,
            },
            lan,
            next_host: AtomicU8::new(2),
        }
    }

    /// A NAT site whose LAN host is the root namespace (see the module docs); returns the
    /// site and the root host, whose [`Host::ip`] is its LAN address. One per world.
    pub fn nat_site_root(&self, name: &str, kind: NatKind) -> (Site<'_>, Host) {
        {
            let mut state = self.lock_state();
            assert!(!state.root_attached, "one root site per world");
            state.root_attached = true;
        }
        let site = self.nat_site(name, kind);
        let root = site.attach_root();
        (site, root)
    }

    fn netns_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Records the namespace suffix `suffix` (made of checked names) and creates it.
    fn claim(&self, suffix: &str) -> String {
        let fresh = self.lock_state().names.insert(suffix.to_owned());
        assert!(fresh, "netns world: the name {suffix:?} is taken");
        let ns = self.netns_name(suffix);
        new_netns(&ns);
        ns
    }

    /// Connects `ns` to the public bridge through its interface `ifname`; returns its address.
    fn attach_public(&self, ns: &str, ifname: &str) -> Ipv4Addr {
        let host = {
            let mut state = self.lock_state();
            let host = state.next_public;
            assert!(host < 255, "at most 253 public addresses per world");
            state.next_public += 1;
            host
        };
        let ip = Ipv4Addr::new(10, self.octet, 0, host);
        let public = self.netns_name(PUBLIC_NS);
        let port = format!("p{host}");
        veth(ns, ifname, &public, &port);
        sh::ip(
            Some(&public),
            &["link", "set", &port, "master", PUBLIC_BRIDGE, "up"],
        );
        sh::ip(
            Some(ns),
            &["addr", "add", &format!("{ip}/24"), "dev", ifname],
        );
        sh::ip(Some(ns), &["link", "set", ifname, "up"]);
        ip
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let errors = slot::cleanup(slot.index);
            for e in &errors {
                eprintln!("netns world: cleanup: {e}");
            }
            slot.release();
        }
    }
}

impl Site<'_> {
    /// The site's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The router's NAT behaviour.
    pub fn kind(&self) -> NatKind {
        self.kind
    }

    /// The router; its [`Host::ip`] is the WAN address everything on the LAN is seen as.
    pub fn router(&self) -> &Host {
        &self.router
    }

    /// The router's public (WAN) address.
    pub fn wan_ip(&self) -> Ipv4Addr {
        self.router.ip
    }

    /// The LAN subnet, `10.x.k.0/24`.
    pub fn lan_cidr(&self) -> String {
        format!("10.{}.{}.0/24", self.world.octet, self.lan)
    }

    /// A new host on the LAN, with a private address and its default route via the router;
    /// its namespace is `<prefix><site>-<name>`. `name` as for [`World::public_host`].
    pub fn host(&self, name: &str) -> Host {
        let ns = self
            .world
            .claim(&format!("{}-{}", self.name, check_name(name)));
        let (port, ip) = self.lan_port();
        veth(&ns, "eth0", self.router_ns(), &port);
        self.join_lan(&port);
        sh::ip(
            Some(&ns),
            &["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        sh::ip(Some(&ns), &["link", "set", "eth0", "up"]);
        let gw = self.lan_gateway().to_string();
        sh::ip(Some(&ns), &["route", "add", "default", "via", &gw]);
        Host {
            name: name.to_owned(),
            netns: Some(ns),
            ip,
        }
    }

    /// The root namespace as a LAN host: a veth `pcw<nnn>-root` with a LAN address and a route
    /// to the public subnet only. Deleting the router namespace deletes both.
    fn attach_root(&self) -> Host {
        let slot = self.world.slot.as_ref().expect("a live world has its slot");
        let link = slot::root_link(slot.index);
        let (port, ip) = self.lan_port();
        let router_ns = self.router_ns();
        sh::ip(
            None,
            &[
                "link", "add", "name", &link, "type", "veth", "peer", "name", &port, "netns",
                router_ns,
            ],
        );
        // Before the link comes up, so it never gets an IPv6 link-local address.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6"), "1");
        self.join_lan(&port);
        sh::ip(None, &["addr", "add", &format!("{ip}/24"), "dev", &link]);
        sh::ip(None, &["link", "set", &link, "up"]);
        let gw = self.lan_gateway().to_string();
        let public = self.world.public_cidr();
        sh::ip(None, &["route", "add", &public, "via", &gw, "dev", &link]);
        Host {
            name: "root".to_owned(),
            netns: None,
            ip,
        }
    }

    /// The router's LAN address, every LAN host's gateway (`10.x.k.1`).
    pub fn lan_gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.world.octet, self.lan, 1)
    }

    fn router_ns(&self) -> &str {
        self.router.netns().expect("a router has a namespace")
    }

    /// The next router-side port name and LAN address.
    fn lan_port(&self) -> (String, Ipv4Addr) {
        let n = self.next_host.fetch_add(1, Ordering::Relaxed);
        assert!((2..255).contains(&n), "at most 253 hosts per site");
        (
            format!("h{n}"),
            Ipv4Addr::new(10, self.world.octet, self.lan, n),
        )
    }

    fn join_lan(&self, port: &str) {
        sh::ip(
            Some(self.router_ns()),
            &["link", "set", port, "master", "lan", "up"],
        );
    }
}

/// Router ruleset: masquerade out of `wan`; forward LAN → anywhere and replies, drop the rest.
fn router_ruleset(kind: NatKind) -> String {
    let flags = match kind {
        NatKind::EndpointIndependent => "",
        NatKind::Symmetric => " random,fully-random",
    };
    format!(
        "table ip nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"wan\" masquerade{flags}
    }}
}}
table inet filter {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname \"lan\" accept
    }}
    # Like a home router: unsolicited packets to the router itself from the WAN are dropped.
    # Dropping them before conntrack confirms an entry matters: a confirmed entry for an
    # early hole-punching packet would make the masquerade pick another port for the LAN
    # host's own packets to that peer, and the punch would never meet.
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname \"wan\" ct state new drop
    }}
}}
"
    )
}

/// Deletes what crashed worlds left (namespaces, root-side links) in slots no running process
/// holds; returns what could not be deleted. [`World::new`] does this first.
pub fn reclaim_stale() -> Vec<String> {
    slot::reclaim_stale()
}

/// Returns `name` if it is 1–12 of `a-z0-9` and not reserved; such names never collide with
/// a site host's `<site>-<name>`.
fn check_name(name: &str) -> &str {
    assert!(
        (1..=12).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && name != PUBLIC_NS,
        "netns world: host name {name:?} must be 1–12 of a-z0-9 and not {PUBLIC_NS:?}"
    );
    name
}

/// Creates namespace `ns` with loopback up and IPv6 off.
fn new_netns(ns: &str) {
    sh::run("ip", &["netns", "add", ns]);
    host::sysctl(
        ns,
        &[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ],
    );
    sh::ip(Some(ns), &["link", "set", "lo", "up"]);
}

/// A veth pair: `a_if` in namespace `a`, `b_if` in namespace `b`.
fn veth(a: &str, a_if: &str, b: &str, b_if: &str) {
    sh::run(
        "ip",
        &[
            "link", "add", "name", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns",
            b,
        ],
    );
}

/// Panics with what to do unless we are root and `ip netns` and `nft` work.
fn check_prerequisites() {
    if let Err(e) = prerequisites() {
        panic!("{e}");
    }
}

/// Whether worlds can be made here (root, `ip netns`, `nft`); the error says what is missing.
/// [`World::new`] panics with it; a benchmark can check first and skip instead.
pub fn prerequisites() -> Result<(), String> {
    const HOW: &str = "network-namespace tests need root, iproute2 (`ip netns`) and nftables \
                       (`nft`): run the tests as root (CI does) after scripts/prerequisites";
    if !nix::unistd::geteuid().is_root() {
        return Err(format!("{HOW}; this process is not root"));
    }
    sh::list_netns().map_err(|e| format!("{HOW}; {e}"))?;
    sh::try_run("nft", &["--version"]).map_err(|e| format!("{HOW}; {e}"))?;
    Ok(())
}
