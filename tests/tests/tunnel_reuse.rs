//! Upstream stream reuse: the gateway keeps the QUIC stream (and so the provider's connection
//! to the app) open between requests, across visitors, and still answers every request when
//! the app closes its keep-alive connections on its own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use peercompute_tests::{
    Alpn, GatewayOptions, Published, TestGateway, TestProvider, https_client, https_client_from,
    publish, within,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn visitors_share_app_connections_and_each_keeps_its_own_forwarding_headers() {
    let Published {
        gw,
        provider: _provider,
        backend,
    } = publish(GatewayOptions::default(), "app").await;
    let visitors = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        for ip in visitors {
            // A fresh client per request: a new visitor connection every time.
            let client = https_client_from(&gw, &["app"], Alpn::H1, Some(IpAddr::V4(ip)));
            let resp = within(10, "request", client.get(gw.url("app", "/echo")).send())
                .await
                .expect("request");
            assert_eq!(resp.status(), 200);
            let body = resp.text().await.expect("body");
            assert!(
                body.contains(&format!("x-forwarded-for: {ip}\n")),
                "round {round}, visitor {ip}: {body}"
            );
        }
    }
    let requests = ROUNDS * visitors.len();
    assert_eq!(backend.requests(), requests);
    // Sequential requests find the previous stream back in the pool; a few may open another
    // while the previous one is still being checked in.
    let connections = backend.connections();
    assert!(
        connections <= requests / 4,
        "{requests} sequential requests opened {connections} app connections: streams are not reused"
    );
}

/// An app that answers one request per connection and then closes it without saying so
/// (no `Connection: close`), like an app whose keep-alive timeout just fired.
async fn closing_app() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                // Any request body is small and already read (or ignored): answer and close.
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn an_app_that_closes_connections_silently_still_answers_every_request() {
    let id = TestProvider::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![id.peer_id()],
        ..GatewayOptions::default()
    })
    .await;
    let (app, accepted) = closing_app().await;
    let provider = TestProvider::start(id, &gw);
    provider.register("app", app).await.expect("register");
    let client = https_client(&gw, &["app"], Alpn::H1);
    const N: usize = 15;
    for i in 0..N {
        let resp = within(10, "GET", client.get(gw.url("app", "/")).send())
            .await
            .expect("GET");
        assert_eq!(resp.status(), 200, "GET {i}");
        assert_eq!(resp.text().await.expect("body"), "ok");
        // A request with a body is never replayed, so it must not land on a dead stream.
        let resp = within(
            10,
            "POST",
            client.post(gw.url("app", "/")).body("x=1").send(),
        )
        .await
        .expect("POST");
        assert_eq!(resp.status(), 200, "POST {i}");
        assert_eq!(resp.text().await.expect("body"), "ok");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2 * N,
        "one connection per request"
    );
}
