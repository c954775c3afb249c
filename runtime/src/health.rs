//! Health: the gate a fleet release passes before traffic moves to its new container.
//! [`DockerRuntime::wait_healthy`] polls the container's published address every 100 ms —
//! an HTTP/1.1 `GET` of the [`HealthCheck`]'s path that must answer 2xx, or, without a path,
//! a connection the port must accept and hold — and calls it healthy once the check has
//! passed on every probe for the settle period. If the container stops or the deadline
//! passes first, the [`HealthError`] says what the last probe saw (status code, connect
//! error) and carries the container's last log lines.
//!
//! The probes are small functions over a socket address, tested against local listeners;
//! the settle rule is a pure `Gate` fed with `now`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::container::ContainerError;
use crate::engine::DockerRuntime;
use crate::logs::format_log_lines;
use crate::ready::READY_LOG_LINES;
use crate::status::ContainerState;

/// Pause between two probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Longest one probe (connect, request, status line) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a port probe waits for the engine's proxy to close a connection nobody accepted
/// (it accepts on the published port even when nothing listens in the container).
const PORT_SETTLE: Duration = Duration::from_millis(100);
/// The most bytes read while looking for the status line.
const MAX_STATUS_LINE: usize = 512;
/// Longest health path accepted.
const MAX_PATH: usize = 2048;

/// How a new container proves it is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// An HTTP path (`/healthz`) that must answer 2xx; without one, the port must accept
    /// connections.
    pub path: Option<String>,
    /// How long the check must keep passing, on every probe, before the container counts as
    /// healthy. Zero: the first pass.
    pub settle: Duration,
}

impl HealthCheck {
    /// The path must be origin-form: starts with `/`, visible ASCII only (no spaces or line
    /// breaks that would change the request), at most 2048 bytes.
    fn validate(&self) -> Result<(), HealthError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let reason = if !path.starts_with('/') {
            "it must start with /"
        } else if path.len() > MAX_PATH {
            "it is longer than 2048 bytes"
        } else if !path.bytes().all(|b| b.is_ascii_graphic()) {
            "it may hold only visible ASCII characters (no spaces or control characters)"
        } else {
            return Ok(());
        };
        Err(HealthError::InvalidPath {
            path: path.clone(),
            reason,
        })
    }
}

impl fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "GET {path} answering 2xx")?,
            None => f.write_str("the port accepting connections")?,
        }
        if !self.settle.is_zero() {
            write!(f, " for {:?}", self.settle)?;
        }
        Ok(())
    }
}

/// A container that became healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// From the call until it was healthy.
    pub elapsed: Duration,
    /// Probes made.
    pub probes: u32,
    /// The last HTTP status, for a check with a path.
    pub status: Option<u16>,
}

/// What one failed probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// The connection was refused or could not be made.
    Connect(String),
    /// The connection closed before any answer: nothing listens in the container (yet).
    Closed,
    /// No answer within the probe's time.
    NoAnswer(Duration),
    /// The answer is not HTTP; its first bytes.
    NotHttp(String),
    /// The health path answered a status other than 2xx.
    Status(u16),
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeFailure::Connect(error) => write!(f, "connecting failed: {error}"),
            ProbeFailure::Closed => f.write_str(
                "the connection was closed without an answer (nothing listens in the container?)",
            ),
            ProbeFailure::NoAnswer(after) => write!(f, "no answer within {after:?}"),
            ProbeFailure::NotHttp(start) => write!(f, "the answer is not HTTP: {start:?}"),
            ProbeFailure::Status(code) => write!(f, "it answered HTTP {code}"),
        }
    }
}

/// What was seen of a container that did not become healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// The container.
    pub container: String,
    /// The address probed.
    pub addr: SocketAddr,
    /// What was checked.
    pub check: HealthCheck,
    /// Its state at the end: `running` after a timeout; `exited`, `restarting`, `dead` or
    /// `removing` when it stopped.
    pub state: ContainerState,
    /// Its exit code, when it stopped.
    pub exit_code: Option<i64>,
    /// How long it was given.
    pub timeout: Duration,
    /// What the last failed probe saw, if one failed.
    pub last: Option<ProbeFailure>,
    /// Its last log lines.
    pub logs: Vec<String>,
}

/// The container did not become healthy. The two outcomes with a container to show are
/// boxed [`Unhealthy`] records, so the error stays small to return.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The health path cannot be sent as a request.
    #[error("health path {path:?} is not usable: {reason}")]
    InvalidPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// It stopped before it was healthy.
    #[error(
        "container {} is {} (exit code {}) before it was healthy ({}; last probe: {}); its last log lines:\n{}",
        .0.container,
        .0.state,
        .0.exit_code.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
        .0.check,
        describe(.0.last.as_ref()),
        format_log_lines(&.0.logs)
    )]
    Exited(Box<Unhealthy>),
    /// The deadline passed first.
    #[error(
        "container {} was not healthy within {:?}: expected {} on {}; last probe: {} (it is {}); its last log lines:\n{}",
        .0.container,
        .0.timeout,
        .0.check,
        .0.addr,
        describe(.0.last.as_ref()),
        .0.state,
        format_log_lines(&.0.logs)
    )]
    Timeout(Box<Unhealthy>),
    /// The container could not be inspected (gone, engine failure).
    #[error(transparent)]
    Container(#[from] ContainerError),
}

impl HealthError {
    /// What was seen of the container, if it ran.
    pub fn unhealthy(&self) -> Option<&Unhealthy> {
        match self {
            HealthError::Exited(seen) | HealthError::Timeout(seen) => Some(seen),
            HealthError::InvalidPath { .. } | HealthError::Container(_) => None,
        }
    }

    /// The container's last log lines, if this error carries them.
    pub fn logs(&self) -> &[String] {
        self.unhealthy().map_or(&[], |seen| &seen.logs)
    }

    /// What the last failed probe saw, if one failed.
    pub fn last_failure(&self) -> Option<&ProbeFailure> {
        self.unhealthy().and_then(|seen| seen.last.as_ref())
    }
}

fn describe(last: Option<&ProbeFailure>) -> String {
    last.map_or_else(
        || "none failed (the container was not running, or not for the settle period)".to_owned(),
        ToString::to_string,
    )
}

impl DockerRuntime {
    /// Waits until `container`, published on `addr`, passes `check` for its settle period,
    /// for at most `timeout`. Fails at once if the container stops; a failure carries what the
    /// last probe saw and the container's last log lines.
    pub async fn wait_healthy(
        &self,
        container: &str,
        addr: SocketAddr,
        check: &HealthCheck,
        timeout: Duration,
    ) -> Result<HealthReport, HealthError> {
        check.validate()?;
        let begun = Instant::now();
        let deadline = begun + timeout;
        let mut gate = Gate::new(check.settle);
        let mut last = None;
        let mut probes = 0u32;
        loop {
            let inspect = self.inspect(container).await?;
            let state = inspect.state.unwrap_or_default();
            let status = state
                .status
                .map(ContainerState::from)
                .unwrap_or(ContainerState::Unknown);
            match status {
                ContainerState::Running => {
                    probes = probes.saturating_add(1);
                    let budget = deadline
                        .saturating_duration_since(Instant::now())
                        .clamp(PROBE_INTERVAL, PROBE_TIMEOUT);
                    let outcome = match &check.path {
                        Some(path) => probe_http(addr, path, budget).await.map(Some),
                        None => probe_port(addr, budget).await.map(|()| None),
                    };
                    match outcome {
                        Ok(http_status) if gate.pass(Instant::now()) => {
                            return Ok(HealthReport {
                                elapsed: begun.elapsed(),
                                probes,
                                status: http_status,
                            });
                        }
                        Ok(_) => {}
                        Err(failure) => {
                            gate.fail();
                            last = Some(failure);
                        }
                    }
                }
                ContainerState::Exited
                | ContainerState::Dead
                | ContainerState::Restarting
                | ContainerState::Removing => {
                    return Err(HealthError::Exited(Box::new(Unhealthy {
                        container: container.to_owned(),
                        addr,
                        check: check.clone(),
                        state: status,
                        exit_code: state.exit_code,
                        timeout,
                        last,
                        logs: self.last_lines(container, READY_LOG_LINES).await,
                    })));
                }
                ContainerState::Created | ContainerState::Paused | ContainerState::Unknown => {
                    gate.fail();
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HealthError::Timeout(Box::new(Unhealthy {
                    container: container.to_owned(),
                    addr,
                    check: check.clone(),
                    state: status,
                    exit_code: None,
                    timeout,
                    last,
                    logs: self.last_lines(container, READY_LOG_LINES).await,
                })));
            }
            tokio::time::sleep_until(deadline.min(now + PROBE_INTERVAL)).await;
        }
    }
}

/// The settle rule: healthy once every probe has passed for `settle`, counted from the first
/// pass after the last failure.
#[derive(Debug)]
struct Gate {
    settle: Duration,
    passing_since: Option<Instant>,
}

impl Gate {
    fn new(settle: Duration) -> Self {
        Gate {
            settle,
            passing_since: None,
        }
    }

    /// A probe passed at `now`; whether the container is now healthy.
    fn pass(&mut self, now: Instant) -> bool {
        let since = *self.passing_since.get_or_insert(now);
        now.saturating_duration_since(since) >= self.settle
    }

    /// A probe failed: the settle period starts again.
    fn fail(&mut self) {
        self.passing_since = None;
    }
}

/// `GET path` on `addr`; the status code if it is 2xx. Only the status line is read.
///
/// A hand-written HTTP/1.1 request rather than hyper's client: hyper is not a dependency of
/// this crate and the probe needs nothing of HTTP beyond one request and a status line, read
/// with a byte bound and a time bound. `Connection: close` keeps every probe independent.
async fn probe_http(addr: SocketAddr, path: &str, budget: Duration) -> Result<u16, ProbeFailure> {
    let exchange = async {
        let mut stream = connect(addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: peercompute-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        // A server that reset the connection before reading counts as not listening.
        if stream.write_all(request.as_bytes()).await.is_err() {
            return Err(ProbeFailure::Closed);
        }
        let head = read_status_line(&mut stream).await?;
        match parse_status_line(&head) {
            Some(code) if (200..300).contains(&code) => Ok(code),
            Some(code) => Err(ProbeFailure::Status(code)),
            None => Err(ProbeFailure::NotHttp(
                String::from_utf8_lossy(&head[..head.len().min(64)]).into_owned(),
            )),
        }
    };
    tokio::time::timeout(budget, exchange)
        .await
        .unwrap_or(Err(ProbeFailure::NoAnswer(budget)))
}

/// Whether a server accepts and holds a connection on `addr`: an immediate end of stream or
/// reset is the engine's proxy finding nobody listening; data or silence is a server.
async fn probe_port(addr: SocketAddr, budget: Duration) -> Result<(), ProbeFailure> {
    let mut stream = tokio::time::timeout(budget, connect(addr))
        .await
        .unwrap_or(Err(ProbeFailure::NoAnswer(budget)))?;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(PORT_SETTLE, stream.read(&mut byte)).await {
        Err(_silence) => Ok(()),
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(_) => Err(ProbeFailure::Closed),
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, ProbeFailure> {
    TcpStream::connect(addr)
        .await
        .map_err(|error| ProbeFailure::Connect(error.to_string()))
}

/// Reads until the first line break, end of stream or [`MAX_STATUS_LINE`] bytes.
async fn read_status_line(stream: &mut TcpStream) -> Result<Vec<u8>, ProbeFailure> {
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 128];
    while !head.contains(&b'\n') && head.len() < MAX_STATUS_LINE {
        let room = (MAX_STATUS_LINE - head.len()).min(buf.len());
        match stream.read(&mut buf[..room]).await {
            Ok(0) | Err(_) if head.is_empty() => return Err(ProbeFailure::Closed),
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Ok(head)
}

/// The code of an `HTTP/1.x NNN reason` status line (what comes after the line is ignored).
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (&minor, rest) = rest.split_first()?;
    let rest = rest.strip_prefix(b" ")?;
    let (code, after) = rest.split_at_checked(3)?;
    if !minor.is_ascii_digit()
        || !code.iter().all(u8::is_ascii_digit)
        || !(after.is_empty() || after.starts_with(b" "))
    {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests;
