//! The tunnel's TLS client configuration, for QUIC and for TCP alike: the provider authenticates with its Ed25519 identity
//! certificate and checks the gateway either by pinned peer id or by a CA. A pinned check
//! that fails notes the key the gateway presented ([`PinMismatch`]): a wrong pin is a
//! configuration error to report once, not a network fault to retry.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peercompute_identity::{
    Identity, PeerId, PinnedPeerServerVerifier, peer_id_from_cert, self_signed_cert,
};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::TunnelCongestion;

/// SNI sent when the gateway's key is pinned (matches the gateway's resolver).
pub(crate) const PINNED_SNI: &str = "gateway.peercompute.invalid";

/// Why the client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read the gateway CA {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error(
        "no system root certificates found; pin the gateway (--gateway PEERID@HOST:PORT) or pass --gateway-ca FILE"
    )]
    NoRoots,
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// The key a gateway presented when it was not the pinned one. A handshake refused for that
/// reason reaches the tunnel client only as a string inside quinn's error, so the verifier
/// leaves the ids here for the client to read after a failed connect.
#[derive(Debug, Default)]
pub(crate) struct PinMismatch(Mutex<Option<PeerId>>);

impl PinMismatch {
    /// The presented id of the last refused handshake, cleared by reading it.
    pub(crate) fn take(&self) -> Option<PeerId> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// [`PinnedPeerServerVerifier`], noting in [`PinMismatch`] which key a refused gateway
/// presented.
#[derive(Debug)]
struct NotingPinVerifier {
    pinned: PeerId,
    inner: Arc<PinnedPeerServerVerifier>,
    mismatch: Arc<PinMismatch>,
}

impl ServerCertVerifier for NotingPinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(presented) = peer_id_from_cert(end_entity)
            && presented != self.pinned
        {
            *self.mismatch.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(presented);
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The client configurations of both transports, which authenticate the same way.
pub(crate) struct ClientConfigs {
    pub(crate) quic: quinn::ClientConfig,
    /// TLS over TCP to the gateway's HTTPS port (ALPN `peercompute-tunnel/1` only).
    pub(crate) tcp: Arc<rustls::ClientConfig>,
    /// Set when the gateway's key is pinned: what a refused gateway presented.
    pub(crate) mismatch: Option<Arc<PinMismatch>>,
}

/// Builds the QUIC and TCP client configs; with a pinned gateway, also where a refused
/// gateway's key is noted.
pub(crate) fn client_config(
    identity: &Identity,
    pinned: Option<PeerId>,
    ca: Option<&Path>,
    congestion: TunnelCongestion,
) -> Result<ClientConfigs, TlsSetupError> {
    let (cert, key) =
        self_signed_cert(identity, &[]).map_err(|e| TlsSetupError::Tls(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsSetupError::Tls(e.to_string()))?;
    let (builder, mismatch) = match pinned {
        Some(peer) => {
            let mismatch = Arc::new(PinMismatch::default());
            let verifier = NotingPinVerifier {
                pinned: peer,
                inner: PinnedPeerServerVerifier::new(peer),
                mismatch: mismatch.clone(),
            };
            let builder = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier));
            (builder, Some(mismatch))
        }
        None => (builder.with_root_certificates(roots(ca)?), None),
    };
    let mut tls = builder
        .with_client_auth_cert(vec![cert], key)
        .map_err(|e| TlsSetupError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![peercompute_tunnel_proto::ALPN.to_vec()];
    let tcp = Arc::new(tls.clone());
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsSetupError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        // The gateway opens one stream per visitor request toward us.
        .max_concurrent_bidi_streams(4096u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .receive_window((32u32 * 1024 * 1024).into())
        .stream_receive_window((4u32 * 1024 * 1024).into())
        .send_window(32 * 1024 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .max_idle_timeout(Some(
            Duration::from_secs(30)
                .try_into()
                .expect("30 s is a valid QUIC idle timeout"),
        ))
        .congestion_controller_factory(quic_congestion(congestion));
    config.transport_config(Arc::new(transport));
    Ok(ClientConfigs {
        quic: config,
        tcp,
        mismatch,
    })
}

/// quinn's controller for a [`TunnelCongestion`] choice, with quinn's default parameters.
fn quic_congestion(
    choice: TunnelCongestion,
) -> Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
    use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
    match choice {
        TunnelCongestion::Cubic => Arc::new(CubicConfig::default()),
        TunnelCongestion::Bbr => Arc::new(BbrConfig::default()),
        TunnelCongestion::NewReno => Arc::new(NewRenoConfig::default()),
    }
}

fn roots(ca: Option<&Path>) -> Result<rustls::RootCertStore, TlsSetupError> {
    let mut store = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let err = |reason: String| TlsSetupError::Ca {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| err(e.to_string()))?;
                store.add(cert).map_err(|e| err(e.to_string()))?;
            }
            if store.is_empty() {
                return Err(err("no CERTIFICATE block found".into()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(TlsSetupError::NoRoots);
            }
        }
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PEM armour for a DER certificate (standard base64, 64 columns).
    fn pem(der: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
                } else {
                    b64.push('=');
                }
            }
        }
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).expect("ascii"))
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    fn cert() -> CertificateDer<'static> {
        let id = Identity::generate().expect("identity");
        self_signed_cert(&id, &["gw.example.com".to_owned()])
            .expect("cert")
            .0
    }

    #[test]
    fn a_ca_bundle_is_read_from_pem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        let (a, b) = (cert(), cert());
        let bundle = format!("# two roots\n{}\nsome text\n{}", pem(&a), pem(&b));
        std::fs::write(&path, bundle).expect("write");
        let store = roots(Some(&path)).expect("a bundle of two certificates");
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let err = roots(Some(&path)).expect_err("no certificate");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read the gateway CA {}: no CERTIFICATE block found",
                path.display()
            )
        );
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let err = roots(Some(&path)).expect_err("bad base64");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read the gateway CA {}: ", path.display())),
            "{err}"
        );
        let missing = dir.path().join("missing.pem");
        assert!(roots(Some(&missing)).is_err());
    }
}
