//! HTTPS clients that trust a test gateway's dev CA.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::gateway::{DOMAIN, TestGateway};

/// Which HTTP version to offer in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H1,
    H2,
}

fn tls_config(gw: &TestGateway, alpn: &[&[u8]]) -> rustls::ClientConfig {
    tls_config_for(&gw.ca_pem, alpn)
}

fn tls_config_for(ca_pem: &[u8], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg
}

/// A client for `https://<name>.apps.test:<port>` for each of `names`, resolving them to the
/// gateway and trusting its dev CA.
pub fn https_client(gw: &TestGateway, names: &[&str], alpn: Alpn) -> reqwest::Client {
    https_client_from(gw, names, alpn, None)
}

/// An HTTP/1.1 client for `https://<name>.apps.test` for each of `names`, resolving them to
/// `https` (a gateway started apart, e.g. the binary in a network namespace) and trusting
/// `ca_pem`.
pub fn https_client_to(
    ca_pem: &[u8],
    https: std::net::SocketAddr,
    names: &[&str],
) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls_config_for(ca_pem, &[b"http/1.1"]))
        .http1_only()
        .no_proxy();
    for name in names {
        builder = builder.resolve(&format!("{name}.{DOMAIN}"), https);
    }
    builder.build().expect("reqwest client")
}

/// [`https_client`] whose connections leave from `local` (any 127.0.0.0/8 address works on
/// loopback), so tests can show the gateway several visitors.
pub fn https_client_from(
    gw: &TestGateway,
    names: &[&str],
    alpn: Alpn,
    local: Option<std::net::IpAddr>,
) -> reqwest::Client {
    let protos: &[&[u8]] = match alpn {
        Alpn::H1 => &[b"http/1.1"],
        Alpn::H2 => &[b"h2"],
    };
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(gw, protos))
        .local_address(local)
        .no_proxy();
    builder = match alpn {
        Alpn::H1 => builder.http1_only(),
        Alpn::H2 => builder,
    };
    for name in names {
        builder = builder.resolve(&format!("{name}.{DOMAIN}"), gw.https);
    }
    builder.build().expect("reqwest client")
}

/// A raw TLS (HTTP/1.1 ALPN) connection to the gateway with SNI `<name>.apps.test`.
pub async fn raw_tls(gw: &TestGateway, name: &str) -> TlsStream<TcpStream> {
    raw_tls_alpn(gw, name, b"http/1.1").await
}

/// A raw TLS connection to the gateway with SNI `<name>.apps.test`, offering ALPN `alpn`.
pub async fn raw_tls_alpn(gw: &TestGateway, name: &str, alpn: &[u8]) -> TlsStream<TcpStream> {
    let connector = TlsConnector::from(Arc::new(tls_config(gw, &[alpn])));
    let tcp = TcpStream::connect(gw.https).await.expect("connect gateway");
    let sni = ServerName::try_from(format!("{name}.{DOMAIN}")).expect("server name");
    connector.connect(sni, tcp).await.expect("TLS handshake")
}
