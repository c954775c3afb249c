//! The plain HTTP routes, as a browser or `curl` sees them: the page, `/api/info`,
//! `/healthz`, `/proc-status`, and the refusals (404, 405, 426).

mod common;

use common::{get, request, start};
use hyper::StatusCode;
use peercompute_demo::Info;

const XSS: &str = r#"<script>alert("x")</script>"#;

fn provider_info() -> Info {
    Info {
        provider: Some("12D3KooWProviderTest".into()),
        deployment: Some("dep-42".into()),
        name: Some("hello".into()),
        hostname: Some("c0ffee".into()),
        ..Info::default()
    }
}

#[tokio::test]
async fn page_shows_forwarded_headers_highlighted_and_escaped() {
    let addr = start(provider_info()).await;
    let reply = get(
        addr,
        "/",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "hello.example.test"),
            (
                "forwarded",
                "for=203.0.113.7;proto=https;host=hello.example.test",
            ),
            ("x-evil", XSS),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "text/html; charset=utf-8");
    let page = reply.body;
    for row in [
        r#"<tr class="fwd"><th>x-forwarded-for</th><td>203.0.113.7</td></tr>"#,
        r#"<tr class="fwd"><th>x-forwarded-proto</th><td>https</td></tr>"#,
        r#"<tr class="fwd"><th>x-forwarded-host</th><td>hello.example.test</td></tr>"#,
        r#"<tr class="fwd"><th>forwarded</th><td>for=203.0.113.7;proto=https;host=hello.example.test</td></tr>"#,
        &format!(r#"<tr class="fwd"><th>host</th><td>{addr}</td></tr>"#),
    ] {
        assert!(page.contains(row), "page lacks {row}");
    }
    assert!(
        page.contains(
            "<tr><th>x-evil</th><td>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</td></tr>"
        ),
        "header value not escaped"
    );
    assert!(
        !page.contains(XSS),
        "raw <script> from a header reached the page"
    );
    // Exactly one script element: the page's own.
    assert_eq!(page.matches("<script>").count(), 1);
}

#[tokio::test]
async fn page_names_the_provider_and_wires_the_websocket() {
    let addr = start(provider_info()).await;
    let page = get(addr, "/", &[]).await.body;
    assert!(page.contains("<title>hello on Peer Compute</title>"));
    assert!(page.contains("Served by provider <code>12D3KooWProviderTest</code>"));
    for value in ["dep-42", "c0ffee"] {
        assert!(page.contains(&format!("<td>{value}</td>")), "{value}");
    }
    // Self-contained: inline CSS and JS, the WebSocket scheme follows the page's.
    assert!(page.contains("<style>") && page.contains(r#""wss://" : "ws://""#));
    assert!(page.contains(r#"+ "/ws""#));
    for external in ["src=\"http", "href=\"http", "@import"] {
        assert!(!page.contains(external), "external asset: {external}");
    }
    assert!(page.contains("this request reached the container directly"));
}

#[tokio::test]
async fn api_info_is_json_with_provider_and_headers() {
    let addr = start(provider_info()).await;
    let reply = get(
        addr,
        "/api/info?x=1",
        &[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "10.0.0.9"),
            ("x-evil", XSS),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["cache-control"], "no-store");
    let json: serde_json::Value = serde_json::from_str(&reply.body).expect("valid JSON");
    assert_eq!(json["provider"], "12D3KooWProviderTest");
    assert_eq!(json["deployment"], "dep-42");
    assert_eq!(json["name"], "hello");
    assert_eq!(json["hostname"], "c0ffee");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["path"], "/api/info?x=1");
    assert!(json["uptime_secs"].is_u64());
    assert!(
        json["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
    let headers = &json["headers"];
    assert_eq!(headers["host"], addr.to_string());
    assert_eq!(headers["x-forwarded-for"], "198.51.100.1, 10.0.0.9");
    assert_eq!(headers["x-evil"], XSS, "JSON carries the value as sent");
}

#[tokio::test]
async fn api_info_reports_missing_environment_as_null() {
    let addr = start(Info::default()).await;
    let json: serde_json::Value =
        serde_json::from_str(&get(addr, "/api/info", &[]).await.body).expect("valid JSON");
    for key in ["provider", "deployment", "name", "hostname"] {
        assert!(json[key].is_null(), "{key}: {}", json[key]);
    }
}

#[tokio::test]
async fn healthz_says_ok() {
    let addr = start(Info::default()).await;
    let reply = get(addr, "/healthz", &[]).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn proc_status_shows_the_sandbox_fields() {
    let addr = start(Info::default()).await;
    let reply = get(addr, "/proc-status", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    for field in ["CapEff:", "NoNewPrivs:", "Seccomp:"] {
        assert!(reply.body.contains(field), "no {field} in {}", reply.body);
    }
}

#[tokio::test]
async fn head_is_served_without_a_body() {
    let addr = start(Info::default()).await;
    let reply = request(addr, "HEAD", "/healthz", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "");
}

#[tokio::test]
async fn refusals_say_why() {
    let addr = start(Info::default()).await;
    let missing = get(addr, "/nope", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let post = request(addr, "POST", "/", &[]).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers["allow"], "GET, HEAD");

    let plain_ws = get(addr, "/ws", &[]).await;
    assert_eq!(plain_ws.status, StatusCode::UPGRADE_REQUIRED);
    assert!(plain_ws.body.contains("WebSocket"));
}
