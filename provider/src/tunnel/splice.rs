//! One data stream: read the header, check the route is ours, connect to its local target and
//! copy bytes both ways until both sides are done. Failures before any byte of the answer are
//! reported to the visitor as a small HTTP 502, so they see why instead of a reset.

use std::time::Duration;

use peercompute_tunnel_proto::read_stream_header;
use peercompute_tunnel_transport::BiStream;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use super::Routes;

const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn serve_stream(mut stream: BiStream, routes: Routes) {
    let (header, leftover) =
        match tokio::time::timeout(HEADER_TIMEOUT, read_stream_header(&mut stream)).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                debug!("bad stream header: {e}");
                stream.reset();
                return;
            }
            Err(_) => {
                stream.reset();
                return;
            }
        };
    let target = routes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&header.route)
        .cloned();
    let Some(target) = target else {
        debug!(route = %header.route, "stream for a route this provider did not register");
        answer_502(&mut stream, "this provider does not serve that name").await;
        return;
    };
    let tcp = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            debug!(route = %header.route, "cannot connect to {}:{}: {e}", target.host, target.port);
            answer_502(&mut stream, "the app is not accepting connections").await;
            return;
        }
        Err(_) => {
            answer_502(&mut stream, "the app did not accept the connection in time").await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let mut tcp = tcp;
    if !leftover.is_empty() && tcp.write_all(&leftover).await.is_err() {
        return;
    }
    match tokio::io::copy_bidirectional(&mut stream, &mut tcp).await {
        Ok((up, down)) => debug!(route = %header.route, up, down, "stream done"),
        Err(e) => debug!(route = %header.route, "stream ended: {e}"),
    }
}

async fn answer_502(stream: &mut BiStream, why: &str) {
    let body = format!("{why}\n");
    let resp = format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.finish().await;
}
