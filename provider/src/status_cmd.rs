//! `peercomputed status`: asks the running daemon's admin listener (its address is in
//! `<home>/state/admin.addr`) for `/api/v1/status` and prints it as a table, or as the JSON
//! itself with `--json`. Exit codes: 0 ready, 1 not running (or unreachable), 2 bad home, 3
//! running but not ready, so scripts can tell.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use serde_json::Value;

/// Exit code of a daemon that runs but is not ready.
const EXIT_UNREADY: u8 = 3;
/// How long the whole question may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The token sent when the admin listener wants one.
const TOKEN_ENV: &str = "PEERCOMPUTE_ADMIN_TOKEN";

pub(crate) fn main(home: Option<PathBuf>, json: bool) -> ExitCode {
    let home = match peercompute_identity::resolve_home(home) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(peercompute_cli::EXIT_USAGE);
        }
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(fetch(&home)));
    let doc = match result {
        Ok(doc) => doc,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(peercompute_cli::EXIT_FAILURE);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
        );
    } else {
        print!("{}", table(&doc));
    }
    if doc["ready"].as_bool() == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_UNREADY)
    }
}

/// The daemon's `/api/v1/status`.
async fn fetch(home: &Path) -> anyhow::Result<Value> {
    let file = home
        .join("state")
        .join(peercompute_provider::ADMIN_ADDR_FILE);
    let Ok(text) = std::fs::read_to_string(&file) else {
        bail!(
            "peercomputed is not running (no {}): start it with `peercomputed run`, or pass the --home it runs with",
            file.display()
        );
    };
    let addr: std::net::SocketAddr = text.trim().parse().with_context(|| {
        format!(
            "{} does not hold an address; restart peercomputed to rewrite it",
            file.display()
        )
    })?;
    let (status, body) = tokio::time::timeout(TIMEOUT, get(addr))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "peercomputed at {addr} (from {}) did not answer within {TIMEOUT:?}",
                file.display()
            )
        })?
        .map_err(|e| {
            anyhow::anyhow!(
                "peercomputed is not running (nothing answers at {addr}, from {}: {e})",
                file.display()
            )
        })?;
    if status == hyper::StatusCode::UNAUTHORIZED {
        bail!(
            "the admin listener at {addr} wants a token: put one of its --admin-token-file tokens in {TOKEN_ENV}"
        );
    }
    if !status.is_success() {
        bail!("the admin listener at {addr} answered {status}");
    }
    serde_json::from_slice(&body).with_context(|| format!("the answer of {addr} is not JSON"))
}

async fn get(addr: std::net::SocketAddr) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get("/api/v1/status")
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::ACCEPT, "application/json");
    if let Ok(token) = std::env::var(TOKEN_ENV) {
        req = req.header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()),
        );
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The document as two columns.
fn table(doc: &Value) -> String {
    // Strings come from the gateway and the relay too: no control characters (ANSI and OSC
    // escapes) reach the terminal.
    let s = |v: &Value| match v {
        Value::String(s) => printable(s),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut rows: Vec<[String; 2]> = Vec::new();
    rows.push(["peer id".into(), s(&doc["peer_id"])]);
    rows.push([
        "version".into(),
        format!("{} ({})", s(&doc["version"]), s(&doc["commit"])),
    ]);
    let ready = doc["ready"].as_bool() == Some(true);
    rows.push(["ready".into(), if ready { "yes" } else { "NO" }.into()]);
    for c in doc["checks"].as_array().into_iter().flatten() {
        let mark = if c["ok"].as_bool() == Some(true) {
            "ok"
        } else {
            "FAIL"
        };
        rows.push([
            format!("  {}", s(&c["name"])),
            format!("{mark}  {}", s(&c["detail"])),
        ]);
    }
    let t = &doc["tunnel"];
    let tunnel = if t.is_null() {
        "no gateway configured".to_owned()
    } else {
        let mut parts = vec![s(&t["state"])];
        if !t["gateway"].is_null() {
            parts.push(format!("to {}", s(&t["gateway"])));
        }
        if let Some(n) = t["session"].as_u64() {
            parts.push(format!("connection {n}"));
        }
        if let Some(n) = t["registered"].as_u64() {
            parts.push(format!("{n} names"));
        }
        if let Some(since) = t["connected_since"].as_u64() {
            parts.push(format!("for {}", ago(since)));
        }
        if !t["reason"].is_null() {
            parts.push(s(&t["reason"]));
        }
        let links = t["gateways"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if !links.is_empty() {
            let up = links.iter().filter(|l| l["state"] == "connected").count();
            parts.insert(0, format!("{up}/{} gateways", links.len()));
        }
        parts.join(", ")
    };
    rows.push(["tunnel".into(), tunnel]);
    for l in t["gateways"].as_array().into_iter().flatten() {
        let mut parts = vec![s(&l["state"])];
        if !l["transport"].is_null() {
            parts.push(format!("over {}", s(&l["transport"])));
        }
        if !l["reason"].is_null() {
            parts.push(s(&l["reason"]));
        }
        // The address says which gateway; the pinned id is in `--json`.
        let gateway = s(&l["gateway"]);
        let at = gateway
            .rsplit_once('@')
            .map_or(gateway.as_str(), |(_, at)| at);
        rows.push([format!("  {at}"), parts.join(", ")]);
    }
    let r = &doc["relay"];
    rows.push([
        "relay".into(),
        if r["detail"].is_null() {
            s(&r["state"])
        } else {
            format!("{} {}", s(&r["state"]), s(&r["detail"]))
        },
    ]);
    let pairs = |v: &Value| {
        let list: Vec<String> = v
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} {}", s(v)))
            .collect();
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        }
    };
    rows.push(["deployments".into(), pairs(&doc["deployments"])]);
    rows.push(["deploys".into(), pairs(&doc["deploys"])]);
    let m = &doc["machine"];
    let gib = |v: &Value| {
        format!(
            "{:.1} GiB",
            v.as_f64().unwrap_or(0.0) / f64::from(1u32 << 30)
        )
    };
    rows.push([
        "cpu".into(),
        format!("{:.0}%", m["cpu_ratio"].as_f64().unwrap_or(0.0) * 100.0),
    ]);
    rows.push([
        "memory".into(),
        format!(
            "{} used of {}",
            gib(&m["memory_used_bytes"]),
            gib(&m["memory_total_bytes"])
        ),
    ]);
    rows.push([
        "disk".into(),
        format!(
            "{} free of {} ({})",
            gib(&m["disk_free_bytes"]),
            gib(&m["disk_total_bytes"]),
            s(&m["disk_path"])
        ),
    ]);
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled);
    for row in rows {
        table.add_row(row.to_vec());
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = table.trim_fmt();
    out.push('\n');
    out
}

/// `text` with every control character shown as `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `3m`, `2h`: how long ago `unix` seconds was.
fn ago(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    humantime::format_duration(Duration::from_secs(now.saturating_sub(unix))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_every_part() {
        let doc = serde_json::json!({
            "peer_id": "12D3KooWx", "version": "0.1.0", "commit": "abc1234", "ready": false,
            "checks": [{"name": "tunnel", "ok": true, "detail": "connected"},
                       {"name": "docker", "ok": false, "detail": "timed out"}],
            "tunnel": {"state": "connected", "gateway": "127.0.0.1:8443", "session": 2,
                       "registered": 1, "connected_since": null, "reason": null},
            "relay": {"state": "failed", "detail": "refused\u{1b}]0;pwned\u{7}\u{1b}[2J"},
            "deployments": {"halted": 0, "running": 2},
            "deploys": {"ok": 3},
            "machine": {"cpu_ratio": 0.25, "memory_used_bytes": 1073741824u64,
                        "memory_total_bytes": 4294967296u64, "disk_free_bytes": 0,
                        "disk_total_bytes": 0, "disk_path": "/var/lib/docker"}
        });
        let t = table(&doc);
        for want in [
            "ready        NO",
            "  docker     FAIL  timed out",
            "tunnel       connected, to 127.0.0.1:8443, connection 2, 1 names",
            "relay        failed refused?]0;pwned??[2J",
            "deployments  halted 0, running 2",
            "deploys      ok 3",
            "cpu          25%",
            "memory       1.0 GiB used of 4.0 GiB",
        ] {
            assert!(t.contains(want), "{want:?} missing in\n{t}");
        }
        assert!(
            !t.contains("gateways"),
            "one gateway: no per-gateway rows\n{t}"
        );
    }

    #[test]
    fn several_gateways_each_get_a_row() {
        let doc = serde_json::json!({
            "peer_id": "12D3KooWx", "version": "0.1.0", "commit": "abc1234", "ready": true,
            "checks": [],
            "tunnel": {"state": "connected", "gateway": "127.0.0.1:8443", "session": 1,
                       "registered": 1, "connected_since": null, "reason": null,
                       "gateways": [
                {"gateway": "gw1.example.com:8443", "state": "connected", "transport": "quic",
                 "address": "192.0.2.1:8443", "reason": null},
                {"gateway": "12D3KooWx@gw2.example.com:8443", "state": "connecting", "transport": null,
                 "address": null, "reason": null},
                {"gateway": "gw3.example.com:8443", "state": "connected", "transport": "tcp",
                 "address": "192.0.2.3:443", "reason": null}]},
            "relay": {"state": "waiting", "detail": null},
            "deployments": {}, "deploys": {}, "machine": {}
        });
        let t = table(&doc);
        for want in [
            "tunnel                  2/3 gateways, connected, to 127.0.0.1:8443",
            "  gw1.example.com:8443  connected, over quic",
            "  gw2.example.com:8443  connecting",
            "  gw3.example.com:8443  connected, over tcp",
        ] {
            assert!(t.contains(want), "{want:?} missing in\n{t}");
        }
    }
}
