//! [`ScratchImage`]: an image with one layer made of the files given, loaded into the engine
//! through its `docker load` endpoint (an image archive built here: layer tar, image config,
//! manifest). No registry, no Dockerfile build, and the config — command, environment,
//! ports, labels, even the declared architecture — is exactly what the test says.

use std::collections::{BTreeMap, BTreeSet};

use bollard::query_parameters::ImportImageOptions;
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::TestSupportError;
use crate::engine::{DockerRuntime, EngineError, engine_message};

/// One file of a [`ScratchImage`].
#[derive(Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Absolute path in the image (`/bin/busybox`).
    pub path: String,
    /// Its contents.
    pub contents: Vec<u8>,
    /// Its Unix mode (`0o755`).
    pub mode: u32,
}

impl std::fmt::Debug for ImageFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFile")
            .field("path", &self.path)
            .field("bytes", &self.contents.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// An image `FROM scratch` with the given files and config. Build it with
/// [`load`](Self::load).
#[derive(Debug, Clone)]
pub struct ScratchImage {
    tag: String,
    files: Vec<ImageFile>,
    cmd: Vec<String>,
    env: Vec<String>,
    ports: Vec<u16>,
    labels: BTreeMap<String, String>,
    volumes: Vec<String>,
    architecture: Option<String>,
}

impl ScratchImage {
    /// An empty image to be tagged `tag` (`name:tag`; `:latest` if no tag is given).
    pub fn new(tag: &str) -> Self {
        ScratchImage {
            tag: tag.to_owned(),
            files: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            ports: Vec::new(),
            labels: BTreeMap::new(),
            volumes: Vec::new(),
            architecture: None,
        }
    }

    /// Adds a file (parent directories are created with mode 0755).
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push(ImageFile {
            path: path.to_owned(),
            contents: contents.into(),
            mode,
        });
        self
    }

    /// Sets the command (`CMD`, exec form).
    pub fn cmd<S: Into<String>>(mut self, cmd: impl IntoIterator<Item = S>) -> Self {
        self.cmd = cmd.into_iter().map(Into::into).collect();
        self
    }

    /// Adds an environment variable (`ENV`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push(format!("{key}={value}"));
        self
    }

    /// Declares a TCP port (`EXPOSE`).
    pub fn expose(mut self, port: u16) -> Self {
        self.ports.push(port);
        self
    }

    /// Adds a label (`LABEL`).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Declares a volume (`VOLUME`): the engine gives each container an anonymous volume
    /// there.
    pub fn volume(mut self, path: &str) -> Self {
        self.volumes.push(path.to_owned());
        self
    }

    /// Declares another CPU architecture than the host's (`arm64`), to test refusals.
    pub fn architecture(mut self, architecture: &str) -> Self {
        self.architecture = Some(architecture.to_owned());
        self
    }

    /// The tag the image gets.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Builds the image archive and loads it into the engine; returns the image id.
    pub async fn load(&self, runtime: &DockerRuntime) -> Result<String, TestSupportError> {
        let tag = if self
            .tag
            .rsplit('/')
            .next()
            .is_some_and(|name| name.contains(':'))
        {
            self.tag.clone()
        } else {
            format!("{}:latest", self.tag)
        };
        let architecture = self
            .architecture
            .clone()
            .unwrap_or_else(|| runtime.platform().architecture.clone());
        let archive = self.archive(&tag, &architecture)?;
        let mut events = runtime.docker.import_image(
            ImportImageOptions {
                quiet: true,
                ..Default::default()
            },
            bollard::body_full(archive.into()),
            None,
        );
        while let Some(event) = events.next().await {
            if let Err(source) = event {
                return Err(TestSupportError::Load {
                    tag,
                    detail: engine_message(&source),
                });
            }
        }
        let inspect = runtime.docker.inspect_image(&tag).await.map_err(|source| {
            TestSupportError::Engine(EngineError {
                operation: "inspect loaded image",
                target: tag.clone(),
                source,
            })
        })?;
        Ok(inspect.id.unwrap_or_default())
    }

    /// The `docker save` format: `manifest.json`, the config and one layer tar.
    fn archive(&self, tag: &str, architecture: &str) -> Result<Vec<u8>, TestSupportError> {
        let layer = self.layer()?;
        let diff_id = format!("sha256:{}", hex(&Sha256::digest(&layer)));
        let exposed: BTreeMap<String, serde_json::Value> = self
            .ports
            .iter()
            .map(|port| (format!("{port}/tcp"), json!({})))
            .collect();
        let mut config = json!({
            "architecture": architecture,
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {
                "Cmd": self.cmd,
                "Env": self.env,
                "ExposedPorts": exposed,
                "Labels": self.labels,
                "WorkingDir": "/",
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "peercompute testsupport" }],
        });
        if !self.volumes.is_empty() {
            // Only when asked, so every other image's config (and digest) stays as it was.
            let volumes: BTreeMap<&str, serde_json::Value> = self
                .volumes
                .iter()
                .map(|v| (v.as_str(), json!({})))
                .collect();
            config["config"]["Volumes"] = json!(volumes);
        }
        let config = config.to_string().into_bytes();
        let config_name = format!("{}.json", hex(&Sha256::digest(&config)));
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": [tag],
            "Layers": ["layer/layer.tar"],
        }])
        .to_string()
        .into_bytes();
        let mut archive = tar::Builder::new(Vec::new());
        append(&mut archive, "manifest.json", &manifest, 0o644)?;
        append(&mut archive, &config_name, &config, 0o644)?;
        append_dir(&mut archive, "layer/", 0o755)?;
        append(&mut archive, "layer/layer.tar", &layer, 0o644)?;
        Ok(archive.into_inner()?)
    }

    /// The layer: every parent directory, then every file, owned by root.
    fn layer(&self) -> Result<Vec<u8>, TestSupportError> {
        let mut dirs = BTreeSet::new();
        for file in &self.files {
            let relative = file
                .path
                .strip_prefix('/')
                .filter(|p| !p.is_empty() && p.split('/').all(|c| !matches!(c, "" | "." | "..")))
                .ok_or_else(|| TestSupportError::BadPath(file.path.clone()))?;
            let components: Vec<&str> = relative.split('/').collect();
            let mut parent = String::new();
            for component in &components[..components.len() - 1] {
                parent.push_str(component);
                parent.push('/');
                dirs.insert(parent.clone());
            }
        }
        let mut layer = tar::Builder::new(Vec::new());
        for dir in &dirs {
            append_dir(&mut layer, dir, 0o755)?;
        }
        for file in &self.files {
            append(&mut layer, &file.path[1..], &file.contents, file.mode)?;
        }
        Ok(layer.into_inner()?)
    }
}

fn append(
    archive: &mut tar::Builder<Vec<u8>>,
    path: &str,
    contents: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    archive.append_data(&mut header, path, contents)
}

fn append_dir(archive: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Directory);
    archive.append_data(&mut header, path, std::io::empty())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_holds_parents_then_files() {
        let image = ScratchImage::new("t")
            .file("/a/b/c.txt", "hi", 0o600)
            .file("/top", "x", 0o755);
        let layer = image.layer().expect("valid paths");
        let mut archive = tar::Archive::new(layer.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .expect("a tar we just wrote")
            .map(|e| {
                let e = e.expect("a tar we just wrote");
                let path = e.path().expect("utf-8 path").to_string_lossy().into_owned();
                (path, e.header().mode().expect("mode"))
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("a/".to_owned(), 0o755),
                ("a/b/".to_owned(), 0o755),
                ("a/b/c.txt".to_owned(), 0o600),
                ("top".to_owned(), 0o755),
            ]
        );
    }

    #[test]
    fn relative_or_dotted_paths_are_refused() {
        for path in ["relative", "/", "/a/../b", "/a//b", "/./a"] {
            let image = ScratchImage::new("t").file(path, "x", 0o644);
            assert!(
                matches!(image.layer(), Err(TestSupportError::BadPath(_))),
                "{path}"
            );
        }
    }
}
