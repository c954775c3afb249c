//! B7 (issue 17): a provider the gateway admits but that is hostile. One gateway, one honest
//! provider whose visitors send an open-loop 50 GET/s throughout, and for each misbehaviour a
//! fresh hostile key (`tests/src/hostile_provider.rs`) whose name is visited at 20 GET/s.
//!
//! Per behaviour: the test process's resident memory gained (gateway, clients and the hostile
//! client together: an upper bound of the gateway's), the honest visitors' p99 against a
//! baseline taken in the same run, what the hostile name's visitors got and how fast, and how
//! the hostile tunnel ended. Everything is measured first and asserted at the end, after the
//! table is printed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peercompute_identity::Identity;
use peercompute_tests::hostile_provider::{Behaviour, HostileProvider};
use peercompute_tests::open_loop::{Visit, p99, rss_kib, rss_peak, visit, visit_loop};
use peercompute_tests::{
    Alpn, Backend, GatewayOptions, TestGateway, TestProvider, https_client, within,
};
use peercompute_tunnel_proto::ControlMessage;

/// The gateway's `upstream_timeout`: a head not begun by then is a 504.
const UPSTREAM: Duration = Duration::from_secs(3);
/// The gateway's wait for a stream toward the provider (`OPEN_STREAM_TIMEOUT`) before a 502.
const OPEN_STREAM: Duration = Duration::from_secs(5);
/// Slack for a busy 2-core machine on every time bound.
const SLACK: Duration = Duration::from_millis(2500);
/// Attack length per behaviour, and the honest baseline's.
const ATTACK: Duration = Duration::from_secs(3);
const BASELINE: Duration = Duration::from_secs(4);
/// `max_streams_per_tunnel` and `max_owned_names_per_provider` of this gateway (small, so the
/// caps are reached in seconds; the defaults are 1024 and 256).
const STREAM_CAP: usize = 64;
const OWNED_CAP: usize = 50;
/// Most the test process may grow during one behaviour.
const RSS_BOUND_MIB: f64 = 48.0;

/// The statuses a visitor of the hostile name may get under `behaviour`, and the longest each
/// may take.
fn allowed(behaviour: Behaviour, status: u16) -> Option<Duration> {
    match (behaviour, status) {
        (Behaviour::EndlessBody, 200) => Some(UPSTREAM + SLACK),
        (Behaviour::EndlessBody, _) => None,
        (_, 504) => Some(UPSTREAM + SLACK),
        (_, 502) => Some(OPEN_STREAM + SLACK),
        _ => None,
    }
}

/// `peercompute_gateway_streams_open` from the admin listener.
async fn streams_open(gw: &TestGateway) -> u64 {
    let metrics = gw.admin_get("/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("peercompute_gateway_streams_open "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

/// Names `peer` owns in the gateway's `names.json`.
fn names_owned(gw: &TestGateway, peer: &str) -> usize {
    let text = std::fs::read_to_string(gw.state.path().join("names.json")).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    json["owners"].as_object().map_or(0, |o| {
        o.values().filter(|v| v.as_str() == Some(peer)).count()
    })
}

/// What one behaviour did and met.
#[derive(Debug)]
struct Row {
    behaviour: Behaviour,
    /// Streams it opened toward the gateway, or the gateway opened toward it.
    streams: String,
    rss_delta_mib: f64,
    good_p99: Duration,
    hostile: BTreeMap<String, (usize, Duration)>,
    end: String,
    streams_left: u64,
}

struct Rig {
    gw: TestGateway,
    allow_file: std::path::PathBuf,
    allowed: Mutex<Vec<String>>,
    good_visits: tokio::task::JoinHandle<Vec<Visit>>,
    good_until: Arc<Mutex<Option<Instant>>>,
    problems: Mutex<Vec<String>>,
}

impl Rig {
    fn problem(&self, text: String) {
        self.problems.lock().expect("problems").push(text);
    }

    fn allow(&self, peers: Vec<String>) {
        *self.allowed.lock().expect("allowed") = peers.clone();
        std::fs::write(&self.allow_file, peers.join("\n") + "\n").expect("write allow file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_provider_is_contained_and_other_providers_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let allow_file = dir.path().join("allowed");
    let good = TestProvider::identity();
    let hostile: Vec<Identity> = Behaviour::ALL
        .iter()
        .map(|_| TestProvider::identity())
        .collect();
    let mut peers = vec![good.peer_id().to_string()];
    peers.extend(hostile.iter().map(|i| i.peer_id().to_string()));
    std::fs::write(&allow_file, peers.join("\n") + "\n").expect("write allow file");
    let gw = TestGateway::start(GatewayOptions {
        allow_file: Some(allow_file.clone()),
        upstream_timeout: UPSTREAM,
        max_connections: 4000,
        max_streams_per_tunnel: STREAM_CAP,
        max_owned_names_per_provider: OWNED_CAP,
        ..GatewayOptions::default()
    })
    .await;
    let backend = Backend::start().await;
    let provider = TestProvider::start(good, &gw);
    provider
        .register("good", backend.addr)
        .await
        .expect("register the honest app");
    let session = provider.registered(1, 1).await;
    let good_client = https_client(&gw, &["good"], Alpn::H1);
    // Warm the pool and the code paths before measuring.
    for _ in 0..20 {
        let r = good_client.get(gw.url("good", "/ok")).send().await;
        assert_eq!(r.expect("warm-up GET").status(), 200);
    }
    let good_until = Arc::new(Mutex::new(None));
    let good_visits = visit_loop(
        good_client,
        gw.url("good", "/ok"),
        Duration::from_millis(20),
        good_until.clone(),
        true,
    );
    let rig = Rig {
        gw,
        allow_file,
        allowed: Mutex::new(peers),
        good_visits,
        good_until,
        problems: Mutex::default(),
    };
    let base_from = Instant::now();
    tokio::time::sleep(BASELINE).await;
    let base_to = Instant::now();

    let mut rows = Vec::new();
    let mut windows = Vec::new();
    for (i, behaviour) in Behaviour::ALL.iter().enumerate() {
        let from = Instant::now();
        let row = within(
            60,
            "one hostile behaviour",
            attack(&rig, *behaviour, &hostile[i], i),
        )
        .await;
        windows.push((from, Instant::now()));
        rows.push(row);
    }

    *rig.good_until.lock().expect("until") = Some(Instant::now());
    let good = within(30, "the honest visitors' answers", rig.good_visits)
        .await
        .expect("good visits");
    let (base, base_n) = p99(&good, base_from, base_to);
    for (row, (from, to)) in rows.iter_mut().zip(&windows) {
        row.good_p99 = p99(&good, *from, *to).0;
    }
    let failed: Vec<_> = good
        .iter()
        .filter(|v| !matches!(v.outcome, Ok((200, _))))
        .collect();
    let mut problems = rig.problems.into_inner().expect("problems");

    println!(
        "B7: honest baseline p99 {:.1} ms over {base_n} GETs at 50/s; upstream_timeout {UPSTREAM:?}, \
         max_streams_per_tunnel {STREAM_CAP}, max_owned_names_per_provider {OWNED_CAP}",
        ms(base)
    );
    println!(
        "{:<17} | {:>13} | {:>9} | {:>19} | {:<30} | {:>6} | end",
        "behaviour",
        "streams",
        "RSS Δ MiB",
        "good p99 ms (×base)",
        "hostile visitors: status n max",
        "left"
    );
    for row in &rows {
        let ratio = row.good_p99.as_secs_f64() / base.as_secs_f64().max(1e-6);
        let hostile: Vec<String> = row
            .hostile
            .iter()
            .map(|(s, (n, max))| format!("{s}×{n} ≤{:.1}s", max.as_secs_f64()))
            .collect();
        println!(
            "{:<17} | {:>13} | {:>9.1} | {:>10.1} ({ratio:>4.2}×) | {:<30} | {:>6} | {}",
            format!("{:?}", row.behaviour),
            row.streams,
            row.rss_delta_mib,
            ms(row.good_p99),
            hostile.join(" "),
            row.streams_left,
            row.end
        );
        // CI-safe bound on a shared 2-core machine; the 20 % is read off the table.
        let bound = (base * 3).max(base + Duration::from_millis(150));
        if row.good_p99 > bound {
            problems.push(format!(
                "{:?}: honest p99 {:?} over {bound:?} (baseline {base:?})",
                row.behaviour, row.good_p99
            ));
        }
        if row.rss_delta_mib > RSS_BOUND_MIB {
            problems.push(format!(
                "{:?}: RSS grew {:.1} MiB (bound {RSS_BOUND_MIB})",
                row.behaviour, row.rss_delta_mib
            ));
        }
    }
    if !failed.is_empty() {
        problems.push(format!(
            "{} of {} honest GETs failed, first: {:?}",
            failed.len(),
            good.len(),
            failed[0]
        ));
    }
    let now = provider.handle.status();
    if !matches!(now, peercompute_provider::TunnelStatus::Connected { session: s, .. } if s == session)
    {
        problems.push(format!("the honest tunnel did not stay up: {now:?}"));
    }
    assert!(
        problems.is_empty(),
        "B7 problems:\n  {}",
        problems.join("\n  ")
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `behaviour` with a fresh hostile key, while its name `evil-{i}` is visited at 20/s.
async fn attack(rig: &Rig, behaviour: Behaviour, identity: &Identity, i: usize) -> Row {
    let gw = &rig.gw;
    let name = format!("evil-{i}");
    let mut hostile =
        HostileProvider::connect(identity, gw.peer_id, gw.tunnel, behaviour.windows()).await;
    let answer = hostile.register(&name).await;
    assert!(
        matches!(answer, ControlMessage::Registered { .. }),
        "{answer:?}"
    );
    hostile.serve(behaviour.mode());
    let client = https_client(gw, &[&name], Alpn::H2);
    let url = gw.url(&name, "/");
    let rss0 = rss_kib();
    let stop_rss = Arc::new(Mutex::new(false));
    let peak = rss_peak(stop_rss.clone());
    let until = Arc::new(Mutex::new(Some(Instant::now() + ATTACK)));
    let read_body = behaviour != Behaviour::EndlessBody;
    let visits = visit_loop(
        client.clone(),
        url.clone(),
        Duration::from_millis(50),
        until,
        read_body,
    );
    let started = Instant::now();
    let acted = act(rig, behaviour, &mut hostile, &client, &url, identity).await;
    tokio::time::sleep(ATTACK.saturating_sub(started.elapsed())).await;
    let mut visits = within(30, "the hostile name's visitors", visits)
        .await
        .expect("hostile visits");
    visits.extend(acted.extra);
    *stop_rss.lock().expect("stop") = true;
    let peak = peak.await.expect("rss sampler");
    let rss_delta_mib = peak.saturating_sub(rss0) as f64 / 1024.0;

    let mut hostile_seen: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    for v in &visits {
        let key = match &v.outcome {
            Ok((status, _)) => status.to_string(),
            Err(_) => "error".to_owned(),
        };
        let slot = hostile_seen.entry(key).or_default();
        slot.0 += 1;
        slot.1 = slot.1.max(v.took);
        let ok = match &v.outcome {
            Ok((status, _)) => allowed(behaviour, *status).is_some_and(|max| v.took <= max),
            Err(_) => false,
        };
        if !ok {
            rig.problem(format!(
                "{behaviour:?}: a visitor of {name} got {:?} after {:?}",
                v.outcome, v.took
            ));
        }
    }
    let streams_left = streams_open(gw).await;
    drop(hostile);
    Row {
        behaviour,
        streams: acted.streams,
        rss_delta_mib,
        good_p99: Duration::ZERO,
        hostile: hostile_seen,
        end: acted.end,
        streams_left,
    }
}

/// What [`act`] saw: the streams figure, how the tunnel ended, visits it made itself.
struct Acted {
    streams: String,
    end: String,
    extra: Vec<Visit>,
}

impl Acted {
    fn new(streams: String, end: String) -> Self {
        Self {
            streams,
            end,
            extra: Vec::new(),
        }
    }
}

/// The misbehaviour itself.
async fn act(
    rig: &Rig,
    behaviour: Behaviour,
    hostile: &mut HostileProvider,
    client: &reqwest::Client,
    url: &str,
    identity: &Identity,
) -> Acted {
    let gw = &rig.gw;
    match behaviour {
        Behaviour::OpenStreams => {
            let opened = hostile
                .open_streams(10_000, Duration::from_secs(2), 4 * 1024 * 1024)
                .await;
            if opened > 4 {
                rig.problem(format!(
                    "OpenStreams: the gateway let it open {opened} streams"
                ));
            }
            let end = up_or_closed(hostile, Duration::ZERO).await;
            Acted::new(format!("{opened} of 10000 →"), end)
        }
        Behaviour::NeverReadStreams => {
            // A burst past the cap: the first STREAM_CAP hang until 504, the rest get 502.
            let rss0 = rss_kib();
            let burst: Vec<_> = (0..STREAM_CAP + 16)
                .map(|_| tokio::spawn(visit(client.clone(), url.to_owned(), true)))
                .collect();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let held = hostile_accepted(hostile);
            let per_stream = rss_kib().saturating_sub(rss0) as f64 / held.max(1) as f64;
            let mut visits = Vec::new();
            for b in burst {
                visits.push(b.await.expect("burst visit"));
            }
            let capped = visits
                .iter()
                .filter(|v| matches!(&v.outcome, Ok((502, body)) if body.contains("requests open")))
                .count();
            if capped == 0 || held > STREAM_CAP + 4 {
                rig.problem(format!(
                    "NeverReadStreams: {held} streams held at once, {capped} visitors got the \
                     stream cap's 502 (cap {STREAM_CAP})"
                ));
            }
            let end = up_or_closed(hostile, Duration::ZERO).await;
            println!(
                "B7 per-stream cost: {held} streams held, RSS +{per_stream:.1} KiB each \
                 (test process; {capped} burst visitors got the cap's 502)"
            );
            Acted {
                streams: format!("{held} ← held"),
                end,
                extra: visits,
            }
        }
        Behaviour::EndlessBody => {
            // One visitor reads the endless body at ~1 KiB/s for the attack.
            let mut resp = client.get(url).send().await.expect("endless body head");
            let deadline = Instant::now() + ATTACK.saturating_sub(Duration::from_millis(500));
            let mut read = 0usize;
            while Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_secs(2), resp.chunk()).await {
                    Ok(Ok(Some(c))) => read += c.len(),
                    _ => break,
                }
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
            drop(resp);
            let end = up_or_closed(hostile, Duration::ZERO).await;
            Acted::new(
                format!("{} ← served", hostile_accepted(hostile)),
                format!("{end}; slow reader got {read} B"),
            )
        }
        Behaviour::HeadNeverEnds | Behaviour::HugeHead => {
            tokio::time::sleep(ATTACK).await;
            let end = up_or_closed(hostile, Duration::ZERO).await;
            Acted::new(format!("{} ← served", hostile_accepted(hostile)), end)
        }
        Behaviour::OversizedControl | Behaviour::UnknownControl | Behaviour::TruncatedControl => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let frame = behaviour.raw_frame().expect("a broken-frame behaviour");
            let sent = Instant::now();
            hostile.send_raw_control(&frame).await;
            let end = up_or_closed(hostile, Duration::from_secs(1) + SLACK).await;
            let took = sent.elapsed();
            if !end.contains("bad control frame") || took > Duration::from_secs(1) + SLACK {
                rig.problem(format!("{behaviour:?}: ended after {took:?}: {end}"));
            }
            Acted::new("-".into(), format!("{end} ({:.2}s)", took.as_secs_f64()))
        }
        Behaviour::RegisterChurn => {
            let peer = identity.peer_id().to_string();
            let churn = hostile.churn("churn", 0, 20_000);
            let started = Instant::now();
            let end = up_or_closed(hostile, Duration::from_secs(15)).await;
            let took = started.elapsed();
            let owned = names_owned(gw, &peer);
            let sent = churn.sent.load(std::sync::atomic::Ordering::Relaxed);
            if !end.contains("too many control messages") || owned > OWNED_CAP {
                rig.problem(format!(
                    "RegisterChurn: {sent} messages, {owned} names owned (cap {OWNED_CAP}), \
                     after {took:?}: {end}"
                ));
            }
            let text = format!(
                "{end} ({:.1}s; {sent} msgs, {owned} names owned)",
                took.as_secs_f64()
            );
            Acted::new("-".into(), text)
        }
        Behaviour::PingNoRead => {
            let pings = hostile.ping_no_read();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            // Revoke it: the gateway must still get the news to it.
            let peer = identity.peer_id().to_string();
            let rest: Vec<String> = rig
                .allowed
                .lock()
                .expect("allowed")
                .iter()
                .filter(|p| **p != peer)
                .cloned()
                .collect();
            rig.allow(rest);
            let revoked = Instant::now();
            let end = up_or_closed(hostile, Duration::from_secs(10)).await;
            let took = revoked.elapsed();
            // G1: a stuck control write ends the tunnel within 5 s; revocation within 0.5 s.
            if end.starts_with("up") || took > Duration::from_secs(5) + SLACK {
                rig.problem(format!("PingNoRead: after revocation, {took:?}: {end}"));
            }
            let n = pings.load(std::sync::atomic::Ordering::Relaxed);
            Acted::new(
                "-".into(),
                format!(
                    "{end} ({:.1}s after revocation; {n} pings)",
                    took.as_secs_f64()
                ),
            )
        }
    }
}

fn hostile_accepted(hostile: &HostileProvider) -> usize {
    hostile.accepted.load(std::sync::atomic::Ordering::Relaxed)
}

/// "up" when the tunnel is still open after `wait`, else the gateway's close reason.
async fn up_or_closed(hostile: &HostileProvider, wait: Duration) -> String {
    match hostile
        .closed_within(wait.max(Duration::from_millis(1)))
        .await
    {
        Some(reason) => format!("closed: {reason}"),
        None => "up".into(),
    }
}
