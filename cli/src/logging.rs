//! Logs on stderr, shaped for where they end up: plain text (coloured only on a terminal) for
//! people, one JSON object per line for journald, Loki and friends.
//!
//! `RUST_LOG` filters as usual; without it the program's default filter applies. Colour needs
//! a terminal on stderr and no `NO_COLOR` (<https://no-color.org>), so journald never stores
//! escape codes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// The daemons' filter when `RUST_LOG` is unset: our own events at info, the libraries' only
/// from warn (libp2p's swarm logs a message-less "local_peer_id" event at info; quinn and
/// rustls log per-connection details). h2 logs one warning per unsolicited PING ACK a peer
/// sends: a 17-byte frame per log line would let a visitor fill the disk, so only its errors.
pub const DAEMON_LOG_FILTER: &str =
    "info,quinn=warn,rustls=warn,libp2p_swarm=warn,h2::proto::ping_pong=error";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message and the event's fields.
    Json,
}

/// Whether text logs get ANSI colours: only on a terminal, and never with a non-empty
/// `NO_COLOR`.
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

type BoxedSubscriber = Box<dyn tracing::Subscriber + Send + Sync + 'static>;

fn subscriber<W>(format: LogFormat, filter: EnvFilter, colour: bool, writer: W) -> BoxedSubscriber
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(colour).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
    }
}

/// Installs the process-wide logger on stderr. `default_filter` applies when `RUST_LOG` is
/// unset or unparsable (e.g. `"info,quinn=warn"`).
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    // A logger installed earlier (a test harness) wins; that is not an error.
    let _ = subscriber(format, filter, colour, std::io::stderr).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::sync::{Arc, Mutex};

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(format: LogFormat, colour: bool) -> String {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let sub = subscriber(format, EnvFilter::new("info"), colour, move || sink.clone());
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("tunnel", peer = "12D3KooWx");
            let _entered = span.enter();
            tracing::info!(route = "blog", streams = 3, "route registered");
            tracing::warn!("slow \"gateway\"\nsecond line");
            tracing::debug!("filtered out");
        });
        let bytes = buffer.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes).expect("logs are UTF-8")
    }

    #[test]
    fn json_is_one_object_per_line_with_the_fields() {
        let out = capture(LogFormat::Json, false);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        let first = &lines[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "route registered");
        assert_eq!(first["route"], "blog");
        assert_eq!(first["streams"], 3);
        assert_eq!(first["span"]["peer"], "12D3KooWx");
        assert!(first["target"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(first["timestamp"].as_str().is_some_and(|t| t.contains('T')));
        assert_eq!(lines[1]["message"], "slow \"gateway\"\nsecond line");
    }

    #[test]
    fn text_has_no_escape_codes_without_colour() {
        let plain = capture(LogFormat::Text, false);
        assert!(plain.contains("route registered"));
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let coloured = capture(LogFormat::Text, true);
        assert!(
            coloured.contains('\x1b'),
            "the colour switch works: {coloured:?}"
        );
    }
}
