//! The tunnel end-to-end suite of `tunnel_http.rs` (HTTP/1.1, HTTP/2, WebSocket, SSE, large
//! bodies with their SHA-256) with every provider on the TCP transport: TLS 1.3 to the
//! gateway's HTTPS port, told apart from visitors by ALPN, and yamux inside
//! ([`peercompute_tests::suite_transport`] picks TCP from this binary's name).

#[path = "tunnel_http.rs"]
mod suite;

use peercompute_provider::{Transport, TunnelStatus};
use peercompute_tests::{GatewayOptions, Published, publish, within};

#[tokio::test]
async fn providers_of_this_binary_are_on_tcp_and_the_gateway_lists_them_so() {
    let Published { gw, provider, .. } = publish(GatewayOptions::default(), "app").await;
    match provider.handle.status() {
        TunnelStatus::Connected { transport, .. } => assert_eq!(transport, Transport::Tcp),
        other => panic!("expected a connection, got {other:?}"),
    }
    let body = within(10, "provider list", gw.admin_get("/api/v1/providers")).await;
    let providers: serde_json::Value = serde_json::from_str(&body).expect("providers JSON");
    let list = providers.as_array().expect("a provider list");
    assert_eq!(list.len(), 1, "{providers}");
    assert_eq!(list[0]["transport"], "tcp", "{providers}");
}
