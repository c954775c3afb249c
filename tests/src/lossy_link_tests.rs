use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Feeds `count` datagrams one every `gap` and returns the verdicts with arrival times.
fn run(dir: Dir, seed: u64, count: usize, gap: Duration) -> Vec<(Instant, Verdict)> {
    let mut shaper = Shaper::new(dir);
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    (0..count)
        .map(|i| {
            let now = start + gap * i as u32;
            (now, shaper.on_datagram(now, &mut rng))
        })
        .collect()
}

#[test]
fn loss_rate_matches_the_asked_one() {
    // (asked loss, tolerance): 100 000 datagrams, so ±0.4 % is > 4 standard deviations.
    for (loss, tolerance) in [(0.0, 0.0), (0.01, 0.002), (0.05, 0.004), (0.10, 0.005)] {
        let verdicts = run(Dir::new(loss, ms(5), ms(1)), 7, 100_000, Duration::ZERO);
        let dropped = verdicts.iter().filter(|(_, v)| *v == Verdict::Drop).count();
        let measured = dropped as f64 / verdicts.len() as f64;
        assert!(
            (measured - loss).abs() <= tolerance,
            "asked {loss}, measured {measured}"
        );
    }
    let all = run(Dir::new(1.0, ms(5), ms(0)), 7, 1000, Duration::ZERO);
    assert!(all.iter().all(|(_, v)| *v == Verdict::Drop));
}

#[test]
fn delay_stays_within_jitter_and_order_is_kept_unless_reorder() {
    // (delay, jitter, reorder, datagram gap): inversions are expected only with reorder.
    let cases = [
        (ms(5), ms(1), false, Duration::from_micros(100)),
        (ms(50), ms(10), false, Duration::from_micros(100)),
        (ms(50), ms(10), true, Duration::from_micros(100)),
        (ms(5), ms(0), false, Duration::from_micros(10)),
        (ms(2), ms(5), true, Duration::from_micros(50)),
    ];
    for (delay, jitter, reorder, gap) in cases {
        let dir = Dir {
            loss: 0.0,
            delay,
            jitter,
            reorder,
        };
        let verdicts = run(dir, 42, 10_000, gap);
        let mut last = None;
        let mut inversions = 0;
        for (now, verdict) in &verdicts {
            let Verdict::Deliver(at) = *verdict else {
                panic!("no loss asked, got a drop");
            };
            let low = *now + delay.saturating_sub(jitter);
            assert!(at >= low, "{dir:?}: released before delay − jitter");
            if reorder {
                assert!(
                    at <= *now + delay + jitter,
                    "{dir:?}: later than delay + jitter"
                );
            } else if let Some(prev) = last {
                // Queueing behind the previous datagram is the only extra wait.
                assert!(at <= (*now + delay + jitter).max(prev), "{dir:?}");
            }
            if last.is_some_and(|prev| at < prev) {
                inversions += 1;
            }
            last = Some(at);
        }
        if reorder {
            assert!(inversions > 100, "{dir:?}: only {inversions} reordered");
        } else {
            assert_eq!(inversions, 0, "{dir:?}: order must be kept");
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_link() {
    let dir = Dir::new(0.05, ms(50), ms(10));
    let offsets = |seed| {
        let verdicts = run(dir, seed, 2000, ms(1));
        let start = verdicts[0].0;
        verdicts
            .into_iter()
            .map(|(_, v)| match v {
                Verdict::Drop => None,
                Verdict::Deliver(at) => Some(at - start),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(offsets(1), offsets(1));
    assert_ne!(offsets(1), offsets(2));
}

#[test]
fn set_changes_the_shape_of_later_datagrams() {
    let mut shaper = Shaper::new(Dir::new(0.0, ms(100), ms(0)));
    let mut rng = StdRng::seed_from_u64(3);
    let now = Instant::now();
    assert_eq!(
        shaper.on_datagram(now, &mut rng),
        Verdict::Deliver(now + ms(100))
    );
    shaper.set(Dir::new(1.0, ms(0), ms(0)));
    assert_eq!(shaper.on_datagram(now, &mut rng), Verdict::Drop);
}

/// Echoes every datagram back to its sender.
async fn echo_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = socket.local_addr().expect("echo addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

#[tokio::test]
async fn forwards_both_ways_with_delay_and_counts_loss() {
    let echo = echo_server().await;
    let link = LossyLink::start(echo, LinkShape::symmetric(Dir::new(0.0, ms(20), ms(0)), 9))
        .await
        .expect("link");
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    client.connect(link.addr).await.expect("connect");
    let mut buf = [0u8; 64];

    let sent = Instant::now();
    client.send(b"ping").await.expect("send");
    let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
        .await
        .expect("echo within 5 s")
        .expect("recv");
    let rtt = sent.elapsed();
    assert_eq!(&buf[..n], b"ping");
    assert!(rtt >= ms(40), "two 20 ms legs took {rtt:?}");

    // Half the datagrams lost each way: about a quarter come back. A reader drains the
    // client's socket meanwhile, so its kernel buffer never drops what the link delivered.
    link.set_shape(Dir::new(0.5, ms(1), ms(0)), Dir::new(0.5, ms(1), ms(0)));
    let before = link.stats();
    let client = Arc::new(client);
    let reader = tokio::spawn({
        let client = client.clone();
        async move {
            let mut buf = [0u8; 64];
            let mut back = 0u64;
            while let Ok(Ok(_)) = tokio::time::timeout(ms(500), client.recv(&mut buf)).await {
                back += 1;
            }
            back
        }
    });
    for i in 0..2000u32 {
        client.send(&i.to_be_bytes()).await.expect("send");
        if i % 20 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let back = reader.await.expect("reader");
    let stats = link.stats().since(&before);
    assert_eq!(stats.up.received, 2000, "{stats:?}");
    assert!((stats.up.loss() - 0.5).abs() < 0.05, "{stats}");
    assert!((stats.down.loss() - 0.5).abs() < 0.07, "{stats}");
    assert_eq!(back, stats.down.forwarded, "{stats:?}");
    assert!((400..=600).contains(&back), "{back} of 2000 came back");
}
