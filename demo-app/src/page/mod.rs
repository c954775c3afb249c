//! `GET /`: one self-contained HTML page (inline CSS and JS, no external assets) showing
//! which provider served it, the request headers as the container received them (proxy
//! headers highlighted) and a live WebSocket counter with an echo box. Every value that came
//! from the request or the environment goes through [`escape_html`].

use std::fmt::Write as _;

use crate::info::Info;
use crate::request::{FORWARDING_HEADERS, SeenRequest, is_forwarding_header};

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("script.js");

/// Escapes `&`, `<`, `>`, `"` and `'` so the text is inert in HTML content and attributes.
///
/// ```
/// assert_eq!(
///     peercompute_demo::escape_html(r#"<script>alert("x&y")</script>"#),
///     "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;"
/// );
/// ```
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

pub(crate) fn render(info: &Info, seen: &SeenRequest) -> String {
    let title = match (&info.name, &info.provider) {
        (Some(name), _) => format!("{} on Peer Compute", escape_html(name)),
        (None, Some(_)) => "Served through Peer Compute".to_owned(),
        (None, None) => "Peer Compute demo app".to_owned(),
    };
    let subtitle = match &info.provider {
        Some(p) => format!("Served by provider <code>{}</code>", escape_html(p)),
        None => "Not running under a Peer Compute provider (no PEERCOMPUTE_PROVIDER)".to_owned(),
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{STYLE}</style>
</head>
<body>
<header><h1>{title}</h1><p>{subtitle}</p></header>
<main>
<section class="card">
<h2>Where this ran</h2>
<table>{where_rows}</table>
</section>
<section class="card">
<h2>Live WebSocket <small id="ws-url"></small></h2>
<div id="counter" class="counter">–</div>
<div id="ws-status" class="status wait">connecting…</div>
<form id="echo-form"><input id="echo-input" placeholder="Type a message to echo" autocomplete="off"><button>Send</button></form>
<div id="echo-rtt" class="note">The server sends a counter every second and echoes what you send.</div>
<ul id="echo-log" class="log"></ul>
</section>
<section class="card wide">
<h2>Request headers <small>as the container received them</small></h2>
<table>{header_rows}</table>
<p class="note">{forwarding_note}</p>
</section>
</main>
<footer>Also: <a href="/api/info">/api/info</a> · <a href="/healthz">/healthz</a> · <a href="/proc-status">/proc-status</a></footer>
<script>{SCRIPT}</script>
</body>
</html>
"#,
        where_rows = where_rows(info, seen),
        header_rows = header_rows(seen),
        forwarding_note = forwarding_note(seen),
    )
}

fn where_rows(info: &Info, seen: &SeenRequest) -> String {
    let uptime = format!("{} s", info.uptime().as_secs());
    let remote = seen.remote.to_string();
    let rows: [(&str, Option<&str>); 6] = [
        ("Provider", info.provider.as_deref()),
        ("Deployment", info.deployment.as_deref()),
        ("Name", info.name.as_deref()),
        ("Hostname", info.hostname.as_deref()),
        ("Uptime", Some(&uptime)),
        ("TCP peer", Some(&remote)),
    ];
    let mut out = String::new();
    for (label, value) in rows {
        let cell = match value {
            Some(v) => escape_html(v),
            None => r#"<span class="unknown">not set</span>"#.to_owned(),
        };
        let _ = write!(out, "<tr><th>{label}</th><td>{cell}</td></tr>");
    }
    out
}

fn header_rows(seen: &SeenRequest) -> String {
    let mut out = String::new();
    for (name, value) in &seen.headers {
        let class = if is_forwarding_header(name) {
            r#" class="fwd""#
        } else {
            ""
        };
        let _ = write!(
            out,
            "<tr{class}><th>{}</th><td>{}</td></tr>",
            escape_html(name),
            escape_html(value)
        );
    }
    out
}

fn forwarding_note(seen: &SeenRequest) -> String {
    let highlighted = FORWARDING_HEADERS.join(", ");
    if seen.header("x-forwarded-for").is_some() {
        format!(
            "Highlighted: {highlighted}. The gateway added the X-Forwarded-* and Forwarded \
             headers; the TCP peer is the provider's end of the tunnel, not your browser."
        )
    } else {
        format!(
            "Highlighted: {highlighted}. No X-Forwarded-For: this request reached the \
             container directly, not through the gateway."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_table() {
        for (input, want) in [
            ("plain", "plain"),
            ("a&b", "a&amp;b"),
            ("<script>", "&lt;script&gt;"),
            (r#""quoted""#, "&quot;quoted&quot;"),
            ("it's", "it&#39;s"),
            ("ünïcödé", "ünïcödé"),
            ("", ""),
        ] {
            assert_eq!(escape_html(input), want, "{input:?}");
        }
    }

    #[test]
    fn page_escapes_environment_values_too() {
        let info = Info {
            provider: Some("<b>p</b>".into()),
            name: Some("n&m".into()),
            ..Info::default()
        };
        let seen = SeenRequest {
            method: "GET".into(),
            target: "/".into(),
            remote: ([127, 0, 0, 1], 1).into(),
            headers: vec![("host".into(), "x".into())],
        };
        let page = render(&info, &seen);
        assert!(page.contains("&lt;b&gt;p&lt;/b&gt;"));
        assert!(page.contains("n&amp;m on Peer Compute"));
        assert!(!page.contains("<b>p</b>"));
        assert!(page.contains(r#"<tr class="fwd"><th>host</th><td>x</td></tr>"#));
    }
}
