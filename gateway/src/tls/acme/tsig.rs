//! TSIG key files: the shared secret that signs RFC 2136 updates.
//!
//! Two layouts are read, the ones DNS servers print when they make a key:
//!
//! ```text
//! key "acme-gateway" {              # bind9: tsig-keygen -a hmac-sha256 acme-gateway
//!     algorithm hmac-sha256;        # PowerDNS: write this by hand from
//!     secret "c2VjcmV0...";         #   `pdnsutil generate-tsig-key acme-gateway hmac-sha256`
//! };
//!
//! key:                              # Knot: keymgr -t acme-gateway hmac-sha256
//!   - id: acme-gateway
//!     algorithm: hmac-sha256
//!     secret: c2VjcmV0...
//! ```
//!
//! Only HMAC-SHA-256/384/512 are accepted. The secret never appears in `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, TSigner};

/// Allowed difference between our clock and the DNS server's, in seconds.
const FUDGE_SECS: u16 = 300;

/// A parsed TSIG key.
#[derive(Clone)]
pub(crate) struct TsigKey {
    pub(crate) name: String,
    pub(crate) algorithm: TsigAlgorithm,
    secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<masked>")
            .finish()
    }
}

/// Why a TSIG key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TsigKeyError {
    #[error("cannot read TSIG key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TSIG key {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl TsigKey {
    /// Reads and parses `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, TsigKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TsigKeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| TsigKeyError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses the text of a key file (either layout).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let (mut name, mut algorithm, mut secret) = (None, None, None);
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let line = line.strip_prefix("- ").unwrap_or(line).trim();
            let (word, rest) = match line.split_once(|c: char| c == ':' || c.is_whitespace()) {
                Some((w, r)) => (w, r),
                None => (line, ""),
            };
            let value = rest
                .trim()
                .trim_end_matches(['{', ';'])
                .trim()
                .trim_matches('"')
                .to_owned();
            match word {
                "key" | "id" if !value.is_empty() => name = Some(value),
                "algorithm" => algorithm = Some(value),
                "secret" => secret = Some(value),
                _ => {}
            }
        }
        let name = name.ok_or("no key name (`key \"NAME\" {` or `id: NAME`)")?;
        let algorithm = match algorithm
            .ok_or("no `algorithm` line")?
            .to_ascii_lowercase()
            .trim_end_matches('.')
        {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(format!(
                    "algorithm {other:?} is not supported; use hmac-sha256, hmac-sha384 or hmac-sha512"
                ));
            }
        };
        let secret = STANDARD
            .decode(secret.ok_or("no `secret` line")?)
            .map_err(|e| format!("secret is not base64: {e}"))?;
        if secret.len() < 16 {
            return Err("secret is shorter than 16 bytes".into());
        }
        Ok(Self {
            name,
            algorithm,
            secret,
        })
    }

    /// The hickory signer for this key.
    pub(crate) fn signer(&self) -> Result<TSigner, String> {
        let name = Name::from_ascii(&self.name).map_err(|e| format!("key name: {e}"))?;
        TSigner::new(
            self.secret.clone(),
            self.algorithm.clone(),
            name,
            FUDGE_SECS,
        )
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==";

    #[test]
    fn bind_and_knot_layouts() {
        let bind =
            format!("key \"acme-gw\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n");
        let knot = format!(
            "# comment\nkey:\n  - id: acme-gw\n    algorithm: hmac-sha512\n    secret: {SECRET}\n"
        );
        let k = TsigKey::parse(&bind).expect("bind");
        assert_eq!(k.name, "acme-gw");
        assert_eq!(k.algorithm, TsigAlgorithm::HmacSha256);
        assert!(k.signer().is_ok());
        let k = TsigKey::parse(&knot).expect("knot");
        assert_eq!(k.name, "acme-gw");
        assert_eq!(k.algorithm, TsigAlgorithm::HmacSha512);
        assert!(!format!("{k:?}").contains(SECRET), "secret masked");
    }

    #[test]
    fn bad_files_say_why() {
        let cases = [
            ("", "key name"),
            ("key \"k\" {\nsecret \"eA==\";\n};", "algorithm"),
            (
                "key \"k\" {\nalgorithm hmac-md5;\nsecret \"eA==\";\n};",
                "not supported",
            ),
            ("key \"k\" {\nalgorithm hmac-sha256;\n};", "secret"),
            (
                "key \"k\" {\nalgorithm hmac-sha256;\nsecret \"!!\";\n};",
                "base64",
            ),
            (
                "key \"k\" {\nalgorithm hmac-sha256;\nsecret \"eA==\";\n};",
                "shorter",
            ),
        ];
        for (text, why) in cases {
            let err = TsigKey::parse(text).expect_err(text);
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }
}
