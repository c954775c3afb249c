//! Faults on the tunnel path: provider crash, gateway restart, upstream silence, SIGTERM drain.

use std::time::{Duration, Instant};

use peercompute_tests::{Alpn, GatewayOptions, Published, https_client, publish, within};

#[tokio::test]
async fn provider_crash_gives_502_fast_for_new_and_in_flight_requests() {
    let Published {
        gw,
        mut provider,
        backend,
    } = publish(
        GatewayOptions {
            upstream_timeout: Duration::from_secs(30),
            ..GatewayOptions::default()
        },
        "app",
    )
    .await;
    let client = https_client(&gw, &["app"], Alpn::H1);
    assert_eq!(
        client
            .get(gw.url("app", "/"))
            .send()
            .await
            .expect("ok")
            .status(),
        200
    );

    // A slow request is in flight when the provider dies.
    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = gw.url("app", "/slow?ms=20000");
        async move {
            let started = Instant::now();
            let status = client.get(url).send().await.map(|r| r.status().as_u16());
            (status, started.elapsed())
        }
    });
    // Wait until the backend has the slow request, then crash the provider.
    within(10, "slow request to reach the backend", async {
        while backend.requests() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let killed_at = Instant::now();
    provider.kill();

    let (status, _) = within(10, "in-flight request to fail", in_flight)
        .await
        .expect("task");
    let failed_after = killed_at.elapsed();
    assert_eq!(status.expect("an HTTP answer, not a hang"), 502);
    assert!(
        failed_after < Duration::from_secs(3),
        "in-flight failed after {failed_after:?}"
    );

    let started = Instant::now();
    let resp = client
        .get(gw.url("app", "/"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 502);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "502 took {:?}",
        started.elapsed()
    );
    let body = resp.text().await.expect("body");
    assert!(body.contains("offline"), "{body}");
}

#[tokio::test]
async fn provider_reconnects_after_gateway_restart_and_keeps_its_name() {
    let Published {
        gw,
        provider,
        backend: _backend,
    } = publish(
        GatewayOptions {
            ..GatewayOptions::default()
        },
        "app",
    )
    .await;
    let first = provider.registered(1, 1).await;

    let gw = gw.restart().await;
    // After the restart the provider reconnects on its own and re-registers.
    provider.registered(1, first + 1).await;
    let client = https_client(&gw, &["app"], Alpn::H1);
    let resp = client
        .get(gw.url("app", "/"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "hello from backend");
}

#[tokio::test]
async fn silent_upstream_gives_504() {
    let Published {
        gw,
        provider: _provider,
        backend: _backend,
    } = publish(
        GatewayOptions {
            upstream_timeout: Duration::from_secs(1),
            ..GatewayOptions::default()
        },
        "app",
    )
    .await;
    let client = https_client(&gw, &["app"], Alpn::H1);
    let started = Instant::now();
    let resp = within(10, "504", client.get(gw.url("app", "/hang")).send())
        .await
        .expect("request");
    assert_eq!(resp.status(), 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // The gateway still serves the same app afterwards.
    let resp = client
        .get(gw.url("app", "/"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn sigterm_drain_completes_in_flight_request() {
    let Published {
        mut gw,
        provider: _provider,
        backend,
    } = publish(
        GatewayOptions {
            grace_period: Duration::from_secs(10),
            ..GatewayOptions::default()
        },
        "app",
    )
    .await;
    let client = https_client(&gw, &["app"], Alpn::H1);
    let in_flight = tokio::spawn({
        let url = gw.url("app", "/slow?ms=1500");
        let client = client.clone();
        async move {
            let resp = client.get(url).send().await?;
            let status = resp.status().as_u16();
            Ok::<_, reqwest::Error>((status, resp.text().await?))
        }
    });
    within(10, "slow request to reach the backend", async {
        while backend.requests() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let started = Instant::now();
    let run = gw.begin_shutdown().expect("running");
    let (status, body) = within(10, "in-flight request", in_flight)
        .await
        .expect("task")
        .expect("in-flight request completes during the drain");
    assert_eq!((status, body.as_str()), (200, "slept 1500 ms"));
    within(15, "gateway to exit", run)
        .await
        .expect("gateway exits cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drain did not wait for the grace period"
    );
    // New connections are refused once the gateway stopped.
    let fresh = https_client(&gw, &["app"], Alpn::H1);
    assert!(fresh.get(gw.url("app", "/")).send().await.is_err());
}
