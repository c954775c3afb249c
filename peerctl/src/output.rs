//! What peerctl prints: aligned tables for people, JSON for scripts, progress on stderr.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peercompute_tunnel_proto::{DeployProgress, DeployStage, DeploymentState};

/// Renders rows as left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `running`, `exited`, …
pub fn state(s: DeploymentState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// `3d 4h`, `5m 2s`, `12s`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Age of a unix timestamp, e.g. `5m 2s ago`.
pub fn age(unix: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{} ago",
        duration(Duration::from_secs(now.saturating_sub(unix)))
    )
}

/// `1.5 MB`
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Deploy progress on stderr: a redrawn line with a bar on a terminal, plain stage lines
/// otherwise (logs, CI).
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    last_stage: Option<DeployStage>,
    drawn: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    pub fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last_stage: None,
            drawn: false,
        }
    }

    pub fn update(&mut self, p: &DeployProgress) {
        let mut err = std::io::stderr();
        let stage = stage_name(p.stage);
        if self.tty {
            let detail = match (p.current, p.total) {
                (Some(c), Some(t)) if t > 0 => {
                    let filled = usize::try_from(c.min(t) * 30 / t).unwrap_or(30);
                    format!(
                        " [{}{}] {} / {}",
                        "#".repeat(filled),
                        "-".repeat(30 - filled),
                        bytes(c),
                        bytes(t)
                    )
                }
                _ => String::new(),
            };
            let layer = p
                .layer
                .as_deref()
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            let _ = write!(err, "\r\x1b[2K{stage:>11}{layer}: {}{detail}", p.message);
            self.drawn = true;
        } else if self.last_stage != Some(p.stage) {
            let _ = writeln!(err, "{stage}: {}", p.message);
        }
        self.last_stage = Some(p.stage);
        let _ = err.flush();
    }

    pub fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}

fn stage_name(s: DeployStage) -> &'static str {
    match s {
        DeployStage::Pulling => "pulling",
        DeployStage::Starting => "starting",
        DeployStage::Waiting => "waiting",
        DeployStage::Registering => "registering",
    }
}

/// `relayed, 12.3 ms, 5m ago (/ip4/…)` for `peers list`.
pub fn last_path(p: &crate::places::LastPath) -> String {
    let rtt = p
        .rtt_ms
        .map_or_else(String::new, |ms| format!(", {ms:.1} ms"));
    format!("{}{rtt}, {} ({})", p.kind, age(p.at), p.address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let out = table(
            &["ID", "NAME"],
            &[
                vec!["a1".into(), "blog".into()],
                vec!["b2c3d4".into(), "x".into()],
            ],
        );
        assert_eq!(out, "ID      NAME\na1      blog\nb2c3d4  x\n");
    }

    #[test]
    fn human_units() {
        assert_eq!(duration(Duration::from_secs(42)), "42s");
        assert_eq!(duration(Duration::from_secs(3 * 3600 + 120)), "3h 2m");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(state(DeploymentState::Running), "running");
    }
}
