//! Reading a group's container logs from its robots (`peerctl fleet logs`): the query a
//! member sends ([`LogsQuery`], inside `FleetMessage::LogsRequest`) and [`LogWindow`], the
//! pure selection a robot runs over its container's lines — the `since` and `grep` filters,
//! the last `tail` lines, and the byte budget that keeps the answer inside one frame.
//!
//! ```
//! use peercompute_fleet::{LogWindow, LogsQuery};
//!
//! let query = LogsQuery { group: "production".into(), tail: Some(2), grep: Some("GET".into()), ..LogsQuery::default() };
//! let mut window = LogWindow::new(&query, 1_000);
//! for line in ["GET /", "POST /x", "GET /a", "GET /b"] {
//!     window.offer(Some(990), line);
//! }
//! assert_eq!(window.finish(), (vec!["GET /a".to_owned(), "GET /b".to_owned()], false));
//! ```

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Lines answered when the asker gives no `tail`.
pub const DEFAULT_LOG_TAIL: u32 = 200;
/// Most lines one answer carries.
pub const MAX_LOG_TAIL: u32 = 5000;
/// Most bytes of lines one answer carries (well inside a frame with its overhead).
pub const MAX_LOG_BYTES: usize = 512 * 1024;
/// Longest line kept whole; longer ones are cut (on a character boundary) and marked `…`.
pub const MAX_LOG_LINE: usize = 4096;
/// Longest `grep` text accepted.
pub const MAX_GREP: usize = 256;

/// What a member asks a robot for: the logs of the fleet app it runs for `group`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsQuery {
    pub group: String,
    /// Only if the robot's app for the group has this name (else the robot says what it runs).
    pub app: Option<String>,
    /// Only lines printed in the last this many seconds.
    pub since_secs: Option<u64>,
    /// The last this many matching lines ([`DEFAULT_LOG_TAIL`] if absent, at most
    /// [`MAX_LOG_TAIL`]).
    pub tail: Option<u32>,
    /// Only lines containing this text (plain, case-sensitive).
    pub grep: Option<String>,
}

impl LogsQuery {
    /// Checks what a robot must not take from a peer as is: an oversized `grep`.
    pub fn check(&self) -> Result<(), String> {
        match &self.grep {
            Some(grep) if grep.len() > MAX_GREP => Err(format!(
                "the grep text is {} bytes, more than {MAX_GREP}",
                grep.len()
            )),
            _ => Ok(()),
        }
    }

    /// How many lines the answer keeps: the asked tail, bounded.
    pub fn tail_lines(&self) -> usize {
        self.tail.unwrap_or(DEFAULT_LOG_TAIL).min(MAX_LOG_TAIL) as usize
    }
}

/// The selection a robot runs over its container's lines, oldest first: filters, keeps the
/// last `tail`, and [`finish`](LogWindow::finish)es within [`MAX_LOG_BYTES`].
#[derive(Debug)]
pub struct LogWindow {
    since: Option<u64>,
    grep: Option<String>,
    tail: usize,
    /// Whether dropping lines past `tail` is a cut the asker did not ask for.
    tail_is_a_limit: bool,
    lines: VecDeque<String>,
    truncated: bool,
}

impl LogWindow {
    /// A window for `query` at `now` (Unix seconds).
    pub fn new(query: &LogsQuery, now: u64) -> Self {
        let tail = query.tail_lines();
        Self {
            since: query.since_secs.map(|s| now.saturating_sub(s)),
            grep: query.grep.clone().filter(|g| !g.is_empty()),
            tail,
            tail_is_a_limit: query.tail.is_none_or(|t| t as usize > tail),
            lines: VecDeque::new(),
            truncated: false,
        }
    }

    /// Offers one line printed at `at` (Unix seconds; `None` if unknown: then kept unless
    /// `since` asks for recent lines only).
    pub fn offer(&mut self, at: Option<u64>, text: &str) {
        if let Some(since) = self.since
            && at.is_none_or(|t| t < since)
        {
            return;
        }
        if let Some(grep) = &self.grep
            && !text.contains(grep.as_str())
        {
            return;
        }
        if self.tail == 0 {
            self.truncated |= self.tail_is_a_limit;
            return;
        }
        if self.lines.len() == self.tail {
            self.lines.pop_front();
            self.truncated |= self.tail_is_a_limit;
        }
        self.lines.push_back(cut_line(text, &mut self.truncated));
    }

    /// The lines kept, oldest first, and whether a limit (not the asked tail) left some out.
    pub fn finish(mut self) -> (Vec<String>, bool) {
        let mut budget = MAX_LOG_BYTES;
        let mut keep = 0;
        for line in self.lines.iter().rev() {
            // Each line costs its bytes and its length prefix on the wire.
            let cost = line.len() + 4;
            if cost > budget {
                self.truncated = true;
                break;
            }
            budget -= cost;
            keep += 1;
        }
        let skip = self.lines.len() - keep;
        (self.lines.into_iter().skip(skip).collect(), self.truncated)
    }
}

/// `text`, cut to [`MAX_LOG_LINE`] bytes on a character boundary (then ending in `…`).
fn cut_line(text: &str, truncated: &mut bool) -> String {
    if text.len() <= MAX_LOG_LINE {
        return text.to_owned();
    }
    *truncated = true;
    let mut end = MAX_LOG_LINE - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(query: &LogsQuery, lines: &[(Option<u64>, &str)]) -> (Vec<String>, bool) {
        let mut w = LogWindow::new(query, 1_000);
        for (at, text) in lines {
            w.offer(*at, text);
        }
        w.finish()
    }

    fn q(since: Option<u64>, tail: Option<u32>, grep: Option<&str>) -> LogsQuery {
        LogsQuery {
            group: "g".into(),
            app: None,
            since_secs: since,
            tail,
            grep: grep.map(str::to_owned),
        }
    }

    #[test]
    fn filters_and_tails() {
        let lines = [
            (Some(100), "old GET"),
            (None, "undated GET"),
            (Some(950), "recent POST"),
            (Some(960), "recent GET 1"),
            (Some(999), "recent GET 2"),
        ];
        let all = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let table = [
            (q(None, None, None), all(&lines.map(|l| l.1)), false),
            (
                q(Some(60), None, None),
                all(&["recent POST", "recent GET 1", "recent GET 2"]),
                false,
            ),
            (
                q(None, None, Some("GET")),
                all(&["old GET", "undated GET", "recent GET 1", "recent GET 2"]),
                false,
            ),
            (
                q(Some(60), Some(1), Some("GET")),
                all(&["recent GET 2"]),
                false,
            ),
            (q(None, Some(0), None), vec![], false),
            (q(None, None, Some("")), all(&lines.map(|l| l.1)), false),
        ];
        for (query, want, truncated) in table {
            assert_eq!(run(&query, &lines), (want, truncated), "{query:?}");
        }
    }

    #[test]
    fn the_default_and_clamped_tails_report_truncation_and_an_asked_tail_does_not() {
        let many: Vec<(Option<u64>, String)> =
            (0..300).map(|i| (Some(999), format!("line {i}"))).collect();
        let lines: Vec<(Option<u64>, &str)> = many.iter().map(|(a, t)| (*a, t.as_str())).collect();
        let (got, truncated) = run(&q(None, None, None), &lines);
        assert_eq!(got.len(), DEFAULT_LOG_TAIL as usize);
        assert_eq!(got.last().map(String::as_str), Some("line 299"));
        assert!(truncated, "the default tail left lines out");
        let (got, truncated) = run(&q(None, Some(10), None), &lines);
        assert_eq!((got.len(), truncated), (10, false));
        let (got, truncated) = run(&q(None, Some(1_000_000), None), &lines);
        assert_eq!((got.len(), truncated), (300, false), "all fit the clamp");
        assert_eq!(q(None, Some(1_000_000), None).tail_lines(), 5000);
    }

    #[test]
    fn long_lines_are_cut_and_the_byte_budget_holds() {
        let long = "é".repeat(MAX_LOG_LINE);
        let (got, truncated) = run(&q(None, Some(1), None), &[(None, &long)]);
        assert!(truncated);
        assert!(got[0].len() <= MAX_LOG_LINE && got[0].ends_with('…'));
        let line = "x".repeat(MAX_LOG_LINE);
        let lines: Vec<(Option<u64>, &str)> =
            (0..MAX_LOG_TAIL).map(|_| (None, &line[..])).collect();
        let (got, truncated) = run(&q(None, Some(MAX_LOG_TAIL), None), &lines);
        assert!(truncated);
        let bytes: usize = got.iter().map(|l| l.len() + 4).sum();
        assert!(bytes <= MAX_LOG_BYTES && !got.is_empty(), "{bytes}");
    }

    #[test]
    fn an_oversized_grep_is_refused() {
        assert!(q(None, None, Some("ok")).check().is_ok());
        let big = "x".repeat(MAX_GREP + 1);
        assert!(q(None, None, Some(&big)).check().is_err());
    }
}
