//! Where load goes, and one keep-alive HTTP/1.1 connection to it.
//!
//! Direct: plain HTTP/1.1 over TCP to the backend. Through: HTTPS to the gateway as a visitor
//! reaches it — TLS trusting the gateway's dev CA, SNI and Host `bench.<domain>`, ALPN
//! `http/1.1` — so every byte crosses gateway → QUIC tunnel → provider → backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream hyper can drive: TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One side of the comparison.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) label: &'static str,
    pub(crate) addr: SocketAddr,
    /// Sent as Host (and, with TLS, as SNI).
    pub(crate) host: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("label", &self.label)
            .field("addr", &self.addr)
            .field("host", &self.host)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Target {
    /// Plain HTTP/1.1 to `addr`.
    pub(crate) fn plain(label: &'static str, addr: SocketAddr, host: &str) -> Self {
        Self {
            label,
            addr,
            host: host.to_owned(),
            tls: None,
        }
    }

    /// HTTPS to `addr` with SNI/Host `host`, trusting only the CA certificates in `ca_pem`.
    pub(crate) fn https(
        label: &'static str,
        addr: SocketAddr,
        host: &str,
        ca_pem: &[u8],
    ) -> anyhow::Result<Self> {
        Self::https_alpn(label, addr, host, ca_pem, b"http/1.1")
    }

    /// [`Target::https`] offering only `h2`: for [`Target::connect_h2`].
    pub(crate) fn https_h2(
        label: &'static str,
        addr: SocketAddr,
        host: &str,
        ca_pem: &[u8],
    ) -> anyhow::Result<Self> {
        Self::https_alpn(label, addr, host, ca_pem, b"h2")
    }

    fn https_alpn(
        label: &'static str,
        addr: SocketAddr,
        host: &str,
        ca_pem: &[u8],
        alpn: &[u8],
    ) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(cert.context("parse the dev CA PEM")?)
                .context("add the dev CA")?;
        }
        if roots.is_empty() {
            bail!("the dev CA file holds no certificate");
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        let sni = ServerName::try_from(host.to_owned()).context("SNI name")?;
        Ok(Self {
            label,
            addr,
            host: host.to_owned(),
            tls: Some((TlsConnector::from(Arc::new(cfg)), sni)),
        })
    }

    /// A new HTTP/2 connection (a target made by [`Target::https_h2`]); clone the sender
    /// for each concurrent stream. The connection closes when every clone is dropped.
    pub(crate) async fn connect_h2(&self) -> anyhow::Result<http2::SendRequest<Empty<Bytes>>> {
        let io = tokio::time::timeout(CONNECT_TIMEOUT, self.dial())
            .await
            .with_context(|| format!("connect to {} timed out", self.addr))??;
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// `GET https://host:port/path`, the absolute form HTTP/2 carries as `:authority`.
    pub(crate) fn get_h2(&self, path: &str) -> Request<Empty<Bytes>> {
        Request::get(format!("https://{}:{}{path}", self.host, self.addr.port()))
            .body(Empty::new())
            .expect("a host name, a port and a path make a valid URI")
    }

    /// A new keep-alive connection (TCP connect, TLS handshake if any, HTTP/1.1 handshake).
    pub(crate) async fn connect(&self) -> anyhow::Result<Conn> {
        let io = tokio::time::timeout(CONNECT_TIMEOUT, self.dial())
            .await
            .with_context(|| format!("connect to {} timed out", self.addr))??;
        let (sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
            .await
            .context("HTTP/1.1 handshake")?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender, driver })
    }

    async fn dial(&self) -> anyhow::Result<Box<dyn Io>> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect to {}", self.addr))?;
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        Ok(match &self.tls {
            None => Box::new(tcp),
            Some((connector, sni)) => Box::new(
                connector
                    .connect(sni.clone(), tcp)
                    .await
                    .context("TLS handshake")?,
            ),
        })
    }

    /// `GET path` with this target's Host.
    pub(crate) fn get(&self, path: &str) -> Request<Empty<Bytes>> {
        Request::get(path)
            .header(header::HOST, &self.host)
            .body(Empty::new())
            .expect("a path and a host name make a valid request")
    }
}

/// One open HTTP/1.1 connection; closed when dropped.
#[derive(Debug)]
pub(crate) struct Conn {
    sender: http1::SendRequest<Empty<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Conn {
    /// Sends `req` and returns the response head; the body is the caller's to read.
    pub(crate) async fn send(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> anyhow::Result<Response<Incoming>> {
        self.sender.ready().await.context("connection closed")?;
        self.sender
            .send_request(req)
            .await
            .context("request failed")
    }

    /// Sends `req`, reads the whole body, returns the status and the body length.
    pub(crate) async fn fetch(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> anyhow::Result<(StatusCode, u64)> {
        let (status, len, _) = self.fetch_detail(req).await?;
        Ok((status, len))
    }

    /// [`Conn::fetch`], also returning the start of the body of a non-2xx answer (what the
    /// gateway said).
    pub(crate) async fn fetch_detail(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> anyhow::Result<(StatusCode, u64, Option<String>)> {
        const KEEP: usize = 200;
        let resp = self.send(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut len = 0u64;
        let mut said = (!status.is_success()).then(Vec::new);
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.context("response body")?.data_ref() {
                len += data.len() as u64;
                if let Some(said) = said.as_mut().filter(|s| s.len() < KEEP) {
                    said.extend_from_slice(&data[..data.len().min(KEEP - said.len())]);
                }
            }
        }
        let said = said.map(|s| String::from_utf8_lossy(&s).trim().to_owned());
        Ok((status, len, said))
    }
}
