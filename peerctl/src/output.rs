//! What peerctl prints: aligned tables for people, JSON for scripts, progress on stderr.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use peercompute_tunnel_proto::{DeployProgress, DeployStage, DeploymentState, StatusResponse};

/// Renders rows as left-aligned columns separated by two spaces, no borders and no trailing
/// blanks (`comfy-table` with no terminal detection: the same text on a terminal, in a pipe
/// or a file, never wrapped), so `grep`/`awk` read it as easily as people do.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row.clone());
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = table.trim_fmt();
    out.push('\n');
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

/// The FIELD/VALUE rows of `peerctl status`: one row per volume (use / share), the devices
/// and, when the provider stopped the deployment, why.
pub fn status_rows(s: &StatusResponse) -> Vec<Vec<String>> {
    let row = |k: &str, v: String| vec![k.to_owned(), v];
    let mut rows = vec![
        row("id", s.id.clone()),
        row("name", s.name.clone()),
        row("state", state(s.state)),
    ];
    if let Some(reason) = &s.stopped_reason {
        rows.push(row("stopped", reason.clone()));
    }
    rows.extend([
        row("image", s.image.clone()),
        row("url", s.url.clone()),
        row(
            "uptime",
            s.uptime_secs
                .map_or("-".into(), |u| duration(Duration::from_secs(u))),
        ),
        row("restarts", s.restarts.to_string()),
        row(
            "cpu",
            s.cpu_percent.map_or("-".into(), |c| format!("{c:.1}%")),
        ),
    ]);
    let mem = match (s.memory_bytes, s.memory_limit) {
        (Some(m), Some(l)) => format!("{} / {}", bytes(m), bytes(l)),
        (Some(m), None) => bytes(m),
        _ => "-".into(),
    };
    rows.push(row("memory", mem));
    for v in &s.volumes {
        let used = v.used_bytes.map_or_else(|| "-".into(), bytes);
        rows.push(row(
            "volume",
            format!("{}  {used} / {} share", v.volume, bytes(v.share_bytes)),
        ));
    }
    if !s.devices.is_empty() {
        rows.push(row("devices", s.devices.join(", ")));
    }
    rows.push(row("created", age(s.created_at)));
    rows
}

/// Deploy progress on stderr: on a terminal an `indicatif` line redrawn in place (a byte bar
/// while a layer downloads, a spinner otherwise); off a terminal (logs, CI, pipes) one plain
/// `stage: message` line per stage, nothing redrawn.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    last_stage: Option<DeployStage>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        Self::with_terminal(std::io::stderr().is_terminal())
    }

    fn with_terminal(terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(spinner_style());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            last_stage: None,
        }
    }

    pub fn update(&mut self, p: &DeployProgress) {
        let stage = stage_name(p.stage);
        match &self.bar {
            Some(bar) => {
                let layer = p
                    .layer
                    .as_deref()
                    .map(|l| format!("{l}: "))
                    .unwrap_or_default();
                bar.set_prefix(stage);
                bar.set_message(format!("{layer}{}", p.message));
                match (p.current, p.total) {
                    (Some(current), Some(total)) if total > 0 => {
                        bar.set_style(bytes_style());
                        bar.set_length(total);
                        bar.set_position(current.min(total));
                    }
                    _ => bar.set_style(spinner_style()),
                }
            }
            None if self.last_stage != Some(p.stage) => {
                let mut err = std::io::stderr();
                let _ = writeln!(err, "{stage}: {}", p.message);
                let _ = err.flush();
            }
            None => {}
        }
        self.last_stage = Some(p.stage);
    }

    /// Leaves the last drawn line on screen (where the deploy stopped, on a failure) and ends
    /// the redrawing.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>11} {spinner} {wide_msg}")
        .expect("a valid indicatif template")
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>11} [{bar:30}] {binary_bytes} / {binary_total_bytes} {wide_msg}",
    )
    .expect("a valid indicatif template")
    .progress_chars("#>-")
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
        // Wide characters count by width; the last column carries no padding.
        let out = table(&["A", "B"], &[vec!["日本".into(), "".into()]]);
        assert_eq!(out, "A     B\n日本\n");
    }

    #[test]
    fn templates_parse() {
        let _ = spinner_style();
        let _ = bytes_style();
        // Off a terminal nothing is drawn by indicatif: plain lines instead.
        let mut progress = Progress::with_terminal(false);
        progress.update(&DeployProgress {
            stage: DeployStage::Pulling,
            message: "nginx:1.27".into(),
            layer: None,
            current: Some(1),
            total: Some(2),
        });
        assert!(progress.bar.is_none());
        progress.finish();
    }

    #[test]
    fn status_shows_volumes_devices_and_the_stopped_reason() {
        let mut s = StatusResponse {
            id: "a1b2".into(),
            name: "notes".into(),
            image: "ghcr.io/acme/notes:1.4".into(),
            url: "https://notes.example.com".into(),
            state: DeploymentState::Exited,
            created_at: 0,
            started_at: None,
            uptime_secs: None,
            restarts: 0,
            cpu_percent: None,
            memory_bytes: None,
            memory_limit: Some(256 << 20),
            volumes: Vec::new(),
            devices: Vec::new(),
            stopped_reason: None,
        };
        let keys = |s: &StatusResponse| -> Vec<String> {
            status_rows(s).into_iter().map(|r| r[0].clone()).collect()
        };
        assert_eq!(
            keys(&s),
            [
                "id", "name", "state", "image", "url", "uptime", "restarts", "cpu", "memory",
                "created"
            ]
        );
        s.volumes = vec![peercompute_tunnel_proto::VolumeUsage {
            volume: "notes/data".into(),
            used_bytes: Some(3 << 20),
            share_bytes: 2 << 30,
        }];
        s.devices = vec!["arm".into(), "cam".into()];
        s.stopped_reason =
            Some("stopped by the provider: volume notes/data is over its share".into());
        let rows = status_rows(&s);
        let find = |k: &str| rows.iter().find(|r| r[0] == k).map(|r| r[1].clone());
        assert_eq!(
            find("volume").as_deref(),
            Some("notes/data  3.0 MiB / 2.0 GiB share")
        );
        assert_eq!(find("devices").as_deref(), Some("arm, cam"));
        assert_eq!(
            find("stopped").as_deref(),
            Some("stopped by the provider: volume notes/data is over its share")
        );
        assert_eq!(rows[3][0], "stopped", "the reason follows the state");
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
