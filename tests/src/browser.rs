//! A real headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`,
//! packaged at the same version) through fantoccini, for the dashboard test.
//!
//! chromedriver takes no port 0, so a free port is found by binding and releasing one, and the
//! start is retried up to three times (another process may take the port in between).
//! Readiness is `GET /status` answering `ready: true`. The driver is killed when the
//! [`Browser`] is dropped. Missing binaries fail the test with what to run, unless
//! `PEERCOMPUTE_SKIP_BROWSER=1` (CI never sets it), which skips it loudly.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A WebDriver session in a fresh headless Chromium.
pub struct Browser {
    pub client: Client,
    driver_url: String,
    session: String,
    _driver: Child,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver", &self.driver_url)
            .finish_non_exhaustive()
    }
}

/// Whether the browser test may run; panics with what to do when it may not and no skip was
/// asked for. `false` (skip, printed loudly) only with `PEERCOMPUTE_SKIP_BROWSER=1`.
pub fn available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("PEERCOMPUTE_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!(
            "\n**** SKIPPED: the dashboard browser test: {} missing (PEERCOMPUTE_SKIP_BROWSER=1) ****\n",
            missing.join(", ")
        );
        return false;
    }
    panic!(
        "{} missing: run scripts/prerequisites (installs chromium and chromium-driver), \
         or set PEERCOMPUTE_SKIP_BROWSER=1 to skip this test on purpose",
        missing.join(", ")
    );
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("addr").port()
}

async fn driver_ready(url: &str, deadline: Instant) -> bool {
    let http = reqwest::Client::new();
    while Instant::now() < deadline {
        if let Ok(resp) = http.get(format!("{url}/status")).send().await
            && let Ok(text) = resp.text().await
            && let Ok(v) = serde_json::from_str::<Value>(&text)
            && v["value"]["ready"] == true
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn start_driver() -> (Child, String) {
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        // Its own process group, so dropping the Browser ends Chromium too (chromedriver's
        // children would outlive a SIGKILL of chromedriver alone).
        let mut child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {CHROMEDRIVER}: {e}"));
        let url = format!("http://127.0.0.1:{port}");
        if driver_ready(&url, Instant::now() + Duration::from_secs(10)).await {
            return (child, url);
        }
        last = format!("chromedriver on port {port} not ready within 10 s");
        let _ = child.kill().await;
    }
    panic!("{last} (3 attempts)");
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self._driver.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session (30 s for a cold first start).
    pub async fn start() -> Self {
        let (driver, driver_url) = start_driver().await;
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800",
                         "--no-first-run", "--no-default-browser-check"],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let client = crate::within(
            30,
            "a Chromium session",
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&driver_url),
        )
        .await
        .expect("WebDriver session");
        let session = client
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        Self {
            client,
            driver_url,
            session,
            _driver: driver,
        }
    }

    /// The browser's console entries at level SEVERE since the last call (chromedriver's
    /// `se/log`; empty when this chromedriver no longer has it), plus what the page itself
    /// collected in `window.__pcErrors` (errors, rejections, CSP violations).
    pub async fn errors(&self) -> Vec<String> {
        let mut out = Vec::new();
        let url = format!("{}/session/{}/se/log", self.driver_url, self.session);
        if let Ok(resp) = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(json!({"type": "browser"}).to_string())
            .send()
            .await
            && let Ok(text) = resp.text().await
            && let Ok(v) = serde_json::from_str::<Value>(&text)
            && let Some(entries) = v["value"].as_array()
        {
            for e in entries {
                if e["level"] == "SEVERE" {
                    out.push(e["message"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        if let Ok(Value::Array(page)) = self
            .client
            .execute(
                "return window.__pcErrors || ['no __pcErrors: app.js did not run'];",
                vec![],
            )
            .await
        {
            out.extend(page.into_iter().map(|v| v.to_string()));
        }
        out
    }

    /// Waits up to `secs` for `css` to match an element.
    pub async fn wait_for(&self, css: &str, secs: u64) -> fantoccini::elements::Element {
        crate::within(secs, css, async {
            loop {
                if let Ok(e) = self.client.find(Locator::Css(css)).await {
                    return e;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await
    }

    /// Waits up to `secs` for the text of `css` to satisfy `pred`; returns it. Re-finds the
    /// element each time, since the page re-renders its regions.
    pub async fn wait_text(&self, css: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        crate::within(secs, css, async {
            loop {
                if let Some(t) = self.text(css).await
                    && pred(&t)
                {
                    return t;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await
    }

    /// Clicks `css`, finding it again when the page re-rendered it between finding and clicking
    /// (a stale element), for up to `secs`.
    pub async fn click(&self, css: &str, secs: u64) {
        crate::within(secs, css, async {
            loop {
                if let Ok(e) = self.client.find(Locator::Css(css)).await
                    && e.click().await.is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
    }

    /// The text of `css`, if it matches.
    pub async fn text(&self, css: &str) -> Option<String> {
        self.client
            .find(Locator::Css(css))
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// Takes a screenshot, writes it to `path` (directories created) and returns the PNG.
    pub async fn screenshot(&self, path: &Path) -> Vec<u8> {
        let png = self.client.screenshot().await.expect("screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifact dir");
        }
        std::fs::write(path, &png).expect("write screenshot");
        png
    }
}

/// `target/test-artifacts/` (honours `CARGO_TARGET_DIR`).
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("test-artifacts")
}

/// Distinct colours and the share of pixels that differ from the top-left one.
pub fn png_variety(png: &[u8]) -> (usize, f64) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let first = pixels.first().copied().unwrap_or_default();
    let distinct: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    let differing = pixels.iter().filter(|p| **p != first).count();
    (
        distinct.len(),
        differing as f64 / pixels.len().max(1) as f64,
    )
}
