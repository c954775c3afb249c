//! Readiness: a deployment answers once its container is running and its published port
//! accepts connections. [`DockerRuntime::wait_ready`] probes both until a deadline; when the
//! container exits or the deadline passes, the error carries the container's last log lines,
//! which is usually all a person needs to see why.
//!
//! The engine's userland proxy accepts connections on the published port even when nothing
//! listens in the container, and then closes them at once. So a probe connects, then waits
//! briefly: an immediate end-of-stream or reset means "not listening yet"; data or silence
//! means a server holds the connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::container::ContainerError;
use crate::engine::DockerRuntime;
use crate::logs::format_log_lines;
use crate::status::ContainerState;

/// How many log lines a readiness error carries.
pub const READY_LOG_LINES: usize = 20;
/// Pause between two probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a probe waits for the proxy to close a connection nobody accepted.
const PROBE_SETTLE: Duration = Duration::from_millis(100);
/// Longest a single connect attempt may take.
const PROBE_CONNECT: Duration = Duration::from_secs(1);

/// The container never became ready.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    /// It stopped before its port accepted connections.
    #[error(
        "container {container} is {state} (exit code {}{}) before its port accepted connections; its last log lines:\n{}",
        .exit_code.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
        if *.oom_killed { ", killed for exceeding its memory limit" } else { "" },
        format_log_lines(.logs)
    )]
    Exited {
        /// The container.
        container: String,
        /// `exited`, `restarting` or `dead`.
        state: ContainerState,
        /// Its exit code.
        exit_code: Option<i64>,
        /// Whether the OOM killer ended it.
        oom_killed: bool,
        /// Its last log lines.
        logs: Vec<String>,
    },
    /// The deadline passed first.
    #[error(
        "container {container} did not accept connections on {addr} within {timeout:?} (it is {state}): check that it listens on the port given; its last log lines:\n{}",
        format_log_lines(.logs)
    )]
    Timeout {
        /// The container.
        container: String,
        /// The address probed.
        addr: SocketAddr,
        /// The deadline.
        timeout: Duration,
        /// Its state when the deadline passed.
        state: ContainerState,
        /// Its last log lines.
        logs: Vec<String>,
    },
    /// The container could not be inspected (gone, engine failure).
    #[error(transparent)]
    Container(#[from] ContainerError),
}

impl ReadyError {
    /// The container's last log lines, if this error carries them.
    pub fn logs(&self) -> &[String] {
        match self {
            ReadyError::Exited { logs, .. } | ReadyError::Timeout { logs, .. } => logs,
            ReadyError::Container(_) => &[],
        }
    }
}

impl DockerRuntime {
    /// Waits until `container` runs and `addr` (its published port) accepts connections,
    /// for at most `timeout`.
    pub async fn wait_ready(
        &self,
        container: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(), ReadyError> {
        let deadline = Instant::now() + timeout;
        loop {
            let inspect = self.inspect(container).await?;
            let state = inspect.state.unwrap_or_default();
            let status = state
                .status
                .map(ContainerState::from)
                .unwrap_or(ContainerState::Unknown);
            match status {
                ContainerState::Running => {
                    if probe(addr, deadline).await {
                        return Ok(());
                    }
                }
                ContainerState::Exited
                | ContainerState::Dead
                | ContainerState::Restarting
                | ContainerState::Removing => {
                    return Err(ReadyError::Exited {
                        container: container.to_owned(),
                        state: status,
                        exit_code: state.exit_code,
                        oom_killed: state.oom_killed.unwrap_or(false),
                        logs: self.last_lines(container, READY_LOG_LINES).await,
                    });
                }
                ContainerState::Created | ContainerState::Paused | ContainerState::Unknown => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadyError::Timeout {
                    container: container.to_owned(),
                    addr,
                    timeout,
                    state: status,
                    logs: self.last_lines(container, READY_LOG_LINES).await,
                });
            }
            tokio::time::sleep_until(deadline.min(now + PROBE_INTERVAL)).await;
        }
    }
}

/// Whether a server accepts and holds a connection on `addr`.
async fn probe(addr: SocketAddr, deadline: Instant) -> bool {
    let connect_deadline = deadline.min(Instant::now() + PROBE_CONNECT);
    let Ok(Ok(mut stream)) =
        tokio::time::timeout_at(connect_deadline, TcpStream::connect(addr)).await
    else {
        return false;
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(PROBE_SETTLE, stream.read(&mut byte)).await {
        // Silence: a server holds the connection and waits for a request.
        Err(_elapsed) => true,
        // The server spoke first.
        Ok(Ok(n)) if n > 0 => true,
        // End of stream or reset: the proxy found nobody listening.
        Ok(_) => false,
    }
}
