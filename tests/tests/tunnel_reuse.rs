//! Upstream stream reuse: the gateway keeps the QUIC stream (and so the provider's connection
//! to the app) open between requests, across visitors, and still answers every request when
//! the app closes its keep-alive connections on its own, or drops a fresh connection
//! unanswered (an idempotent request without a body goes once more on another fresh stream).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use peercompute_tests::{
    Alpn, GatewayOptions, Published, TestGateway, TestProvider, https_client, https_client_from,
    publish, within,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// GET `url`, expecting 200; the body (the backend's `/echo` of what it received).
async fn echo(client: &reqwest::Client, url: String) -> String {
    let resp = within(10, "request", client.get(url).send())
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("body")
}

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
            let body = echo(&client, gw.url("app", "/echo")).await;
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
                if !read_head(&mut tcp).await {
                    return;
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

/// Reads from `tcp` until the end of a request head; false when the connection ended first.
async fn read_head(tcp: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A gateway, a provider publishing `app` as `app`, and a visitor client for it.
async fn serve(app: SocketAddr) -> (TestGateway, TestProvider, reqwest::Client) {
    let id = TestProvider::identity();
    let gw = TestGateway::start(GatewayOptions {
        allow: vec![id.peer_id()],
        ..GatewayOptions::default()
    })
    .await;
    let provider = TestProvider::start(id, &gw);
    provider.register("app", app).await.expect("register");
    let client = https_client(&gw, &["app"], Alpn::H1);
    (gw, provider, client)
}

#[tokio::test]
async fn an_app_that_closes_connections_silently_still_answers_every_request() {
    let (app, accepted) = closing_app().await;
    let (gw, _provider, client) = serve(app).await;
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

/// What [`dropping_app`] saw, and what it is to do.
#[derive(Default)]
struct Seen {
    /// Request heads read, dropped ones included.
    heads: AtomicUsize,
    /// Connections still to drop unanswered once their request head has arrived.
    drop_next: AtomicUsize,
}

/// An app that reads each connection's request head and then drops the connection without a
/// byte of answer (while `drop_next` > 0), or answers 200 `ok` with `connection: close` — so
/// the gateway never pools a stream and every first attempt is on a fresh one. Like an app
/// whose listen queue overflowed under a burst of new connections: its kernel resets some of
/// them as the request arrives (seen as visitor 502s in `admin-events-bench` before the retry).
async fn dropping_app() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let app = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let app = app.clone();
            tokio::spawn(async move {
                if !read_head(&mut tcp).await {
                    return;
                }
                app.heads.fetch_add(1, Ordering::SeqCst);
                let take = |n: usize| n.checked_sub(1);
                if app
                    .drop_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
                    .is_ok()
                {
                    return;
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = tcp.write_all(answer).await;
            });
        }
    });
    (addr, seen)
}

/// Sends `req` with the app dropping its next `drop` connections: the status, the body and
/// how many times the request reached the app.
async fn attempts(seen: &Seen, drop: usize, req: reqwest::RequestBuilder) -> (u16, String, usize) {
    seen.drop_next.store(drop, Ordering::SeqCst);
    let before = seen.heads.load(Ordering::SeqCst);
    let resp = within(10, "request", req.send()).await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("body");
    seen.drop_next.store(0, Ordering::SeqCst);
    (status, body, seen.heads.load(Ordering::SeqCst) - before)
}

#[tokio::test]
async fn a_get_dropped_unanswered_on_a_fresh_stream_goes_once_more_and_a_post_never() {
    let (app, seen) = dropping_app().await;
    let (gw, _provider, client) = serve(app).await;
    let url = gw.url("app", "/");
    for i in 0..3 {
        let (status, body, heads) = attempts(&seen, 1, client.get(&url)).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "GET {i}: not retried");
        assert_eq!(heads, 2, "GET {i}: dropped once, answered once");
    }
    let (status, _, heads) = attempts(&seen, 2, client.get(&url)).await;
    assert_eq!((status, heads), (502, 2), "a GET goes out at most twice");
    // A request with a body may have reached the app: it is never replayed.
    let (status, _, heads) = attempts(&seen, 1, client.post(&url).body("x=1")).await;
    assert_eq!((status, heads), (502, 1), "a POST goes out once");
}

/// Sends `raw` on a fresh visitor TLS connection and returns everything the gateway answers
/// until it closes or goes quiet.
async fn raw_exchange(gw: &TestGateway, raw: &[u8]) -> String {
    let mut tls = peercompute_tests::raw_tls(gw, "app").await;
    tls.write_all(raw).await.expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(2), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// An app published as `app` with one idle stream to it in the pool (one request made).
async fn warm_app() -> Published {
    let published = publish(GatewayOptions::default(), "app").await;
    let client = https_client(&published.gw, &["app"], Alpn::H1);
    echo(&client, published.gw.url("app", "/echo")).await;
    published
}

#[tokio::test]
async fn a_visitor_cannot_desynchronise_a_shared_app_connection() {
    let Published {
        gw,
        provider: _provider,
        backend,
    } = warm_app().await;

    // Framing conflicts a front end and a back end may read differently (CL.TE, TE.CL,
    // duplicate Content-Length), each with what the gateway must answer: Transfer-Encoding
    // wins over Content-Length (RFC 9112 §6.3) and the visitor's connection is closed after it;
    // two lengths are refused.
    let attacks: [(&[u8], &str); 3] = [
        (
            b"POST /echo HTTP/1.1\r\nHost: app.apps.test\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK",
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: app.apps.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK",
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: app.apps.test\r\nContent-Length: 6\r\nContent-Length: 40\r\n\r\nabcdef",
            "HTTP/1.1 400 Bad Request",
        ),
    ];
    let mut forwarded = 1;
    for (attack, status_line) in attacks {
        let answer = raw_exchange(&gw, attack).await;
        assert!(answer.starts_with(status_line), "{answer:?}");
        assert!(answer.contains("connection: close\r\n"), "{answer:?}");
        if status_line.contains("200") {
            forwarded += 1;
            // The app got one request with one framing: chunked, no Content-Length.
            let echoed = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
            assert!(
                echoed.starts_with("POST /echo\n")
                    && echoed.contains("\ntransfer-encoding: chunked\n")
                    && !echoed.contains("content-length"),
                "{echoed:?}"
            );
        }
        // Whatever the gateway answered, the next visitors get exactly their own responses.
        forwarded += next_visitors(&gw, 3).await;
    }
    assert_eq!(
        backend.requests(),
        forwarded,
        "the app saw exactly the requests the gateway forwarded"
    );
}

/// `count` visitors in turn, each of which must get exactly its own answer; returns how many
/// requests that made the app see. A fresh visitor connection: the one kept from earlier
/// requests may have been closed by the gateway's idle timeout meanwhile (2 s in the tests).
async fn next_visitors(gw: &TestGateway, count: usize) -> usize {
    let client = https_client(gw, &["app"], Alpn::H1);
    for i in 0..count {
        let body = echo(&client, gw.url("app", &format!("/echo?n={i}"))).await;
        assert!(
            body.starts_with(&format!("GET /echo?n={i}\n")),
            "another visitor's request leaked into this answer: {body}"
        );
    }
    count
}

/// Checklist B4, the malformed rest: obfuscated Transfer-Encoding, signed or listed lengths,
/// a chunk size past 64 bits, NUL and bare CR in a header, obsolete line folding. Each is
/// refused with 400 and a closed connection before anything reaches the app; a bare-LF request
/// and an Upgrade the app does not take are served, re-framed. After each, the next visitors
/// on the shared app connections get exactly their own responses.
#[tokio::test]
async fn malformed_framing_is_refused_before_it_reaches_a_shared_app_connection() {
    let Published {
        gw,
        provider: _provider,
        backend,
    } = warm_app().await;
    let host = "Host: app.apps.test\r\n";
    let refused: Vec<(&str, String)> = vec![
        (
            "TE not ending in chunked",
            format!(
                "POST /echo HTTP/1.1\r\n{host}Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\nhello"
            ),
        ),
        (
            "TE with a space before the colon",
            format!("POST /echo HTTP/1.1\r\n{host}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            "chunked, then identity",
            format!(
                "POST /echo HTTP/1.1\r\n{host}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "signed Content-Length",
            format!("POST /echo HTTP/1.1\r\n{host}Content-Length: +5\r\n\r\nhello"),
        ),
        (
            "two lengths in one field",
            format!("POST /echo HTTP/1.1\r\n{host}Content-Length: 5, 40\r\n\r\nhello"),
        ),
        (
            "NUL in a header value",
            format!("GET /echo HTTP/1.1\r\n{host}X-A: a\0b\r\n\r\n"),
        ),
        (
            "bare CR in a header value",
            format!("GET /echo HTTP/1.1\r\n{host}X-A: a\rb\r\n\r\n"),
        ),
        (
            "obsolete line folding",
            format!("GET /echo HTTP/1.1\r\n{host}X-A: a\r\n b\r\n\r\n"),
        ),
    ];
    let mut forwarded = 1;
    for (what, raw) in &refused {
        let answer = raw_exchange(&gw, raw.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request"),
            "{what}: {answer:?}"
        );
        assert_eq!(backend.requests(), forwarded, "{what} reached the app");
        forwarded += next_visitors(&gw, 2).await;
    }

    // A chunk size that overflows: the head is valid, the body is not. It is the visitor's
    // error (400, not a 502 blaming the provider), their connection is closed, and the app's
    // connection is not reused with a half-read body.
    let answer = raw_exchange(
        &gw,
        format!("POST /echo HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff1\r\nx\r\n0\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request")
            && answer.contains("connection: close\r\n")
            && answer.contains("invalid chunk size"),
        "an overflowing chunk size: {answer:?}"
    );
    // Whether the head reached the app before the body failed is a race: count what it saw
    // once the count holds still (50 ms apart, 2 s at most).
    forwarded = backend.requests();
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let now = backend.requests();
        if now == forwarded {
            break;
        }
        forwarded = now;
    }
    forwarded += next_visitors(&gw, 2).await;

    // Served, and re-framed for the app: bare LF line ends, and an Upgrade the app ignores.
    for (what, raw, seen) in [
        (
            "bare LF line ends",
            "GET /echo?lf HTTP/1.1\nHost: app.apps.test\n\n".to_owned(),
            "GET /echo?lf\n",
        ),
        (
            "Upgrade answered 200",
            format!(
                "GET /echo?up HTTP/1.1\r\n{host}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            ),
            "GET /echo?up\n",
        ),
    ] {
        let answer = raw_exchange(&gw, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{what}: {answer:?}");
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        assert!(body.starts_with(seen), "{what}: {body:?}");
        forwarded += 1;
        forwarded += next_visitors(&gw, 2).await;
    }
    assert_eq!(
        backend.requests(),
        forwarded,
        "the app saw exactly the requests the gateway forwarded"
    );
}
