//! A forwarding proxy in front of the Docker engine's socket, so that a test can make the
//! engine stop answering for one daemon (its `docker_endpoint`) without touching the engine
//! every other test uses. Each connection to `<tmp>/docker.sock` is spliced to
//! `/var/run/docker.sock`; [`DockerProxy::stop`] drops the listener and every open connection,
//! [`DockerProxy::start_again`] listens again on the same path.

use std::path::PathBuf;

use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

/// The engine socket the proxy forwards to.
pub const ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// A running (or stopped) forwarder; stopped when dropped.
#[derive(Debug)]
pub struct DockerProxy {
    _dir: tempfile::TempDir,
    path: PathBuf,
    task: Option<JoinHandle<()>>,
}

impl DockerProxy {
    /// Listens on a fresh `<tmp>/docker.sock`.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("proxy dir");
        let path = dir.path().join("docker.sock");
        let mut proxy = Self {
            _dir: dir,
            path,
            task: None,
        };
        proxy.start_again();
        proxy
    }

    /// `unix://<tmp>/docker.sock`, for `ProviderConfig::docker_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Drops the listener and every forwarded connection: the engine stops answering here.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// Listens again (after [`stop`](Self::stop)).
    pub fn start_again(&mut self) {
        self.stop();
        let listener = UnixListener::bind(&self.path).expect("bind the proxy socket");
        self.task = Some(tokio::spawn(forward(listener)));
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts and splices until aborted; aborting drops the set, which aborts every splice.
async fn forward(listener: UnixListener) {
    let mut splices = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut visitor, _)) = accepted else { continue };
                splices.spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect(ENGINE_SOCKET).await {
                        let _ = tokio::io::copy_bidirectional(&mut visitor, &mut engine).await;
                    }
                });
            }
            Some(_) = splices.join_next(), if !splices.is_empty() => {}
        }
    }
}
