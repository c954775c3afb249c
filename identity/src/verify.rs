//! rustls verifiers that authenticate by Ed25519 key instead of by CA.
//!
//! - [`AnyEd25519ClientVerifier`] (gateway side): accepts any client certificate that carries
//!   an Ed25519 key and proves possession in the TLS 1.3 handshake. Whether that peer id may
//!   use the gateway is decided after the handshake, against the allowlist, so the refusal can
//!   carry a reason the provider's operator can read.
//! - [`PinnedPeerServerVerifier`] (provider side): accepts only the gateway whose key has the
//!   pinned peer id.

use std::sync::Arc;

use libp2p_identity::PeerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use crate::cert::peer_id_from_cert;

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

fn verify_tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(Error::General(format!(
            "signature scheme {:?} refused: only Ed25519 identities are accepted",
            dss.scheme
        )));
    }
    rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
}

fn tls12_refused() -> Result<HandshakeSignatureValid, Error> {
    Err(Error::General(
        "TLS 1.2 is not accepted for identity authentication".into(),
    ))
}

/// Gateway-side client verifier: any Ed25519-keyed certificate, checked for possession.
#[derive(Debug, Default)]
pub struct AnyEd25519ClientVerifier;

impl AnyEd25519ClientVerifier {
    /// A shareable instance for `ServerConfig::builder().with_client_cert_verifier`.
    pub fn new_arc() -> Arc<Self> {
        Arc::new(Self)
    }
}

impl ClientCertVerifier for AnyEd25519ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        peer_id_from_cert(end_entity).map_err(|e| Error::General(e.to_string()))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

/// Provider-side server verifier: the gateway must present the pinned peer id's key.
#[derive(Debug)]
pub struct PinnedPeerServerVerifier {
    expected: PeerId,
}

impl PinnedPeerServerVerifier {
    /// Accept only a server whose certificate carries the key of `expected`.
    pub fn new(expected: PeerId) -> Arc<Self> {
        Arc::new(Self { expected })
    }
}

impl ServerCertVerifier for PinnedPeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let got = peer_id_from_cert(end_entity).map_err(|e| Error::General(e.to_string()))?;
        if got != self.expected {
            return Err(Error::General(format!(
                "gateway identity mismatch: pinned {}, the server presented {got}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}
