//! A tiny DNS client for the tests: one question over UDP, the answer's RCODE and records.
//! Independent of the gateway's RFC 2136 code, so it checks what bind9 really serves.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

/// Record types the tests ask for.
pub const TYPE_A: u16 = 1;
pub const TYPE_TXT: u16 = 16;

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// 0 NOERROR, 3 NXDOMAIN, ...
    pub rcode: u8,
    /// Number of answer records of the asked type.
    pub records: usize,
    /// TXT strings (each record's character-strings joined).
    pub txt: Vec<String>,
}

/// Asks `server` for `name`/`qtype` (no recursion); `None` if nothing came back in 1 s.
pub async fn query(server: SocketAddr, name: &str, qtype: u16) -> Option<Answer> {
    let id: u16 = rand::random();
    let mut msg = Vec::with_capacity(64);
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // flags 0, QD 1
    for label in name.trim_end_matches('.').split('.') {
        msg.push(u8::try_from(label.len()).expect("label length"));
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    msg.extend_from_slice(&qtype.to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes()); // IN
    let sock = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    sock.send_to(&msg, server).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    parse(&buf[..n], id, qtype)
}

fn parse(b: &[u8], id: u16, qtype: u16) -> Option<Answer> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
    if u16_at(0)? != id {
        return None;
    }
    let rcode = b.get(3)? & 0x0f;
    let (qd, an) = (u16_at(4)?, u16_at(6)?);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(b, i)? + 4;
    }
    let (mut records, mut txt) = (0, Vec::new());
    for _ in 0..an {
        i = skip_name(b, i)?;
        let rtype = u16_at(i)?;
        let rdlen = usize::from(u16_at(i + 8)?);
        let rdata = b.get(i + 10..i + 10 + rdlen)?;
        i += 10 + rdlen;
        if rtype != qtype {
            continue;
        }
        records += 1;
        if rtype == TYPE_TXT {
            let (mut j, mut s) = (0, String::new());
            while j < rdata.len() {
                let len = usize::from(rdata[j]);
                s.push_str(&String::from_utf8_lossy(rdata.get(j + 1..j + 1 + len)?));
                j += 1 + len;
            }
            txt.push(s);
        }
    }
    Some(Answer {
        rcode,
        records,
        txt,
    })
}

/// Index just past the (possibly compressed) name at `i`.
fn skip_name(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *b.get(i)?;
        if len & 0xc0 == 0xc0 {
            return Some(i + 2);
        }
        if len == 0 {
            return Some(i + 1);
        }
        i += 1 + usize::from(len);
    }
}
