//! The optional access log (`--access-log PATH|-`): one JSON line per visitor request, with
//! time, route, method, path, status, bytes in and out, duration, client address and provider.
//!
//! The hot path never waits on a disk: [`AccessLog::record`] is a `try_send` into a bounded
//! channel of [`QUEUE`] lines; when it is full the line is dropped and counted
//! ([`AccessLog::dropped`]). A writer thread owns the file, buffers it, flushes every second
//! and rotates by size: `PATH` becomes `PATH.1`, `PATH.1` becomes `PATH.2`, … and the oldest
//! beyond `keep` is deleted.
//!
//! What is never logged: [`Entry`] has no header fields, so `Authorization`, `Cookie` and
//! their kin cannot leak by construction; the query string is cut off ([`path_only`]),
//! because tokens hide there too. A path is logged up to [`MAX_PATH_BYTES`] (then `…`), so
//! the queue holds at most about 10 MB whatever visitors send. [`AccessLog::close`] flushes
//! and waits for the writer at shutdown.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError, channel, sync_channel,
};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tracing::warn;

/// Lines waiting for the writer at most; more are dropped and counted.
pub const QUEUE: usize = 8192;
/// How often buffered lines reach the file.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// The longest path logged; longer ones are cut (at a character boundary) and end in `…`.
pub const MAX_PATH_BYTES: usize = 1024;
/// The most rotated files kept, whatever the configuration says (each rotation renames them
/// all).
pub const MAX_KEEP: usize = 100;

/// One visitor request, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When the request arrived.
    pub time: SystemTime,
    /// The route name the request was for; `None` for a host that names no route.
    pub route: Option<String>,
    pub method: String,
    /// The request path without its query string (see [`path_only`]).
    pub path: String,
    pub status: u16,
    /// Request body bytes received from the visitor.
    pub bytes_in: u64,
    /// Response body bytes sent to the visitor.
    pub bytes_out: u64,
    /// From arrival to the end of the response body (or to its head, whichever the caller
    /// measures).
    pub duration: Duration,
    /// The visitor's address.
    pub client: SocketAddr,
    /// The peer id of the provider that served it; `None` when none did.
    pub provider: Option<String>,
}

/// The JSON line of an [`Entry`].
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    route: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    client: String,
    provider: Option<&'a str>,
}

impl Entry {
    /// The entry as one JSON line, newline included.
    pub fn to_line(&self) -> String {
        let line = Line {
            time: humantime::format_rfc3339_millis(self.time).to_string(),
            route: self.route.as_deref(),
            method: &self.method,
            path: &capped(path_only(&self.path)),
            status: self.status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration_ms: (self.duration.as_secs_f64() * 1e6).round() / 1e3,
            client: self.client.to_string(),
            provider: self.provider.as_deref(),
        };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// `path` cut to [`MAX_PATH_BYTES`] (at a character boundary, marked with `…`).
fn capped(path: &str) -> std::borrow::Cow<'_, str> {
    if path.len() <= MAX_PATH_BYTES {
        return path.into();
    }
    let mut end = MAX_PATH_BYTES;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end]).into()
}

/// A request target without its query string or fragment: `/a/b?token=x` → `/a/b`.
pub fn path_only(target: &str) -> &str {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    &target[..end]
}

/// What the writer thread is sent.
#[derive(Debug)]
enum Message {
    Line(String),
    /// Flush, say so on the sender, and stop.
    Close(Sender<()>),
}

/// The sending side of the access log; cheap to clone. The writer thread stops, flushing
/// everything, at [`AccessLog::close`] or when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Opens `path` for appending (`-` is standard output) and starts the writer thread.
    /// `max_bytes` is the size at which the file is rotated, `keep` how many rotated files
    /// stay (`PATH.1` … `PATH.keep`). Fails when the file cannot be opened.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let sink = if path == Path::new("-") {
            Sink::Stdout(io::stdout())
        } else {
            Sink::File(Rotating::open(path.to_path_buf(), max_bytes, keep)?)
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, sink))?;
        Ok(Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues `entry`; never blocks. A full queue drops the line and counts it.
    pub fn record(&self, entry: &Entry) {
        match self.tx.try_send(Message::Line(entry.to_line())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped because the writer fell behind (or stopped), since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Flushes what is queued and stops the writer, waiting at most `timeout` (at shutdown,
    /// so the last second of lines is not lost with the process). Lines recorded afterwards
    /// are dropped and counted. Returns whether the writer finished in time.
    pub fn close(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (done, finished) = channel();
        let mut message = Message::Close(done);
        loop {
            match self.tx.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return true,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    message = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        finished.recv_timeout(left).is_ok()
    }
}

enum Sink {
    Stdout(io::Stdout),
    File(Rotating),
}

impl Sink {
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => out.lock().write_all(line.as_bytes()),
            Sink::File(file) => file.write_line(line),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => out.flush(),
            Sink::File(file) => file.out.flush(),
        }
    }
}

/// The writer thread: lines as they come, a flush every [`FLUSH_EVERY`] and at the end.
fn write_lines(rx: Receiver<Message>, mut sink: Sink) {
    let mut last_flush = Instant::now();
    let mut failing = false;
    let mut closed = None;
    loop {
        let result = match rx.recv_timeout(FLUSH_EVERY) {
            Ok(Message::Line(line)) => sink.write_line(&line),
            Ok(Message::Close(done)) => {
                closed = Some(done);
                break;
            }
            Err(RecvTimeoutError::Timeout) => Ok(()),
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let result = result.and_then(|()| {
            if last_flush.elapsed() >= FLUSH_EVERY {
                last_flush = Instant::now();
                sink.flush()
            } else {
                Ok(())
            }
        });
        // One warning per failing stretch, not one per line.
        match result {
            Err(e) if !failing => {
                failing = true;
                warn!("the access log cannot be written: {e}; lines are lost until it can");
            }
            Ok(()) if failing => failing = false,
            _ => {}
        }
    }
    if let Err(e) = sink.flush() {
        warn!("the access log cannot be flushed: {e}");
    }
    if let Some(done) = closed {
        let _ = done.send(());
    }
}

/// A file rotated by size.
struct Rotating {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl Rotating {
    fn open(path: PathBuf, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let file = append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            out: BufWriter::new(file),
            size,
            max_bytes,
            keep: keep.min(MAX_KEEP),
        })
    }

    fn write_line(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line.as_bytes())?;
        self.size += len;
        Ok(())
    }

    /// `PATH.(keep-1)` → `PATH.keep`, …, `PATH` → `PATH.1`, then a new `PATH`.
    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let numbered = |n: usize| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if self.keep > 0 {
            std::fs::rename(&self.path, numbered(1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.out = BufWriter::new(append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            route: Some("blog".into()),
            method: "GET".into(),
            path: path.into(),
            status: 200,
            bytes_in: 0,
            bytes_out: 512,
            duration: Duration::from_micros(1500),
            client: "203.0.113.9:55000".parse().expect("addr"),
            provider: Some("12D3KooWexample".into()),
        }
    }

    #[test]
    fn a_line_has_every_field_and_no_query() {
        let line = entry("/posts/1?token=s3cret#frag").to_line();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["route"], "blog");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/posts/1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes_in"], 0);
        assert_eq!(v["bytes_out"], 512);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["client"], "203.0.113.9:55000");
        assert_eq!(v["provider"], "12D3KooWexample");
        assert!(!line.contains("s3cret"));
        let mut unknown = entry("/");
        unknown.route = None;
        unknown.provider = None;
        let v: serde_json::Value = serde_json::from_str(&unknown.to_line()).expect("json");
        assert!(v["route"].is_null() && v["provider"].is_null());
    }

    #[test]
    fn rotation_keeps_n_files_under_the_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let mut file = Rotating::open(path.clone(), 1024, 2).expect("open");
        let line = entry("/x").to_line();
        for _ in 0..100 {
            file.write_line(&line).expect("write");
        }
        file.out.flush().expect("flush");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["access.log", "access.log.1", "access.log.2"]);
        for name in &names {
            let len = std::fs::metadata(dir.path().join(name))
                .expect("meta")
                .len();
            assert!(len > 0 && len <= 1024, "{name}: {len} bytes");
        }
    }

    #[test]
    fn the_writer_flushes_and_a_full_queue_drops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let log = AccessLog::open(&path, 1 << 20, 1).expect("open");
        log.record(&entry("/one"));
        drop(log);
        // The writer flushes as the last sender goes; give the thread its moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&path)
            .unwrap_or_default()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "nothing written");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            std::fs::read_to_string(&path)
                .expect("read")
                .contains("\"/one\"")
        );

        let (tx, _rx) = sync_channel::<Message>(1);
        let full = AccessLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        full.record(&entry("/a"));
        full.record(&entry("/b"));
        full.record(&entry("/c"));
        assert_eq!(full.dropped(), 2);
    }

    #[test]
    fn close_writes_everything_queued_and_later_lines_count_as_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let log = AccessLog::open(&path, 1 << 20, 1).expect("open");
        for _ in 0..100 {
            log.record(&entry("/x"));
        }
        assert!(
            log.close(Duration::from_secs(5)),
            "the writer did not finish"
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 100);
        log.record(&entry("/late"));
        assert_eq!(log.dropped(), 1);
        assert!(log.close(Duration::from_secs(1)), "closing twice is fine");
    }

    #[test]
    fn long_paths_are_cut_at_a_character_boundary() {
        let long = format!("/{}", "é".repeat(1000));
        let line = entry(&long).to_line();
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        let logged = v["path"].as_str().expect("path");
        assert!(logged.ends_with('…'), "{logged}");
        assert!(logged.len() <= MAX_PATH_BYTES + '…'.len_utf8());
        assert!(long.starts_with(logged.trim_end_matches('…')));
        assert_eq!(capped("/short"), "/short");
    }

    #[test]
    fn path_only_cuts_query_and_fragment() {
        assert_eq!(path_only("/a?b"), "/a");
        assert_eq!(path_only("/a#b?c"), "/a");
        assert_eq!(path_only("/a/b"), "/a/b");
        assert_eq!(path_only(""), "");
    }
}
