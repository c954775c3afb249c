//! A minimal RFC 2136 client: add and delete one TXT record with a TSIG-signed UPDATE, and
//! ask the same (authoritative) server which TXT values it serves for a name.
//!
//! Messages are built and signed with `hickory-proto`; the transport is ours: one TCP
//! connection per message (DNS over TCP, 2-byte length prefix), so there is no UDP
//! truncation or retransmission to handle. Responses to updates must carry a valid TSIG
//! signature; a refusal is reported with the server's RCODE so the operator can fix the key
//! or the zone's update policy.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use hickory_proto::op::{Message, Query, ResponseCode, update_message};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, RecordSet, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Each exchange (connect, send, answer) gets this long.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a DNS exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DnsError {
    #[error("cannot resolve DNS server {server}: {reason}")]
    Resolve { server: String, reason: String },
    #[error("DNS server {server}: {source}")]
    Io {
        server: SocketAddr,
        source: std::io::Error,
    },
    #[error("DNS server {server} did not answer within {EXCHANGE_TIMEOUT:?}")]
    Timeout { server: SocketAddr },
    #[error("DNS message: {0}")]
    Message(String),
    #[error(
        "DNS server {server} refused the update of {name}: {rcode} (check the TSIG key and the \
         zone's update policy)"
    )]
    Refused {
        server: SocketAddr,
        name: String,
        rcode: ResponseCode,
    },
    #[error("DNS server {server} answered {rcode} for {name}")]
    Query {
        server: SocketAddr,
        name: String,
        rcode: ResponseCode,
    },
    #[error("the answer of DNS server {server} has a bad TSIG signature: {reason}")]
    BadSignature { server: SocketAddr, reason: String },
}

/// Publishes and removes TXT records in one zone on one primary server.
#[derive(Clone)]
pub(crate) struct Rfc2136 {
    server: String,
    zone: Name,
    signer: TSigner,
}

impl std::fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("zone", &self.zone.to_string())
            .finish_non_exhaustive()
    }
}

impl Rfc2136 {
    /// `server` is `HOST[:PORT]` (port 53 by default); `zone` the zone's apex.
    pub(crate) fn new(server: &str, zone: &str, signer: TSigner) -> Result<Self, DnsError> {
        Ok(Self {
            server: server.to_owned(),
            zone: fqdn(zone)?,
            signer,
        })
    }

    /// Adds `value` to the TXT set of `name` (other values stay).
    pub(crate) async fn add_txt(&self, name: &str, value: &str, ttl: u32) -> Result<(), DnsError> {
        let rrset = self.txt_set(name, value, ttl)?;
        let msg = update_message::append(rrset, self.zone.clone(), false, false);
        self.update(name, msg).await
    }

    /// Removes `value` from the TXT set of `name` (absent already: not an error).
    pub(crate) async fn delete_txt(&self, name: &str, value: &str) -> Result<(), DnsError> {
        let rrset = self.txt_set(name, value, 0)?;
        let msg = update_message::delete_by_rdata(rrset, self.zone.clone(), false);
        self.update(name, msg).await
    }

    /// The TXT values the server answers for `name` (none for NXDOMAIN).
    pub(crate) async fn query_txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let qname = fqdn(name)?;
        let mut msg = Message::query();
        msg.metadata.recursion_desired = false;
        msg.add_query(Query::query(qname, RecordType::TXT));
        let bytes = msg.to_vec().map_err(|e| DnsError::Message(e.to_string()))?;
        let (server, answer) = self.exchange(&bytes).await?;
        let answer = Message::from_vec(&answer).map_err(|e| DnsError::Message(e.to_string()))?;
        match answer.metadata.response_code {
            ResponseCode::NoError => {}
            ResponseCode::NXDomain => return Ok(Vec::new()),
            rcode => {
                return Err(DnsError::Query {
                    server,
                    name: name.to_owned(),
                    rcode,
                });
            }
        }
        Ok(answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }

    /// Whether `name` lies in this client's zone.
    pub(crate) fn covers(&self, name: &str) -> bool {
        fqdn(name).is_ok_and(|n| self.zone.zone_of(&n))
    }

    fn txt_set(&self, name: &str, value: &str, ttl: u32) -> Result<RecordSet, DnsError> {
        let owner = fqdn(name)?;
        if !self.zone.zone_of(&owner) {
            return Err(DnsError::Message(format!(
                "{name} is not in zone {}",
                self.zone
            )));
        }
        let mut rrset = RecordSet::with_ttl(owner, RecordType::TXT, ttl);
        rrset.add_rdata(RData::TXT(TXT::new(vec![value.to_owned()])));
        Ok(rrset)
    }

    async fn update(&self, name: &str, mut msg: Message) -> Result<(), DnsError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let verifier = msg
            .finalize(&self.signer, now)
            .map_err(|e| DnsError::Message(e.to_string()))?;
        let bytes = msg.to_vec().map_err(|e| DnsError::Message(e.to_string()))?;
        let (server, answer) = self.exchange(&bytes).await?;
        let parsed = Message::from_vec(&answer).map_err(|e| DnsError::Message(e.to_string()))?;
        if parsed.metadata.id != msg.metadata.id {
            return Err(DnsError::Message(
                "answer id does not match the update".into(),
            ));
        }
        if parsed.metadata.response_code != ResponseCode::NoError {
            // Refusals for a bad key come unsigned (RFC 8945 5.3.2): report the code.
            return Err(DnsError::Refused {
                server,
                name: name.to_owned(),
                rcode: parsed.metadata.response_code,
            });
        }
        let Some(mut verifier) = verifier else {
            return Err(DnsError::Message("TSIG signer gave no verifier".into()));
        };
        verifier
            .verify(&answer)
            .map_err(|e| DnsError::BadSignature {
                server,
                reason: e.to_string(),
            })?;
        Ok(())
    }

    /// Sends one message over TCP and reads one answer.
    async fn exchange(&self, bytes: &[u8]) -> Result<(SocketAddr, Vec<u8>), DnsError> {
        let server = self.resolve().await?;
        let io = |source| DnsError::Io { server, source };
        let len = u16::try_from(bytes.len())
            .map_err(|_| DnsError::Message("message longer than 65535 bytes".into()))?;
        let work = async {
            let mut tcp = TcpStream::connect(server).await.map_err(io)?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(bytes);
            tcp.write_all(&framed).await.map_err(io)?;
            let answer_len = tcp.read_u16().await.map_err(io)?;
            let mut answer = vec![0u8; usize::from(answer_len)];
            tcp.read_exact(&mut answer).await.map_err(io)?;
            Ok(answer)
        };
        match tokio::time::timeout(EXCHANGE_TIMEOUT, work).await {
            Ok(Ok(answer)) => Ok((server, answer)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DnsError::Timeout { server }),
        }
    }

    async fn resolve(&self) -> Result<SocketAddr, DnsError> {
        let resolve_err = |reason: String| DnsError::Resolve {
            server: self.server.clone(),
            reason,
        };
        if let Ok(addr) = self.server.parse::<SocketAddr>() {
            return Ok(addr);
        }
        if let Ok(ip) = self.server.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, 53));
        }
        let target = if self.server.contains(':') {
            self.server.clone()
        } else {
            format!("{}:53", self.server)
        };
        tokio::net::lookup_host(target)
            .await
            .map_err(|e| resolve_err(e.to_string()))?
            .next()
            .ok_or_else(|| resolve_err("no address".into()))
    }
}

fn fqdn(name: &str) -> Result<Name, DnsError> {
    let mut n = Name::from_ascii(name.trim_end_matches('.'))
        .map_err(|e| DnsError::Message(format!("{name:?} is not a DNS name: {e}")))?;
    n.set_fqdn(true);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::acme::tsig::TsigKey;

    fn client() -> Rfc2136 {
        let key = TsigKey::parse(
            "key \"k\" {\nalgorithm hmac-sha256;\nsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\";\n};",
        )
        .expect("key");
        Rfc2136::new("127.0.0.1:53", "example.com", key.signer().expect("signer")).expect("new")
    }

    #[test]
    fn zone_membership_is_checked_before_building() {
        let c = client();
        assert!(c.covers("_acme-challenge.apps.example.com"));
        assert!(c.covers("example.com."));
        assert!(!c.covers("_acme-challenge.example.org"));
        assert!(c.txt_set("_acme-challenge.example.org", "v", 60).is_err());
    }

    #[test]
    fn update_is_signed_and_well_formed() {
        let c = client();
        let rrset = c
            .txt_set("_acme-challenge.apps.example.com", "token-value", 60)
            .expect("rrset");
        let mut msg = update_message::append(rrset, c.zone.clone(), false, false);
        msg.finalize(&c.signer, 1_700_000_000).expect("sign");
        let bytes = msg.to_vec().expect("encode");
        let back = Message::from_vec(&bytes).expect("decode");
        assert_eq!(back.metadata.op_code, hickory_proto::op::OpCode::Update);
        assert!(back.signature.is_some(), "TSIG record present");
        // Our own verifier accepts the bytes it signed (a server would do the same check).
        c.signer
            .verify_message_byte(&bytes, None, true)
            .expect("signature verifies");
    }

    #[tokio::test]
    async fn unreachable_server_is_an_error_not_a_hang() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = free.local_addr().expect("addr");
        drop(free);
        let c = Rfc2136 {
            server: addr.to_string(),
            ..client()
        };
        let err = c.query_txt("example.com").await.expect_err("refused");
        assert!(matches!(err, DnsError::Io { .. }), "{err}");
    }
}
