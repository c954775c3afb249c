//! The probes against local listeners (no Docker): servers answering 2xx, 404, 500, closing
//! at once, speaking something else, staying silent, and a closed port; the settle gate and
//! the status-line parser as tables.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;

const BUDGET: Duration = Duration::from_secs(5);

/// What a test server does with each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Reads the request head, answers `response`, closes.
    Answer(&'static str),
    /// Reads the request head, answers `response`, keeps the connection open.
    Hold(&'static str),
    /// Closes at once.
    Close,
    /// Accepts and says nothing.
    Silent,
}

/// A server on 127.0.0.1:0; each request head it read is sent to the receiver.
async fn server(behaviour: Behaviour) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    let (heads, received) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                match behaviour {
                    Behaviour::Close => drop(stream),
                    Behaviour::Silent => {
                        let mut sink = Vec::new();
                        let _ = stream.read_to_end(&mut sink).await;
                    }
                    Behaviour::Answer(response) | Behaviour::Hold(response) => {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 256];
                        while !head.ends_with(b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = heads.try_send(String::from_utf8_lossy(&head).into_owned());
                        let _ = stream.write_all(response.as_bytes()).await;
                        if matches!(behaviour, Behaviour::Hold(_)) {
                            let _ = stream.read_to_end(&mut head).await;
                        }
                    }
                }
            });
        }
    });
    (addr, received)
}

/// An address nothing listens on: bound, then released.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("bound")
}

#[tokio::test]
async fn a_2xx_answer_is_healthy_and_the_request_is_plain_http11() {
    let (addr, mut heads) = server(Behaviour::Answer(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ))
    .await;
    assert_eq!(probe_http(addr, "/healthz?deep=1", BUDGET).await, Ok(200));
    let head = heads.recv().await.expect("the server saw the request");
    assert!(
        head.starts_with("GET /healthz?deep=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains(&format!("\r\nHost: {addr}\r\n")), "{head}");
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");

    let (addr, _heads) = server(Behaviour::Answer("HTTP/1.0 204 No Content\r\n\r\n")).await;
    assert_eq!(probe_http(addr, "/", BUDGET).await, Ok(204));
}

#[tokio::test]
async fn other_statuses_fail_with_their_code() {
    for (response, code) in [
        ("HTTP/1.1 500 Internal Server Error\r\n\r\n", 500),
        (
            "HTTP/1.0 404 Not Found\r\nContent-Type: text/html\r\n\r\n<h1>",
            404,
        ),
        ("HTTP/1.1 301 Moved\r\nLocation: /x\r\n\r\n", 301),
    ] {
        let (addr, _heads) = server(Behaviour::Answer(response)).await;
        let failure = probe_http(addr, "/healthz", BUDGET)
            .await
            .expect_err(response);
        assert_eq!(failure, ProbeFailure::Status(code));
        assert_eq!(failure.to_string(), format!("it answered HTTP {code}"));
    }
}

#[tokio::test]
async fn a_closed_port_a_hang_up_garbage_and_silence_are_named() {
    let addr = closed_port().await;
    let failure = probe_http(addr, "/", BUDGET).await.expect_err("closed");
    assert!(
        matches!(&failure, ProbeFailure::Connect(e) if e.contains("refused")),
        "{failure:?}"
    );
    assert!(matches!(
        probe_port(addr, BUDGET).await,
        Err(ProbeFailure::Connect(_))
    ));

    let (addr, _heads) = server(Behaviour::Close).await;
    assert_eq!(
        probe_http(addr, "/", BUDGET).await,
        Err(ProbeFailure::Closed)
    );
    assert_eq!(probe_port(addr, BUDGET).await, Err(ProbeFailure::Closed));

    let (addr, _heads) = server(Behaviour::Answer("SSH-2.0-OpenSSH_9.2\r\n")).await;
    assert_eq!(
        probe_http(addr, "/", BUDGET).await,
        Err(ProbeFailure::NotHttp("SSH-2.0-OpenSSH_9.2\r\n".to_owned()))
    );

    let (addr, _heads) = server(Behaviour::Silent).await;
    let short = Duration::from_millis(300);
    let begun = Instant::now();
    assert_eq!(
        probe_http(addr, "/", short).await,
        Err(ProbeFailure::NoAnswer(short))
    );
    assert!(begun.elapsed() < BUDGET, "{:?}", begun.elapsed());
    // A server that holds the connection without speaking is what a port check wants.
    assert_eq!(probe_port(addr, BUDGET).await, Ok(()));
}

#[tokio::test]
async fn an_endless_status_line_is_read_only_up_to_the_bound() {
    // The server sends 4 KiB without a line break and keeps the connection open: the probe
    // stops after MAX_STATUS_LINE bytes instead of waiting for the rest.
    let endless: &'static str = format!("HTTP/1.1 200 {}", "x".repeat(4096)).leak();
    let (addr, _heads) = server(Behaviour::Hold(endless)).await;
    assert_eq!(probe_http(addr, "/", BUDGET).await, Ok(200));
    let garbage: &'static str = "x".repeat(4096).leak();
    let (addr, _heads) = server(Behaviour::Hold(garbage)).await;
    let failure = probe_http(addr, "/", BUDGET).await.expect_err("not HTTP");
    assert_eq!(failure, ProbeFailure::NotHttp("x".repeat(64)));
}

#[test]
fn status_lines_table() {
    let cases: [(&[u8], Option<u16>); 12] = [
        (b"HTTP/1.1 200 OK\r\n", Some(200)),
        (b"HTTP/1.0 404 Not Found\r\nServer: x\r\n", Some(404)),
        (b"HTTP/1.1 204\r\n", Some(204)),
        (b"HTTP/1.1 503 Service Unavailable", Some(503)),
        (b"HTTP/1.1 200 OK\n", Some(200)),
        (b"HTTP/2 200\r\n", None),
        (b"HTTP/1.1 20\r\n", None),
        (b"HTTP/1.1 2000 OK\r\n", None),
        (b"HTTP/1.x 200 OK\r\n", None),
        (b"http/1.1 200 OK\r\n", None),
        (b"HTTP/1.1  200 OK\r\n", None),
        (b"", None),
    ];
    for (line, expected) in cases {
        assert_eq!(
            parse_status_line(line),
            expected,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn the_gate_needs_the_settle_period_without_a_failure() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);

    let mut first_pass = Gate::new(Duration::ZERO);
    assert!(first_pass.pass(at(0)));

    let mut gate = Gate::new(Duration::from_millis(500));
    assert!(!gate.pass(at(0)));
    assert!(!gate.pass(at(300)));
    gate.fail();
    assert!(!gate.pass(at(400)), "a failure restarts the period");
    assert!(!gate.pass(at(800)));
    assert!(gate.pass(at(900)));
}

#[test]
fn health_paths_are_checked() {
    let check = |path: &str| HealthCheck {
        path: Some(path.to_owned()),
        settle: Duration::ZERO,
    };
    assert!(check("/healthz").validate().is_ok());
    assert!(check("/a/b?c=d&e=%20").validate().is_ok());
    for (path, why) in [
        ("healthz", "start with /"),
        ("/a b", "visible ASCII"),
        ("/a\r\nX-Injected: 1", "visible ASCII"),
        ("/é", "visible ASCII"),
    ] {
        let err = check(path).validate().expect_err(path);
        assert!(err.to_string().contains(why), "{path}: {err}");
    }
    let long = format!("/{}", "a".repeat(MAX_PATH));
    assert!(check(&long).validate().is_err());
    let port = HealthCheck {
        path: None,
        settle: Duration::from_secs(2),
    };
    assert!(port.validate().is_ok());
    assert_eq!(port.to_string(), "the port accepting connections for 2s");
    assert_eq!(check("/h").to_string(), "GET /h answering 2xx");
}
