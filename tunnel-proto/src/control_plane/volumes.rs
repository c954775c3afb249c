//! The JSON bodies of the volume requests and answers, and their rules. A volume is always
//! named `APP/NAME` (`blog/data`): the app's name (a route name) and the volume's name in
//! it; the provider keeps one set per client (and per fleet), so the same words name another
//! client's volume apart from this one.
//!
//! ```text
//!  Signed{VolumesRequest}                   ◀─ VolumesResponse{volumes}
//!  Signed{VolumeRemoveRequest{volume}}      ◀─ VolumeRemoved{volume}
//!  Signed{VolumeExportRequest{volume}}      ◀─ VolumeData* VolumeEnd{bytes,sha256}
//!  Signed{VolumeImportRequest{volume,size_bytes,sha256,share_bytes,replace}}
//!      ─▶ VolumeData* (exactly size_bytes)  ◀─ VolumeEnd{bytes,sha256}
//! ```
//!
//! `VolumeData` is a raw body (a slice of a tar archive), not JSON, of at most
//! [`MAX_VOLUME_DATA`] bytes. Any answer may instead be `Error{code,message}`.

use serde::{Deserialize, Serialize};

use super::attach::{validate_share, validate_volume_name};
use super::validate::InvalidMessage;
use crate::name::validate_name;

/// Largest body of one `VolumeData` frame (64 KiB).
pub const MAX_VOLUME_DATA: usize = 64 * 1024;

/// List this client's volumes on the provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumesRequest {}

/// Remove a volume (`APP/NAME`); refused while any container mounts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeRemoveRequest {
    pub volume: String,
}

/// Stream a volume's files as a tar archive (entries `data/…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeExportRequest {
    pub volume: String,
}

/// Fill a volume from the tar archive that follows as `VolumeData` frames: exactly
/// `size_bytes` bytes whose SHA-256 is `sha256` (both signed, so fixed before any data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeImportRequest {
    pub volume: String,
    /// The archive's size in bytes.
    pub size_bytes: u64,
    /// The archive's SHA-256, 64 lowercase hex digits.
    pub sha256: String,
    /// The share of the provider's volume space to hold for it; the provider's default (or
    /// the volume's current share) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_bytes: Option<u64>,
    /// Replace what the volume holds (it must be unused); without it the volume must be
    /// absent or empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
}

/// One volume of a [`VolumesResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeInfo {
    /// `APP/NAME`.
    pub volume: String,
    /// Bytes it holds at the last measurement; `null` when not measured yet.
    #[serde(default)]
    pub used_bytes: Option<u64>,
    /// The share of the provider's volume space held for it.
    pub share_bytes: u64,
    /// The deployments that mount it (name and state, e.g. `blog (running)`).
    #[serde(default)]
    pub in_use_by: Vec<String>,
    /// When it was created (unix seconds), when the provider knows.
    #[serde(default)]
    pub created_at: Option<u64>,
}

/// Provider → client: the client's volumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumesResponse {
    pub volumes: Vec<VolumeInfo>,
}

/// Provider → client: the volume is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeRemoved {
    pub volume: String,
}

/// The end of a transfer: how many archive bytes went through and their SHA-256 (export:
/// what was sent; import: what was received, checked and written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeEnd {
    pub bytes: u64,
    pub sha256: String,
}

/// One volume's use, in a `StatusResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeUsage {
    /// `APP/NAME`.
    pub volume: String,
    /// Bytes it holds at the last measurement; `null` when not measured yet.
    #[serde(default)]
    pub used_bytes: Option<u64>,
    pub share_bytes: u64,
}

/// Checks a volume as requests name it: `APP/NAME`, APP a route name, NAME a volume name.
pub fn validate_volume_ref(volume: &str) -> Result<(), InvalidMessage> {
    let bad = |reason: String| InvalidMessage::VolumeRef {
        volume: volume.to_owned(),
        reason,
    };
    let Some((app, name)) = volume.split_once('/') else {
        return Err(bad("it is not APP/NAME (e.g. blog/data)".to_owned()));
    };
    validate_name(app).map_err(|e| bad(format!("the app: {e}")))?;
    validate_volume_name(name).map_err(|e| bad(e.to_string()))
}

/// Checks a SHA-256 as the volume messages carry it: 64 lowercase hex digits.
pub fn validate_sha256(sha256: &str) -> Result<(), InvalidMessage> {
    let ok = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(InvalidMessage::Sha256(sha256.chars().take(80).collect()))
    }
}

impl VolumeImportRequest {
    /// Checks the rules the types cannot express.
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        validate_volume_ref(&self.volume)?;
        validate_sha256(&self.sha256)?;
        if self.size_bytes == 0 {
            return Err(InvalidMessage::Zero("size_bytes"));
        }
        if let Some(bytes) = self.share_bytes {
            validate_share(&self.volume, bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_refs() {
        for ok in ["blog/data", "a/b", "my-app/db-1", "x/0"] {
            assert_eq!(validate_volume_ref(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "blog",
            "blog/",
            "/data",
            "blog/data/x",
            "blog/../etc",
            "../blog/data",
            "Blog/data",
            "blog/Data",
            "blog/docker.sock",
            "-blog/data",
        ] {
            let got = validate_volume_ref(bad);
            assert!(
                matches!(got, Err(InvalidMessage::VolumeRef { .. })),
                "{bad}: {got:?}"
            );
        }
        let msg = validate_volume_ref("blog")
            .expect_err("no name")
            .to_string();
        assert!(msg.contains("APP/NAME"), "{msg}");
    }

    #[test]
    fn import_requests() {
        let ok = VolumeImportRequest {
            volume: "blog/data".into(),
            size_bytes: 10240,
            sha256: "ab".repeat(32),
            share_bytes: None,
            replace: false,
        };
        assert_eq!(ok.validate(), Ok(()));
        let json = serde_json::to_string(&ok).expect("json");
        assert_eq!(
            json,
            format!(
                r#"{{"volume":"blog/data","size_bytes":10240,"sha256":"{}"}}"#,
                "ab".repeat(32)
            )
        );
        for (bad, variant) in [
            (
                VolumeImportRequest {
                    sha256: "AB".repeat(32),
                    ..ok.clone()
                },
                "Sha256",
            ),
            (
                VolumeImportRequest {
                    sha256: "ab".repeat(31),
                    ..ok.clone()
                },
                "Sha256",
            ),
            (
                VolumeImportRequest {
                    size_bytes: 0,
                    ..ok.clone()
                },
                "Zero",
            ),
            (
                VolumeImportRequest {
                    share_bytes: Some(0),
                    ..ok.clone()
                },
                "VolumeShareTooSmall",
            ),
            (
                VolumeImportRequest {
                    volume: "data".into(),
                    ..ok.clone()
                },
                "VolumeRef",
            ),
        ] {
            let got = bad.validate();
            assert!(
                got.as_ref()
                    .is_err_and(|e| format!("{e:?}").starts_with(variant)),
                "{bad:?}: {got:?}"
            );
        }
    }
}
