//! Raw HTTP/2 frames over TLS for the abuse tests (checklist B6): hyper's own client would
//! never send what these do.

use std::time::Duration;

use tokio::io::AsyncReadExt;

/// One HTTP/2 frame: 24-bit length, type, flags, stream id.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame size");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// The client preface and an empty SETTINGS frame.
pub fn h2_preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    out
}

/// An HPACK block for `METHOD https://app.apps.test/` (static-table entries and one literal).
pub fn h2_request_block(post: bool) -> Vec<u8> {
    let authority = b"app.apps.test";
    let mut block = vec![if post { 0x83 } else { 0x82 }, 0x87, 0x84, 0x41];
    block.push(u8::try_from(authority.len()).expect("short"));
    block.extend(authority);
    block
}

/// Reads frames from `conn` until a GOAWAY (its error code) or the end of the connection
/// (`None`), within `secs`.
pub async fn h2_until_goaway<S: AsyncReadExt + Unpin>(conn: &mut S, secs: u64) -> Option<u32> {
    let read = async {
        let mut head = [0u8; 9];
        loop {
            conn.read_exact(&mut head).await.ok()?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            conn.read_exact(&mut payload).await.ok()?;
            if head[3] == 0x7 && payload.len() >= 8 {
                return Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(secs), read)
        .await
        .unwrap_or_else(|_| panic!("the gateway neither sent GOAWAY nor closed within {secs} s"))
}
