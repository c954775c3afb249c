//! The engine's own measure of its volumes (`GET /system/df`), for hosts where the provider
//! cannot read the volumes' directories itself (the packaged daemon runs as its own user in the
//! `docker` group, and `/var/lib/docker` is root's). bollard 0.21 types the answer in the API
//! 1.52 shape (`VolumeUsage.Items`) and reads nothing from older engines, which answer with a
//! top-level `Volumes` list (API 1.41, Docker 20.10), so this module asks with a plain
//! HTTP/1.0 request on the engine's socket and reads either shape. On API 1.41 the engine also
//! sizes every container for this call (it ignores `type=volume`), so answers are kept for
//! [`DF_MAX_AGE`] and shared by the checks of one round.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long one `system df` answer is reused.
pub(crate) const DF_MAX_AGE: Duration = Duration::from_secs(10);
/// Most bytes of answer read (images and containers are listed too).
const MAX_ANSWER: u64 = 32 << 20;
/// How long the engine may take (it walks every volume and container layer).
const DF_TIMEOUT: Duration = Duration::from_secs(120);

/// The last answer and when it came.
#[derive(Debug, Default)]
pub(crate) struct DfCache {
    last: Option<(Instant, HashMap<String, Option<u64>>)>,
}

impl DfCache {
    /// The sizes if the answer is younger than [`DF_MAX_AGE`].
    pub(crate) fn fresh(&self, now: Instant) -> Option<&HashMap<String, Option<u64>>> {
        self.last
            .as_ref()
            .filter(|(at, _)| now.duration_since(*at) < DF_MAX_AGE)
            .map(|(_, sizes)| sizes)
    }

    /// Keeps `sizes`, measured at `at`.
    pub(crate) fn store(&mut self, at: Instant, sizes: HashMap<String, Option<u64>>) {
        self.last = Some((at, sizes));
    }
}

/// Asks the engine at `endpoint` (`unix:///path` or `tcp://host:port`, plain HTTP) for every
/// volume's size; `None` where the engine says -1 (not computed).
pub(crate) async fn volume_sizes(endpoint: &str) -> Result<HashMap<String, Option<u64>>, String> {
    let request = "GET /system/df?type=volume HTTP/1.0\r\nHost: docker\r\n\r\n";
    let answer = tokio::time::timeout(DF_TIMEOUT, async {
        if let Some(path) = endpoint.strip_prefix("unix://") {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
            exchange(stream, request).await
        } else if let Some(addr) = endpoint.strip_prefix("tcp://") {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
            exchange(stream, request).await
        } else {
            Err(format!("{endpoint} is neither unix:// nor tcp://"))
        }
    })
    .await
    .map_err(|_| format!("system df took longer than {DF_TIMEOUT:?}"))??;
    let body = http_body(&answer)?;
    parse_volume_sizes(body)
}

async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    request: &str,
) -> Result<Vec<u8>, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request failed: {e}"))?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER + 1)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?;
    if answer.len() as u64 > MAX_ANSWER {
        return Err(format!("the answer is over {MAX_ANSWER} bytes"));
    }
    Ok(answer)
}

/// The body of a complete HTTP/1.x answer with status 200 (not chunked: asked as HTTP/1.0).
fn http_body(answer: &[u8]) -> Result<&[u8], String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no end of headers")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if !head.starts_with("HTTP/1.") || status != "200" {
        let line = head.lines().next().unwrap_or_default();
        return Err(format!("the engine answered {line:?}"));
    }
    if head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:"))
    {
        return Err("the engine answered with a transfer encoding".to_owned());
    }
    Ok(&answer[split + 4..])
}

/// Volume name → size from a `system df` body of either shape: `{"Volumes": [...]}` (API
/// ≤ 1.51) or `{"VolumeUsage": {"Items": [...]}}` (API ≥ 1.52).
fn parse_volume_sizes(body: &[u8]) -> Result<HashMap<String, Option<u64>>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let volumes = value
        .get("Volumes")
        .filter(|v| !v.is_null())
        .or_else(|| value.get("VolumeUsage").and_then(|u| u.get("Items")))
        .and_then(serde_json::Value::as_array)
        .ok_or("the answer lists no volumes")?;
    Ok(volumes
        .iter()
        .filter_map(|volume| {
            let name = volume.get("Name")?.as_str()?.to_owned();
            let size = volume
                .get("UsageData")
                .and_then(|u| u.get("Size"))
                .and_then(serde_json::Value::as_i64)
                .and_then(|s| u64::try_from(s).ok());
            Some((name, size))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_answer_shapes_are_read_and_minus_one_is_unknown() {
        let old = br#"{"LayersSize":0,"Images":[],"Containers":[],"Volumes":[
            {"Name":"a","UsageData":{"RefCount":1,"Size":5242880}},
            {"Name":"b","UsageData":{"RefCount":0,"Size":-1}},
            {"Name":"c"}],"BuildCache":null}"#;
        let sizes = parse_volume_sizes(old).expect("old shape");
        assert_eq!(sizes.get("a"), Some(&Some(5_242_880)));
        assert_eq!(sizes.get("b"), Some(&None));
        assert_eq!(sizes.get("c"), Some(&None));
        let new = br#"{"VolumeUsage":{"ActiveCount":1,"TotalSize":7,"Items":[
            {"Name":"a","UsageData":{"RefCount":1,"Size":7}}]}}"#;
        let sizes = parse_volume_sizes(new).expect("new shape");
        assert_eq!(sizes.get("a"), Some(&Some(7)));
        for bad in [&b"[]"[..], b"{}", b"{\"Volumes\":null}", b"not json"] {
            assert!(parse_volume_sizes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn http_answers_table() {
        let ok = b"HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\n\r\n{\"Volumes\":[]}";
        assert_eq!(http_body(ok), Ok(&b"{\"Volumes\":[]}"[..]));
        let refused = b"HTTP/1.0 500 Internal Server Error\r\n\r\n{}";
        assert!(http_body(refused).expect_err("500").contains("500"));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert!(http_body(chunked).is_err());
        assert!(http_body(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(http_body(b"SSH-2.0-x\r\n\r\n").is_err());
    }

    #[test]
    fn answers_are_reused_for_a_while_only() {
        let mut cache = DfCache::default();
        let t0 = Instant::now();
        assert!(cache.fresh(t0).is_none());
        cache.store(t0, HashMap::from([("a".to_owned(), Some(1))]));
        assert!(cache.fresh(t0 + DF_MAX_AGE / 2).is_some());
        assert!(cache.fresh(t0 + DF_MAX_AGE).is_none());
    }
}
