//! Who may use the admin listener: an axum middleware over [`peercompute_ops::tokens`].
//!
//! The rules, in order (the decision itself is the pure [`verdict`], table-tested below):
//! 1. Except `/healthz` and `/readyz` (load balancers probe them by any name), the `Host` must
//!    be an IP literal, `localhost` or a name given with `--admin-host`; else **421**. This
//!    stops DNS rebinding from reaching the token-less loopback default from a web page.
//! 2. With `--admin-token-file`, `/api/*` and `/metrics` need `Authorization: Bearer TOKEN`.
//!    Missing, unknown or malformed: **401** with an empty body and `WWW-Authenticate: Bearer`,
//!    nothing that tells whether a token exists. The dashboard's assets stay open: they hold no
//!    data, and the page asks for the token.
//! 3. Mutations (anything but GET and HEAD) need `Content-Type: application/json`, else
//!    **415**: a cross-site form cannot send it without a CORS preflight, which is never
//!    granted (no CORS headers are sent and no cookies are used).
//! 4. A `read` token may not mutate: **403**.
//!
//! The `Authorization` header is never logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use peercompute_ops::hosts::host_allowed;
use peercompute_ops::tokens::Role;

use super::AdminState;

/// What the middleware decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Pass,
    /// 421: the Host is not one this listener answers to.
    Misdirected,
    /// 401: a token is needed and the one given (if any) is not known.
    Unauthorized,
    /// 415: a mutation without `Content-Type: application/json`.
    NotJson,
    /// 403: a read token on a mutation.
    ReadOnly,
}

/// What the request presented, as far as the rules care.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts<'a> {
    pub(super) method: &'a Method,
    pub(super) path: &'a str,
    pub(super) host_ok: bool,
    /// `None`: no token file (no token needed). `Some(None)`: needed, none valid given.
    pub(super) role: Option<Option<Role>>,
    pub(super) json: bool,
}

/// The rules of the module header, pure.
pub(super) fn verdict(f: Facts<'_>) -> Verdict {
    let probe = matches!(f.path, "/healthz" | "/readyz");
    if probe {
        return Verdict::Pass;
    }
    if !f.host_ok {
        return Verdict::Misdirected;
    }
    let guarded = f.path == "/metrics" || f.path == "/api" || f.path.starts_with("/api/");
    if !guarded {
        return Verdict::Pass;
    }
    if let Some(None) = f.role {
        return Verdict::Unauthorized;
    }
    let mutation = !matches!(*f.method, Method::GET | Method::HEAD);
    if mutation && !f.json {
        return Verdict::NotJson;
    }
    if mutation && f.role == Some(Some(Role::Read)) {
        return Verdict::ReadOnly;
    }
    Verdict::Pass
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// What the caller may do, handed to the handlers (`GET /api/v1/whoami`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Access {
    /// `Admin` too when no token file is configured (loopback only).
    pub(super) role: Role,
    pub(super) tokens_required: bool,
}

/// The middleware: answers the refusals itself, passes the rest on.
pub(super) async fn guard(
    State(st): State<Arc<AdminState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let role = st.tokens.as_ref().map(|tokens| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| tokens.check(v))
    });
    let facts = Facts {
        method: req.method(),
        path: req.uri().path(),
        host_ok: host_allowed(headers.get(header::HOST), &st.shared.config.admin_host),
        role,
        json: is_json(headers),
    };
    match verdict(facts) {
        Verdict::Pass => {
            req.extensions_mut().insert(Access {
                role: role.map_or(Role::Admin, |r| r.unwrap_or(Role::Read)),
                tokens_required: role.is_some(),
            });
            next.run(req).await
        }
        Verdict::Misdirected => (
            StatusCode::MISDIRECTED_REQUEST,
            "this admin listener answers to an IP address, localhost or an --admin-host name\n",
        )
            .into_response(),
        Verdict::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response(),
        Verdict::NotJson => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send Content-Type: application/json\n",
        )
            .into_response(),
        Verdict::ReadOnly => (
            StatusCode::FORBIDDEN,
            "this token is read-only; use an admin token\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truth_table_tokens_by_method_by_host() {
        use Verdict::*;
        // {no file, none, wrong, read, admin} × {GET, POST, DELETE}, with JSON and a good Host.
        let roles: [(&str, Option<Option<Role>>); 5] = [
            ("no file", None),
            ("none", Some(None)),
            ("wrong", Some(None)),
            ("read", Some(Some(Role::Read))),
            ("admin", Some(Some(Role::Admin))),
        ];
        let want = |who: &str, m: &Method| match (who, *m == Method::GET) {
            ("none" | "wrong", _) => Unauthorized,
            ("read", false) => ReadOnly,
            _ => Pass,
        };
        for (who, role) in roles {
            for method in [Method::GET, Method::POST, Method::DELETE] {
                for path in ["/api/v1/providers", "/metrics"] {
                    let f = Facts {
                        method: &method,
                        path,
                        host_ok: true,
                        role,
                        json: true,
                    };
                    assert_eq!(verdict(f), want(who, &method), "{who} {method} {path}");
                    // A bad Host is refused first, whatever the token.
                    let f = Facts {
                        host_ok: false,
                        ..f
                    };
                    assert_eq!(verdict(f), Misdirected, "{who} {method} {path}");
                }
            }
        }
    }

    #[test]
    fn probes_and_assets_and_content_type() {
        use Verdict::*;
        let get = Method::GET;
        let post = Method::POST;
        let base = Facts {
            method: &get,
            path: "/healthz",
            host_ok: false,
            role: Some(None),
            json: false,
        };
        assert_eq!(verdict(base), Pass, "probes: any host, no token");
        assert_eq!(
            verdict(Facts {
                path: "/readyz",
                ..base
            }),
            Pass
        );
        let page = Facts {
            path: "/",
            host_ok: true,
            ..base
        };
        assert_eq!(verdict(page), Pass, "assets are open");
        assert_eq!(
            verdict(Facts {
                host_ok: false,
                ..page
            }),
            Misdirected
        );
        let mutate = Facts {
            method: &post,
            path: "/api/v1/providers/x/disconnect",
            host_ok: true,
            role: None,
            json: false,
        };
        assert_eq!(verdict(mutate), NotJson, "no token file still needs JSON");
        assert_eq!(
            verdict(Facts {
                json: true,
                ..mutate
            }),
            Pass
        );
        assert_eq!(
            verdict(Facts {
                role: Some(Some(Role::Read)),
                ..mutate
            }),
            NotJson
        );
    }
}
