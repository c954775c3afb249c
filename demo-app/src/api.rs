//! `GET /api/info`: the page's information as JSON, for scripts and tests.
//!
//! ```text
//! {"provider": "12D3…" | null, "deployment": … | null, "name": … | null,
//!  "hostname": … | null, "uptime_secs": 42, "remote_addr": "10.0.0.2:51234",
//!  "method": "GET", "path": "/api/info",
//!  "headers": {"host": "…", "x-forwarded-for": "…", …}}
//! ```
//!
//! Repeated headers are folded into one value joined with `", "`.

use serde_json::{Map, Value, json};

use crate::info::Info;
use crate::request::SeenRequest;

pub(crate) fn info_json(info: &Info, seen: &SeenRequest) -> Value {
    let mut headers = Map::new();
    for (name, _) in &seen.headers {
        if !headers.contains_key(name) {
            let folded = seen.header(name).unwrap_or_default();
            headers.insert(name.clone(), Value::String(folded));
        }
    }
    json!({
        "provider": info.provider,
        "deployment": info.deployment,
        "name": info.name,
        "hostname": info.hostname,
        "uptime_secs": info.uptime().as_secs(),
        "remote_addr": seen.remote.to_string(),
        "method": seen.method,
        "path": seen.target,
        "headers": headers,
    })
}
