//! A container's output as a stream of lines: [`DockerRuntime::logs`] reads the engine's
//! log endpoint (stdout and stderr, with the engine's timestamps), optionally only the last
//! lines and optionally following new output until the container stops or the stream is
//! dropped. Parsing one engine frame into [`LogLine`]s is a pure function.

use std::pin::Pin;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures_util::{Stream, StreamExt, stream};

use crate::container::ContainerError;
use crate::engine::{DockerRuntime, EngineError, engine_status};
use crate::time::parse_rfc3339;

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line a container printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// stdout or stderr.
    pub source: LogSource,
    /// When the engine received it, RFC 3339 with nanoseconds, as the engine wrote it.
    pub timestamp: Option<String>,
    /// The line, without its line ending (invalid UTF-8 replaced).
    pub text: String,
}

/// The stream [`DockerRuntime::logs`] returns. Dropping it ends the request.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine, ContainerError>> + Send>>;

impl DockerRuntime {
    /// The output of `container`: the last `tail` lines (all if `None`), then, with `follow`,
    /// every new line as it is printed until the container stops or the stream is dropped.
    pub fn logs(&self, container: &str, follow: bool, tail: Option<usize>) -> LogStream {
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            timestamps: true,
            tail: tail.map_or_else(|| "all".to_owned(), |n| n.to_string()),
            ..Default::default()
        };
        let target = container.to_owned();
        self.docker
            .logs(container, Some(options))
            .flat_map(move |frame| {
                let lines = match frame {
                    Ok(output) => parse_frame(output).into_iter().map(Ok).collect(),
                    Err(source) => vec![Err(match engine_status(&source) {
                        Some(404) => ContainerError::NotFound {
                            container: target.clone(),
                        },
                        _ => ContainerError::Engine(EngineError {
                            operation: "read the logs of",
                            target: target.clone(),
                            source,
                        }),
                    })],
                };
                stream::iter(lines)
            })
            .boxed()
    }

    /// The last `n` lines of `container` as text, for error messages; empty if unreadable.
    pub(crate) async fn last_lines(&self, container: &str, n: usize) -> Vec<String> {
        self.logs(container, false, Some(n))
            .filter_map(|line| async move { line.ok().map(|l| l.text) })
            .collect()
            .await
    }
}

/// Log lines indented under an error message; `(no output)` when there are none.
pub(crate) fn format_log_lines(logs: &[String]) -> String {
    if logs.is_empty() {
        return "  (no output)".to_owned();
    }
    logs.iter()
        .map(|line| format!("  | {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Splits one engine frame (one log entry, or several lines from a TTY) into lines, taking
/// the timestamp the engine put in front of each entry.
fn parse_frame(output: LogOutput) -> Vec<LogLine> {
    let (source, bytes) = match output {
        LogOutput::StdErr { message } => (LogSource::Stderr, message),
        LogOutput::StdOut { message }
        | LogOutput::Console { message }
        | LogOutput::StdIn { message } => (LogSource::Stdout, message),
    };
    let text = String::from_utf8_lossy(&bytes);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    text.split('\n')
        .map(|line| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let (timestamp, text) = match line.split_once(' ') {
                Some((stamp, rest)) if parse_rfc3339(stamp).is_some() => {
                    (Some(stamp.to_owned()), rest)
                }
                _ => (None, line),
            };
            LogLine {
                source,
                timestamp,
                text: text.to_owned(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn frames_become_lines() {
        let stamp = "2025-05-01T12:34:56.123456789Z";
        let out = |s: &str| LogOutput::StdOut {
            message: Bytes::from(s.to_owned()),
        };
        let lines = parse_frame(out(&format!("{stamp} hello world\n")));
        assert_eq!(
            lines,
            vec![LogLine {
                source: LogSource::Stdout,
                timestamp: Some(stamp.to_owned()),
                text: "hello world".into()
            }]
        );
        let lines = parse_frame(LogOutput::StdErr {
            message: Bytes::from_static(b"no stamp\r\n"),
        });
        assert_eq!(lines[0].source, LogSource::Stderr);
        assert_eq!(lines[0].timestamp, None);
        assert_eq!(lines[0].text, "no stamp");
        let lines = parse_frame(out(&format!("{stamp} a\n{stamp} b\n")));
        let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a", "b"]);
        let lines = parse_frame(out(&format!("{stamp} \n")));
        assert_eq!(lines[0].text, "");
        let lines = parse_frame(LogOutput::StdOut {
            message: Bytes::from_static(b"bad \xff utf8"),
        });
        assert_eq!(lines[0].text, "bad \u{fffd} utf8");
    }
}
