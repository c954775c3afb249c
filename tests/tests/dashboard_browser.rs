//! The dashboard in a real headless Chromium (Debian's chromium + chromium-driver, over
//! WebDriver): it loads with no console errors, a provider that connects while the page is
//! open appears within 1 s, request counts rise while a load loop runs, and the Disconnect
//! button ends the tunnel. A screenshot goes to `target/test-artifacts/dashboard.png` and is
//! checked not to be blank. One gateway and one browser serve every step.

use std::time::{Duration, Instant};

use peercompute_provider::TunnelStatus;
use peercompute_tests::admin::{self, StatusBackend};
use peercompute_tests::browser::{self, Browser};
use peercompute_tests::{Alpn, GatewayOptions, TestGateway, TestProvider, https_client, within};

#[tokio::test]
async fn dashboard_shows_live_state_and_disconnects() {
    if !browser::available() {
        return;
    }
    let (id1, id2) = (TestProvider::identity(), TestProvider::identity());
    let p2_id = id2.peer_id().to_string();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![id1.peer_id(), id2.peer_id()],
        ..GatewayOptions::default()
    })
    .await;
    let backend = StatusBackend::start().await;
    let p1 = TestProvider::start(id1, &gw);
    p1.register("blog", backend.addr)
        .await
        .expect("register blog");

    let t_browser = Instant::now();
    let b = Browser::start().await;
    println!("browser session: {} ms", t_browser.elapsed().as_millis());
    b.client
        .goto(&format!("http://{}/", gw.admin))
        .await
        .expect("open the dashboard");
    b.wait_for("#main:not([hidden]) #providers tbody tr", 10)
        .await;
    b.wait_for("#routes tr[data-route=blog]", 5).await;
    b.wait_for("#conn.live", 5).await;
    let errors = b.errors().await;
    assert!(errors.is_empty(), "console errors after load: {errors:?}");

    // A provider that connects while the page is open appears within 1 s.
    let mut p2 = TestProvider::start(id2, &gw);
    p2.connected().await;
    let t0 = Instant::now();
    let row = format!("#providers tr[data-peer='{p2_id}']");
    b.wait_for(&row, 5).await;
    let appeared = t0.elapsed();
    println!("provider_appeared_ms={}", appeared.as_millis());
    assert!(
        appeared <= Duration::from_secs(1),
        "appeared after {appeared:?}"
    );

    // Request counts rise while a load loop runs (20 concurrent, until the page showed 4
    // rises or 8 s passed: a slow WebDriver round trip can merge two one-second ticks).
    let visitor = https_client(&gw, &["blog"], Alpn::H1);
    let url = gw.url("blog", "/");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let give_up = Instant::now() + Duration::from_secs(8);
    let load: Vec<_> = (0..20)
        .map(|_| {
            let (visitor, url, stop) = (visitor.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < give_up {
                    if visitor
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200)
                    {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let cell = "#routes tr[data-route=blog] .requests";
    let mut seen: Vec<u64> = Vec::new();
    while Instant::now() < give_up && seen.windows(2).filter(|w| w[1] > w[0]).count() < 4 {
        if let Some(n) = b.text(cell).await.and_then(|t| t.trim().parse().ok())
            && seen.last() != Some(&n)
        {
            seen.push(n);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for task in load {
        sent += task.await.expect("load task");
    }
    let rises = seen.windows(2).filter(|w| w[1] > w[0]).count();
    println!("load: {sent} requests sent; the page showed {seen:?}");
    assert!(rises >= 4, "requests rose {rises} times: {seen:?}");

    // Disconnect: confirm with a reason; the provider's tunnel ends within 2 s.
    let button = format!("{row} button.disconnect");
    b.click(&button, 2).await;
    let reason = b.wait_for("#confirm[open] #confirm-reason", 2).await;
    reason
        .send_keys("browser test")
        .await
        .expect("type a reason");
    let t_click = Instant::now();
    b.click("#confirm-ok", 2).await;
    within(
        2,
        "the provider to see its tunnel end",
        p2.handle
            .wait_for(|s| !matches!(s, TunnelStatus::Connected { session: 1, .. })),
    )
    .await;
    println!(
        "disconnect_click_to_tunnel_end_ms={}",
        t_click.elapsed().as_millis()
    );
    b.wait_text("#events li[data-type=provider_disconnected]", 3, |t| {
        t.contains("browser test")
    })
    .await;

    // Screenshot, not blank.
    let path = browser::artifacts_dir().join("dashboard.png");
    let png = b.screenshot(&path).await;
    let (colours, differing) = browser::png_variety(&png);
    println!(
        "screenshot {} ({} bytes): {colours} colours, {:.1} % differ from the corner",
        path.display(),
        png.len(),
        differing * 100.0
    );
    assert!(colours >= 8 && differing >= 0.05, "blank screenshot?");

    // Release: confirm; the event shows and visitors get 404.
    b.click("#routes tr[data-route=blog] button.release", 2)
        .await;
    b.wait_for("#confirm[open]", 2).await;
    b.click("#confirm-ok", 2).await;
    b.wait_text("#events li[data-type=name_released]", 3, |t| {
        t.contains("blog")
    })
    .await;
    let status = visitor.get(&url).send().await.expect("visit").status();
    assert_eq!(status, 404, "blog released from the page");
    within(3, "blog to leave the routes table", async {
        while b.text("#routes tr[data-route=blog]").await.is_some() {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;

    let errors = b.errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    p2.stop().await;

    // With a token file: the page asks for the token, refuses a wrong one, then loads.
    let dir = tempfile::tempdir().expect("tempdir");
    let good = admin::token("admin");
    let tokens = admin::token_file(dir.path(), &[format!("admin {good}")]);
    let locked = TestGateway::start(GatewayOptions {
        admin_token_file: Some(tokens),
        open: true,
        ..GatewayOptions::default()
    })
    .await;
    b.client
        .goto(&format!("http://{}/", locked.admin))
        .await
        .expect("open the locked dashboard");
    let field = b.wait_for("#login:not([hidden]) #token", 10).await;
    field.send_keys(&admin::token("wrong")).await.expect("type");
    b.click("#token-ok", 2).await;
    b.wait_text("#login:not([hidden]) #login-error", 5, |t| !t.is_empty())
        .await;
    b.wait_for("#token", 2)
        .await
        .send_keys(&good)
        .await
        .expect("type");
    b.click("#token-ok", 2).await;
    b.wait_for("#main:not([hidden]) #certificates tbody tr", 10)
        .await;
    b.wait_for("#conn.live", 5).await;
    assert_eq!(b.text("#role").await.as_deref(), Some("admin token"));
    // The API link fetches the document with the token (a plain link would get a bare 401).
    b.click("#api-link", 2).await;
    within(5, "the OpenAPI document in a new tab", async {
        while b.client.windows().await.map_or(0, |w| w.len()) < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The 401s of the wrong token are the browser's network log, not page errors.
    let errors: Vec<String> = b
        .errors()
        .await
        .into_iter()
        .filter(|e| !e.contains("401"))
        .collect();
    assert!(
        errors.is_empty(),
        "console errors with a token file: {errors:?}"
    );
    let _ = b.client.clone().close().await;
}
