//! Peer-pinned images: the digest any holder of an image can prove. Docker 20.10 keeps neither
//! the manifest nor the compressed blobs of a pulled image, but what it does keep is provable:
//! the image id is the sha256 of the config bytes, and `docker save` reproduces every layer tar
//! byte-exact to its `diff_id`. So [`peer_manifest`] builds an OCI image manifest from exactly
//! those (config bytes, then each layer's diff_id and size, layers **uncompressed**,
//! `application/vnd.oci.image.layer.v1.tar`), as canonical JSON (fixed key order, no
//! whitespace), and its sha256 is the release's digest. A fetcher checks a manifest's bytes
//! against the digest, then [`PeerManifest::parse`] refuses anything but the canonical form,
//! then every blob against the digest the manifest names.
//!
//! Also here, pure over readers and writers: [`SaveIndex`] finds the config and the layer tars
//! inside a `docker save` archive (byte ranges, so a server streams a blob straight from the
//! file), and [`write_save_archive`] writes the archive `docker load` takes from verified blobs.
//!
//! ```text
//!  {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
//!   "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:…","size":N},
//!   "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"<diff_id>","size":N},…]}
//! ```

use std::collections::HashMap;
use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

/// The manifest's media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config's media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// An uncompressed layer's media type (its digest is its diff_id).
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Largest manifest accepted (a few hundred layers).
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Largest image config read into memory.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
/// Most layers in one image (the overlay driver's limit is 128).
pub const MAX_LAYERS: usize = 128;

/// A blob named by its digest (`sha256:<64 lowercase hex>`) and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Descriptor {
    pub digest: String,
    pub size: u64,
}

/// A canonical peer manifest: its bytes, their digest, and the blobs it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerManifest {
    /// The canonical JSON.
    pub bytes: Vec<u8>,
    /// `sha256:` of the bytes: what a release pins.
    pub digest: String,
    /// The config blob; its digest is the engine's image id.
    pub config: Descriptor,
    /// The layer tars, base first; each digest is the layer's diff_id.
    pub layers: Vec<Descriptor>,
}

/// Why an image could not be described or read.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{0:?} is not a sha256 digest (sha256:<64 lowercase hex>)")]
    BadDigest(String),
    #[error("the manifest's bytes hash to {found}, not the pinned {expected}")]
    DigestMismatch { expected: String, found: String },
    #[error("the manifest is not a canonical peer manifest: {0}")]
    NotCanonical(String),
    #[error("the image archive is unusable: {0}")]
    Archive(String),
    #[error("reading the image archive: {0}")]
    Io(#[from] io::Error),
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex_of(&Sha256::digest(bytes)))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Whether `digest` is `sha256:<64 lowercase hex>`.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The canonical manifest of the image whose config is `config` and whose layers (base first)
/// are `layers` (diff_id, uncompressed size).
pub fn peer_manifest(config: &[u8], layers: &[Descriptor]) -> Result<PeerManifest, OciError> {
    let config = Descriptor {
        digest: sha256_digest(config),
        size: config.len() as u64,
    };
    build(config, layers.to_vec())
}

fn build(config: Descriptor, layers: Vec<Descriptor>) -> Result<PeerManifest, OciError> {
    if layers.len() > MAX_LAYERS {
        return Err(OciError::NotCanonical(format!(
            "{} layers, over the {MAX_LAYERS} allowed",
            layers.len()
        )));
    }
    for d in std::iter::once(&config).chain(&layers) {
        if !is_sha256_digest(&d.digest) {
            return Err(OciError::BadDigest(d.digest.clone()));
        }
    }
    // Digests are checked to be plain ASCII above, so no JSON escaping is needed.
    let descriptor = |media: &str, d: &Descriptor| {
        format!(
            r#"{{"mediaType":"{media}","digest":"{}","size":{}}}"#,
            d.digest, d.size
        )
    };
    let layer_json: Vec<String> = layers
        .iter()
        .map(|d| descriptor(LAYER_MEDIA_TYPE, d))
        .collect();
    let json = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_MEDIA_TYPE}","config":{},"layers":[{}]}}"#,
        descriptor(CONFIG_MEDIA_TYPE, &config),
        layer_json.join(",")
    );
    let bytes = json.into_bytes();
    Ok(PeerManifest {
        digest: sha256_digest(&bytes),
        bytes,
        config,
        layers,
    })
}

impl PeerManifest {
    /// Checks `bytes` hash to `expected` and are a canonical peer manifest, and returns it.
    pub fn parse(bytes: &[u8], expected: &str) -> Result<PeerManifest, OciError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(OciError::NotCanonical(format!(
                "{} bytes, over the {MAX_MANIFEST_BYTES} allowed",
                bytes.len()
            )));
        }
        let found = sha256_digest(bytes);
        if found != expected {
            return Err(OciError::DigestMismatch {
                expected: expected.to_owned(),
                found,
            });
        }
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| OciError::NotCanonical(format!("not JSON: {e}")))?;
        let descriptor = |v: &serde_json::Value| -> Result<Descriptor, OciError> {
            let digest = v["digest"].as_str().unwrap_or_default().to_owned();
            let size = v["size"]
                .as_u64()
                .ok_or_else(|| OciError::NotCanonical("a descriptor has no size".into()))?;
            Ok(Descriptor { digest, size })
        };
        let config = descriptor(&value["config"])?;
        let layers = value["layers"]
            .as_array()
            .ok_or_else(|| OciError::NotCanonical("no layers array".into()))?
            .iter()
            .map(descriptor)
            .collect::<Result<Vec<_>, _>>()?;
        let rebuilt = build(config, layers)?;
        if rebuilt.bytes != bytes {
            return Err(OciError::NotCanonical(
                "it differs from the canonical form of what it names".into(),
            ));
        }
        Ok(rebuilt)
    }

    /// Every blob: the config, then the layers.
    pub fn blobs(&self) -> Vec<Descriptor> {
        std::iter::once(self.config.clone())
            .chain(self.layers.iter().cloned())
            .collect()
    }
}

/// Where one blob lies inside a `docker save` archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveRange {
    /// Offset of the first byte of the file's data in the archive.
    pub offset: u64,
    pub size: u64,
}

/// The image inside a `docker save` archive (the first one it holds).
#[derive(Debug, Clone)]
pub struct SaveIndex {
    /// The canonical peer manifest of the image.
    pub manifest: PeerManifest,
    /// The config's bytes (its sha256 is the image id).
    pub config: Vec<u8>,
    /// Each blob of the manifest (config and layers) and where it lies in the archive.
    pub ranges: HashMap<String, ArchiveRange>,
    /// The tags the archive gives the image.
    pub repo_tags: Vec<String>,
}

impl SaveIndex {
    /// Reads a `docker save` archive through once. Layer bytes are not hashed here (the
    /// fetcher verifies every blob); the config is, as the manifest names its digest.
    pub fn read(archive: impl Read) -> Result<SaveIndex, OciError> {
        let bad = |what: String| OciError::Archive(what);
        let mut files: HashMap<String, ArchiveRange> = HashMap::new();
        let mut links: HashMap<String, String> = HashMap::new();
        let mut small: HashMap<String, Vec<u8>> = HashMap::new();
        let mut tar = tar::Archive::new(archive);
        for entry in tar.entries()? {
            let mut entry = entry?;
            let path = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            let kind = entry.header().entry_type();
            if kind.is_symlink() {
                if let Some(target) = entry.link_name()? {
                    links.insert(path, target.to_string_lossy().into_owned());
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let size = entry.size();
            files.insert(
                path.clone(),
                ArchiveRange {
                    offset: entry.raw_file_position(),
                    size,
                },
            );
            if path.ends_with(".json") && size <= MAX_CONFIG_BYTES {
                let mut bytes = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut bytes)?;
                small.insert(path, bytes);
            }
        }
        let manifest_json = small
            .get("manifest.json")
            .ok_or_else(|| bad("no manifest.json: not a docker save archive".into()))?;
        let manifest: serde_json::Value = serde_json::from_slice(manifest_json)
            .map_err(|e| bad(format!("manifest.json is not JSON: {e}")))?;
        let image = &manifest[0];
        let config_path = image["Config"]
            .as_str()
            .ok_or_else(|| bad("manifest.json names no Config".into()))?;
        let config = small
            .get(config_path)
            .ok_or_else(|| bad(format!("the config {config_path} is missing or too large")))?
            .clone();
        let config_value: serde_json::Value = serde_json::from_slice(&config)
            .map_err(|e| bad(format!("the config is not JSON: {e}")))?;
        let diff_ids: Vec<&str> = config_value["rootfs"]["diff_ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let layer_paths: Vec<&str> = image["Layers"]
            .as_array()
            .map(|l| l.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if layer_paths.len() != diff_ids.len() {
            return Err(bad(format!(
                "{} layer files for {} diff_ids",
                layer_paths.len(),
                diff_ids.len()
            )));
        }
        let mut ranges = HashMap::new();
        let mut layers = Vec::new();
        for (path, diff_id) in layer_paths.iter().zip(&diff_ids) {
            let range = resolve(path, &files, &links)
                .ok_or_else(|| bad(format!("the layer file {path} is missing")))?;
            layers.push(Descriptor {
                digest: (*diff_id).to_owned(),
                size: range.size,
            });
            ranges.insert((*diff_id).to_owned(), range);
        }
        let manifest = peer_manifest(&config, &layers)?;
        let config_range = files
            .get(config_path)
            .copied()
            .ok_or_else(|| bad(format!("the config {config_path} is missing")))?;
        ranges.insert(manifest.config.digest.clone(), config_range);
        let repo_tags = image["RepoTags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(SaveIndex {
            manifest,
            config,
            ranges,
            repo_tags,
        })
    }
}

/// A file's range, following one symlink (docker save links a layer met twice to its first
/// copy: `<id>/layer.tar -> ../<other>/layer.tar`).
fn resolve(
    path: &str,
    files: &HashMap<String, ArchiveRange>,
    links: &HashMap<String, String>,
) -> Option<ArchiveRange> {
    if let Some(range) = files.get(path) {
        return Some(*range);
    }
    let target = links.get(path)?;
    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            p => parts.push(p),
        }
    }
    files.get(&parts.join("/")).copied()
}

/// Writes the `docker load` archive of `manifest`'s image: `manifest.json`, the config as
/// `<hex>.json`, each layer as `<hex>/layer.tar` read from `open(digest)`, tagged `tags`.
pub fn write_save_archive<W: Write, R: Read>(
    out: W,
    manifest: &PeerManifest,
    config: &[u8],
    tags: &[String],
    mut open: impl FnMut(&Descriptor) -> io::Result<R>,
) -> Result<W, OciError> {
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    let config_name = format!("{}.json", hex(&manifest.config.digest));
    let layer_names: Vec<String> = manifest
        .layers
        .iter()
        .map(|l| format!("{}/layer.tar", hex(&l.digest)))
        .collect();
    let save_manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": tags,
        "Layers": layer_names,
    }])
    .to_string();
    let mut builder = tar::Builder::new(out);
    append(
        &mut builder,
        "manifest.json",
        save_manifest.len() as u64,
        save_manifest.as_bytes(),
    )?;
    append(&mut builder, &config_name, config.len() as u64, config)?;
    let mut seen = std::collections::HashSet::new();
    for (layer, name) in manifest.layers.iter().zip(&layer_names) {
        if !seen.insert(name.clone()) {
            continue;
        }
        let reader = open(layer)?;
        append(&mut builder, name, layer.size, reader)?;
    }
    Ok(builder.into_inner()?)
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, data)
}

#[cfg(test)]
mod tests;
