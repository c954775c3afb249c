//! The dashboard: three files embedded in the binary (`gateway/assets/dashboard/`), served at
//! `/`, `/app.js` and `/app.css` with a strict Content-Security-Policy (no inline script, no
//! other origin), an `ETag` (SHA-256 of the bytes) and `no-cache`, so a new binary's page is
//! picked up at once and an unchanged one costs a 304. The assets hold no data: the page
//! reads the API with the token the operator types (kept in `sessionStorage`).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// The policy on every dashboard answer.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

const INDEX: &[u8] = include_bytes!("../../assets/dashboard/index.html");
const APP_JS: &[u8] = include_bytes!("../../assets/dashboard/app.js");
const APP_CSS: &[u8] = include_bytes!("../../assets/dashboard/app.css");

struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

fn asset(bytes: &'static [u8], content_type: &'static str) -> Asset {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    Asset {
        bytes,
        content_type,
        etag: HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value"),
    }
}

fn assets() -> &'static [Asset; 3] {
    static ASSETS: OnceLock<[Asset; 3]> = OnceLock::new();
    ASSETS.get_or_init(|| {
        [
            asset(INDEX, "text/html; charset=utf-8"),
            asset(APP_JS, "text/javascript; charset=utf-8"),
            asset(APP_CSS, "text/css; charset=utf-8"),
        ]
    })
}

/// Bytes of the three assets (the page weight).
#[cfg(test)]
pub(crate) fn weight() -> usize {
    INDEX.len() + APP_JS.len() + APP_CSS.len()
}

fn serve(a: &Asset, headers: &HeaderMap) -> Response {
    let common = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::ETAG, a.etag.clone()),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == a.etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(a.content_type),
        )],
        a.bytes,
    )
        .into_response()
}

pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve(&assets()[0], &headers)
}

pub(crate) async fn app_js(headers: HeaderMap) -> Response {
    serve(&assets()[1], &headers)
}

pub(crate) async fn app_css(headers: HeaderMap) -> Response {
    serve(&assets()[2], &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_small_and_has_no_inline_script_or_other_origin() {
        assert!(weight() < 60 * 1024, "page weight {} bytes", weight());
        let html = std::str::from_utf8(INDEX).expect("utf-8");
        assert!(html.contains("<script src=\"/app.js\""), "{html}");
        assert!(!html.contains("<script>"), "no inline script");
        assert!(!html.contains("style="), "no inline style");
        for a in [INDEX, APP_JS, APP_CSS] {
            // The SVG namespace is a name, not a fetch.
            let text = std::str::from_utf8(a)
                .expect("utf-8")
                .replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        let js_lines = std::str::from_utf8(APP_JS).expect("utf-8").lines().count();
        assert!(js_lines <= 600, "app.js has {js_lines} lines");
    }

    #[tokio::test]
    async fn etag_gives_304() {
        let first = index(HeaderMap::new()).await;
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].clone();
        assert!(
            first.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .expect("csp")
                .contains("script-src 'self'")
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(index(headers).await.status(), StatusCode::NOT_MODIFIED);
    }
}
