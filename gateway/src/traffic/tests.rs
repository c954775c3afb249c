use prometheus_client::registry::Registry;

use super::*;

fn encode(traffic: &Arc<Traffic>) -> String {
    let mut registry = Registry::with_prefix("peercompute_gateway");
    registry.register_collector(Box::new(TrafficCollector(traffic.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
    out
}

#[test]
fn names_past_the_cap_share_other_and_release_frees_nothing_retroactively() {
    let traffic = Traffic::new(3);
    let cells: Vec<_> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| traffic.cell_for(n))
        .collect();
    assert!(!Arc::ptr_eq(&cells[0], &cells[1]));
    assert!(Arc::ptr_eq(&cells[3], &traffic.other), "d folds into other");
    assert!(Arc::ptr_eq(&cells[4], &traffic.other), "e folds into other");
    assert!(
        Arc::ptr_eq(&traffic.cell_for("a"), &cells[0]),
        "same cell again"
    );

    traffic.release("a");
    assert!(traffic.counts("a").is_none());
    // d registered while the table was full and keeps counting into other...
    cells[3].record_status(200);
    assert_eq!(traffic.other.counts().requests[1], 1);
    // ...and the freed slot goes to the next registration.
    let f = traffic.cell_for("f");
    assert!(!Arc::ptr_eq(&f, &traffic.other));

    let text = encode(&Arc::new(traffic));
    assert!(text.contains("route=\"other\""), "{text}");
    assert!(!text.contains("route=\"d\""), "{text}");
    assert!(text.contains("route=\"f\""), "{text}");
}

#[test]
fn other_is_exported_only_once_used() {
    let traffic = Arc::new(Traffic::new(500));
    traffic.cell_for("blog").record_status(200);
    let text = encode(&traffic);
    assert!(!text.contains("other"), "{text}");
    let none = Arc::new(Traffic::new(0));
    none.cell_for("blog").record_status(200);
    assert!(encode(&none).contains("route=\"other\",class=\"2xx\"} 1"));
}

#[test]
fn status_classes() {
    let cell = TrafficCell::default();
    for status in [100, 101, 200, 204, 301, 404, 429, 500, 502, 599] {
        cell.record_status(status);
    }
    assert_eq!(cell.counts().requests, [2, 2, 1, 2, 3]);
}

#[test]
fn latency_bucket_edges() {
    let cell = TrafficCell::default();
    cell.observe_head(Duration::from_micros(500)); // exactly the first bound
    cell.observe_head(Duration::from_micros(501));
    cell.observe_head(Duration::from_millis(16)); // 0.5 ms × 32 = 16 ms: bucket 5
    cell.observe_head(Duration::from_secs(3600)); // past the last bound: +Inf
    let c = cell.counts();
    assert_eq!(c.latency[0], 1);
    assert_eq!(c.latency[1], 1);
    assert_eq!(c.latency[5], 1);
    assert_eq!(c.latency[BUCKETS - 1], 1);
    assert_eq!(c.latency_sum_micros, 500 + 501 + 16_000 + 3_600_000_000);
    assert!((BOUNDS[15] - 16.384).abs() < 1e-9, "{}", BOUNDS[15]);
}

#[test]
fn quantiles_interpolate_within_the_bucket() {
    let cell = TrafficCell::default();
    assert_eq!(cell.counts().quantile_ms(0.5), None);
    // 100 observations in (1 ms, 2 ms]: the median is half-way, 1.5 ms.
    for _ in 0..100 {
        cell.observe_head(Duration::from_micros(1500));
    }
    let c = cell.counts();
    let p50 = c.quantile_ms(0.5).expect("p50");
    assert!((p50 - 1.5).abs() < 1e-9, "{p50}");
    let p99 = c.quantile_ms(0.99).expect("p99");
    assert!((p99 - 1.99).abs() < 1e-9, "{p99}");
    cell.observe_head(Duration::from_secs(100));
    let top = cell.counts().quantile_ms(1.0).expect("max");
    assert!(
        (top - 16_384.0).abs() < 1e-6,
        "+Inf reports the last bound: {top}"
    );
}

#[test]
fn every_count_lands_in_exactly_one_cell() {
    // A fixed pseudo-random walk (an LCG) over names, statuses and byte counts.
    let traffic = Arc::new(Traffic::new(7));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |m: u64| {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (x >> 33) % m
    };
    let (mut requests, mut bytes) = (0u64, 0u64);
    for _ in 0..5000 {
        let cell = traffic.cell_for(&format!("app{}", next(20)));
        let status = 100 + u16::try_from(next(500)).expect("small");
        cell.record_status(status);
        let n = next(10_000);
        cell.add_in(n);
        requests += 1;
        bytes += n;
    }
    let exported = traffic.exported();
    assert_eq!(exported.len(), 8, "7 named cells and other");
    let sum_requests: u64 = exported.iter().map(|(_, c)| c.total_requests()).sum();
    let sum_bytes: u64 = exported.iter().map(|(_, c)| c.bytes_in).sum();
    assert_eq!((sum_requests, sum_bytes), (requests, bytes));
}

#[test]
fn ticks_carry_the_last_second_and_the_rate_covers_the_minute() {
    let traffic = Traffic::new(10);
    let mut ticks = traffic.subscribe_ticks();
    let blog = traffic.cell_for("blog");
    let _idle = traffic.cell_for("idle");
    let t0 = Instant::now();
    traffic.sample(t0, 1_000);
    assert_eq!(ticks.try_recv().expect("first tick").at_unix_ms, 1_000);
    for second in 1..=20u64 {
        for _ in 0..5 {
            blog.record_status(200);
        }
        blog.record_status(404);
        blog.add_out(100);
        let (tick, ended) = traffic.sample(t0 + Duration::from_secs(second), 1_000 * second);
        assert!(ended.is_empty());
        assert_eq!(tick.routes.len(), 1, "the idle route is left out");
        let r = &tick.routes[0];
        assert_eq!(
            (
                r.route.as_str(),
                r.traffic.requests,
                r.traffic.status_4xx,
                r.traffic.bytes_out,
            ),
            ("blog", 6, 1, 100)
        );
    }
    assert!(
        matches!(
            ticks.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(12))
        ),
        "a subscriber that stops reading lags (8 kept)"
    );
    assert_eq!(traffic.ticks().len(), 21);
    let rate = traffic.req_per_s_1m("blog", t0 + Duration::from_secs(20));
    assert!((rate - 6.0).abs() < 1e-9, "{rate}");
    assert_eq!(traffic.req_per_s_1m("nobody", t0), 0.0);
    for second in 21..=100 {
        traffic.sample(t0 + Duration::from_secs(second), second);
    }
    assert_eq!(traffic.ticks().len(), TICKS_KEPT, "bounded");
    let later = traffic.req_per_s_1m("blog", t0 + Duration::from_secs(100));
    assert_eq!(later, 0.0, "nothing in the last minute");
}

#[test]
fn a_rate_limit_episode_starts_once_and_ends_after_quiet() {
    let traffic = Traffic::new(10);
    let t0 = Instant::now();
    assert!(traffic.rate_limited("blog", t0));
    assert!(!traffic.rate_limited("blog", t0 + Duration::from_secs(1)));
    let (_, ended) = traffic.sample(t0 + Duration::from_secs(5), 0);
    assert!(ended.is_empty(), "4 s since the last 429");
    let (_, ended) = traffic.sample(t0 + Duration::from_secs(6), 0);
    assert_eq!(ended, vec!["blog".to_owned()]);
    assert!(
        traffic.rate_limited("blog", t0 + Duration::from_secs(7)),
        "a new one"
    );
}

#[test]
fn the_exposition_of_one_route() {
    let traffic = Arc::new(Traffic::new(10));
    let cell = traffic.cell_for("blog");
    cell.record_status(200);
    cell.record_error(ErrorKind::Timeout);
    cell.add_in(10);
    cell.add_out(20);
    cell.observe_head(Duration::from_millis(3));
    let text = encode(&traffic);
    for line in [
        "# TYPE peercompute_gateway_route_requests counter",
        "peercompute_gateway_route_requests_total{route=\"blog\",class=\"2xx\"} 1",
        "peercompute_gateway_route_requests_total{route=\"blog\",class=\"5xx\"} 0",
        "peercompute_gateway_route_errors_total{route=\"blog\",kind=\"timeout\"} 1",
        "peercompute_gateway_route_body_bytes_total{route=\"blog\",direction=\"upload\"} 10",
        "peercompute_gateway_route_body_bytes_total{route=\"blog\",direction=\"download\"} 20",
        "# TYPE peercompute_gateway_route_response_head_seconds histogram",
        "peercompute_gateway_route_response_head_seconds_sum{route=\"blog\"} 0.003",
        "peercompute_gateway_route_response_head_seconds_count{route=\"blog\"} 1",
        "peercompute_gateway_route_response_head_seconds_bucket{le=\"0.002\",route=\"blog\"} 0",
        "peercompute_gateway_route_response_head_seconds_bucket{le=\"0.004\",route=\"blog\"} 1",
        "peercompute_gateway_route_response_head_seconds_bucket{le=\"+Inf\",route=\"blog\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn idle_cells_without_a_route_give_their_slot_back() {
    let traffic = Traffic::new(2);
    let a = traffic.cell_for("a");
    let b = traffic.cell_for("b");
    let t0 = Instant::now();
    traffic.sample(t0, 0);
    a.record_status(200);
    traffic.sample(t0 + Duration::from_secs(1), 0);
    // a's route is gone (withdrawn); b's is still registered.
    drop(a);
    let later = t0 + Duration::from_secs(1) + EVICT_IDLE;
    traffic.sample(later - Duration::from_secs(1), 0);
    assert!(traffic.counts("a").is_some(), "not idle long enough yet");
    traffic.sample(later, 0);
    assert!(traffic.counts("a").is_none(), "evicted");
    assert!(traffic.counts("b").is_some(), "held by a live route");
    let c = traffic.cell_for("c");
    assert!(!Arc::ptr_eq(&c, &traffic.other), "the freed slot is reused");
    drop(b);
}
