//! [`LocalRegistry`]: Debian's `docker-registry` run by a test on 127.0.0.1 with a port the
//! kernel picks (read back from the registry's "listening on" line) and storage in a
//! temporary directory, so the real pull path can be tested with no network. The engine
//! treats 127.0.0.0/8 registries as plain-HTTP ones, so no TLS is needed. Killed on drop.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::TestSupportError;
use crate::engine::{DockerRuntime, EngineError, engine_message};

/// Where Debian's `docker-registry` installs its binary.
pub const REGISTRY_PATH: &str = "/usr/bin/docker-registry";
/// How long the registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running throw-away registry.
#[derive(Debug)]
pub struct LocalRegistry {
    addr: SocketAddr,
    _child: Child,
    _storage: tempfile::TempDir,
}

impl LocalRegistry {
    /// Starts `docker-registry` on 127.0.0.1 and an ephemeral port.
    pub async fn start() -> Result<Self, TestSupportError> {
        let storage = tempfile::tempdir()?;
        let config = storage.path().join("config.yml");
        let data = storage.path().join("data");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
                data.display()
            ),
        )?;
        let mut child = Command::new(REGISTRY_PATH)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TestSupportError::RegistryMissing {
                path: REGISTRY_PATH,
                source,
            })?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| TestSupportError::RegistryStart("no stderr pipe".to_owned()))?;
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let addr = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = listening_addr(&line) {
                    return Some(addr);
                }
                seen.push(line);
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            TestSupportError::RegistryStart(format!(
                "no \"listening on\" line within {START_TIMEOUT:?}; it said: {}",
                seen.join(" | ")
            ))
        })?;
        // Keep reading its log so the pipe never fills and blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(LocalRegistry {
            addr,
            _child: child,
            _storage: storage,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The registry part of image references: `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Tags the engine's `local` image as `repository:tag` (`repository` must start with
    /// [`host`](Self::host)) and pushes it here.
    pub async fn push(
        &self,
        runtime: &DockerRuntime,
        local: &str,
        repository: &str,
        tag: &str,
    ) -> Result<(), TestSupportError> {
        let reference = format!("{repository}:{tag}");
        let options = TagImageOptions {
            repo: Some(repository.to_owned()),
            tag: Some(tag.to_owned()),
        };
        runtime
            .docker
            .tag_image(local, Some(options))
            .await
            .map_err(|source| EngineError {
                operation: "tag image",
                target: local.to_owned(),
                source,
            })?;
        let options = PushImageOptions {
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let mut push = runtime.docker.push_image(repository, Some(options), None);
        while let Some(event) = push.next().await {
            if let Err(source) = event {
                return Err(TestSupportError::Push {
                    image: reference,
                    detail: engine_message(&source),
                });
            }
        }
        Ok(())
    }
}

/// The address in the registry's `msg="listening on 127.0.0.1:38027"` log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let end = rest
        .find(|c: char| c == '"' || c.is_whitespace())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        let line = r#"time="2026-01-01T00:00:00Z" level=info msg="listening on 127.0.0.1:38027" go.version=go1.19.8"#;
        assert_eq!(listening_addr(line), "127.0.0.1:38027".parse().ok());
        assert_eq!(
            listening_addr("level=info msg=\"redis not configured\""),
            None
        );
    }
}
