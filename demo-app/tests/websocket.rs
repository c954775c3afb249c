//! `/ws` through a real WebSocket client: the counter ticks once a second and text messages
//! come back as `{"echo": …}`.

mod common;

use std::net::SocketAddr;

use common::{start, within};
use futures_util::{SinkExt, StreamExt};
use peercompute_demo::Info;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(addr: SocketAddr) -> Client {
    let (ws, resp) = within(
        "WebSocket handshake",
        connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .expect("WebSocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next JSON text message that has `key`, skipping the others.
async fn next_with(ws: &mut Client, key: &str) -> Value {
    within(&format!("a message with {key:?}"), async {
        loop {
            let msg = ws.next().await.expect("stream open").expect("valid frame");
            if let Message::Text(text) = msg {
                let value: Value = serde_json::from_str(&text).expect("JSON message");
                if value.get(key).is_some() {
                    return value;
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn counter_starts_at_zero_and_increments() {
    let addr = start(Info::default()).await;
    let mut ws = connect(addr).await;
    let first = next_with(&mut ws, "counter").await;
    let second = next_with(&mut ws, "counter").await;
    assert_eq!(first, serde_json::json!({ "counter": 0 }));
    assert_eq!(second, serde_json::json!({ "counter": 1 }));
}

#[tokio::test]
async fn text_messages_are_echoed_as_json() {
    let addr = start(Info::default()).await;
    let mut ws = connect(addr).await;
    for text in ["hello", r#"quotes " and \ and <tags>"#, "ünïcödé ✓"] {
        within("send", ws.send(Message::text(text)))
            .await
            .expect("send");
        let echo = next_with(&mut ws, "echo").await;
        assert_eq!(echo, serde_json::json!({ "echo": text }));
    }
}

#[tokio::test]
async fn close_is_answered_and_the_connection_ends() {
    let addr = start(Info::default()).await;
    let mut ws = connect(addr).await;
    within("close", ws.close(None)).await.expect("close");
    within("end of stream", async {
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
        }
    })
    .await;
}
