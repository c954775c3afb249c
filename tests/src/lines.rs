//! The output of a child process (a daemon's stderr, `docker logs -f`), read line by line on
//! threads, so that a test can wait for the line that says a program is ready.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Lines from one or more pipes, in arrival order, with everything seen kept for messages.
#[derive(Debug)]
pub struct Lines {
    what: String,
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    /// Follows `pipes` (stdout and stderr, say) of what `what` names in panic messages.
    pub fn follow(what: impl Into<String>, pipes: Vec<Box<dyn Read + Send>>) -> Self {
        let (tx, rx) = mpsc::sync_channel(1024);
        for pipe in pipes {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            what: what.into(),
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line containing `needle`; panics with everything seen after `timeout` or
    /// when the pipes close.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "{} did not print {needle:?} ({e:?}: it stopped, or took longer than {timeout:?}); it printed:\n{}",
                    self.what,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every line until the pipes close (the process exited) or `timeout`; returns all lines
    /// seen since the start.
    pub fn rest(mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        while let Ok(line) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        self.seen
    }
}
