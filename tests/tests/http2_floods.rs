//! Checklist B6 (rest): HTTP/2 control-frame floods. h2 answers every PING and SETTINGS and
//! ignores PRIORITY with no count limit, so without the gateway's guard (`h2guard`) a visitor
//! that reads its answers costs CPU for as long as it likes. Each flood here must end its own
//! connection (GOAWAY ENHANCE_YOUR_CALM, or a close) within 2 s after a bounded number of
//! answers, with little CPU and memory spent (measured: the gateway runs in this process), while
//! another visitor is served within 2 s throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use peercompute_tests::h2raw::{h2_frame, h2_preface};
use peercompute_tests::procfs::{cpu_seconds, memory};
use peercompute_tests::{Alpn, GatewayOptions, Published, https_client, publish, raw_tls_alpn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How one flood ended, from the flooder's side.
#[derive(Debug)]
struct Ended {
    /// GOAWAY's error code, or `None` when the connection just closed.
    goaway: Option<u32>,
    /// PING and SETTINGS acknowledgements the gateway sent.
    answered: usize,
    after: Duration,
}

/// Sends `frames` copies of `frame` after the preface (as fast as the connection takes them)
/// on a fresh connection offering `alpn`, and reads the answers until GOAWAY or the close.
async fn flood(published: &Published, alpn: &[u8], frame: &[u8], frames: usize) -> Ended {
    let conn = raw_tls_alpn(&published.gw, "app", alpn).await;
    let (mut reader, mut writer) = tokio::io::split(conn);
    let started = Instant::now();
    let chunk: Vec<u8> = frame.repeat(2048);
    // (The kernel takes megabytes on loopback before the gateway reads them: what was
    // written says nothing of the gateway's work, the answers and the CPU do.)
    let write = async {
        if writer.write_all(&h2_preface()).await.is_err() {
            return;
        }
        for _ in 0..frames.div_ceil(2048) {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let read = async {
        let mut answered = 0usize;
        let mut head = [0u8; 9];
        loop {
            if reader.read_exact(&mut head).await.is_err() {
                return (None, answered);
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if reader.read_exact(&mut payload).await.is_err() {
                return (None, answered);
            }
            match (head[3], head[4] & 1) {
                (0x7, _) if payload.len() >= 8 => {
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    return (Some(code), answered);
                }
                (0x6 | 0x4, 1) => answered += 1,
                _ => {}
            }
        }
    };
    let ((goaway, answered), ()) =
        tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(read, write) })
            .await
            .expect("the flood ended within 10 s");
    Ended {
        goaway,
        answered,
        after: started.elapsed(),
    }
}

#[tokio::test]
async fn control_frame_floods_end_their_connection_and_others_are_served() {
    let published = publish(GatewayOptions::default(), "app").await;
    let client = https_client(&published.gw, &["app"], Alpn::H2);
    // Another visitor, every 100 ms for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let visitor = {
        let (client, url, stop) = (client.clone(), published.gw.url("app", "/"), stop.clone());
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut served = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let resp = client.get(&url).send().await.expect("the other visitor");
                assert_eq!(resp.status(), 200);
                worst = worst.max(t.elapsed());
                served += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (served, worst)
        })
    };

    let ping = h2_frame(0x6, 0, 0, &[7; 8]);
    let ping_ack = h2_frame(0x6, 1, 0, &[7; 8]);
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4), toggled by the value.
    let settings = h2_frame(0x4, 0, 0, &[0, 4, 0, 1, 0, 0]);
    let priority = h2_frame(0x2, 0, 3, &[0, 0, 0, 1, 16]);
    let phases: [(&str, &[u8], &[u8], usize); 5] = [
        ("PING", b"h2", &ping, 200_000),
        ("PING ACK", b"h2", &ping_ack, 200_000),
        ("SETTINGS", b"h2", &settings, 50_000),
        ("PRIORITY", b"h2", &priority, 100_000),
        // Prior knowledge: the preface on an http/1.1 connection (hyper's auto mode).
        ("PING, prior knowledge", b"http/1.1", &ping, 200_000),
    ];
    let me = std::process::id();
    for (name, alpn, frame, frames) in phases {
        let cpu = cpu_seconds(me).expect("our CPU time");
        let rss = memory(me).expect("our memory").rss_kib;
        let ended = flood(&published, alpn, frame, frames).await;
        let cpu = cpu_seconds(me).expect("our CPU time") - cpu;
        let grew = memory(me).expect("our memory").rss_kib.saturating_sub(rss);
        eprintln!("{name} flood: {ended:?}, {cpu:.2} s CPU (gateway and flooder), RSS +{grew} KiB");
        assert!(
            matches!(ended.goaway, Some(0xb) | None),
            "{name}: GOAWAY ENHANCE_YOUR_CALM or a close, not {:?}",
            ended.goaway
        );
        assert!(
            ended.after < Duration::from_secs(2),
            "{name}: ended after {:?}",
            ended.after
        );
        assert!(
            ended.answered <= 1100,
            "{name}: {} frames answered",
            ended.answered
        );
        assert!(cpu < 1.0, "{name}: {cpu:.2} s of CPU");
        assert!(grew < 16 * 1024, "{name}: RSS grew {grew} KiB");
    }
    // The floods end in milliseconds: the other visitor goes on for a while after them.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::Relaxed);
    let (served, worst) = visitor.await.expect("the visitor ran");
    eprintln!("the other visitor: {served} requests, slowest {worst:?}");
    assert!(served >= 4, "{served} requests");
    assert!(worst < Duration::from_secs(2), "slowest {worst:?}");
    // The floods are counted by kind.
    let metrics = published.gw.admin_get("/metrics").await;
    for kind in ["ping", "settings", "priority"] {
        assert!(
            metrics.contains(&format!(
                "peercompute_gateway_h2_floods_total{{kind=\"{kind}\"}}"
            )),
            "{kind} counted: {metrics}"
        );
    }
}
