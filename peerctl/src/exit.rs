//! Errors as users meet them, each with a distinct exit code so scripts can react; printed as
//! `error: …` for people or, with `--json`, as one JSON object on stderr for scripts:
//! `{"error":"…","kind":"unreachable","exit_code":4}`.

use std::process::ExitCode;

use peercompute_tunnel_proto::ErrorCode;

use crate::resolve::{Candidate, ResolveError};

/// What kind of failure, and its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything else (1).
    Other,
    /// The command line is wrong: an unknown flag, a missing argument (2, as clap's own).
    Usage,
    /// The deployment argument matches several deployments (2).
    Ambiguous,
    /// Trust missing on one side, or a bad signature (3).
    Trust,
    /// The provider could not be reached (4).
    Unreachable,
    /// The provider's limits are exhausted (5).
    Limit,
    /// No such deployment (6).
    NotFound,
    /// Image missing or for another platform (7).
    Image,
    /// The request itself is wrong (8).
    BadRequest,
    /// A device asked for is not granted to you (3, like trust: only the provider's owner can
    /// change it).
    NotGranted,
    /// The volume is mounted by a deployment (8, like a bad request: stop it first).
    InUse,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Other => 1,
            Self::Usage | Self::Ambiguous => 2,
            Self::Trust | Self::NotGranted => 3,
            Self::Unreachable => 4,
            Self::Limit => 5,
            Self::NotFound => 6,
            Self::Image => 7,
            Self::BadRequest | Self::InUse => 8,
        }
    }

    /// The kind's name in JSON errors: `other`, `usage`, `ambiguous`, `trust`, `unreachable`,
    /// `limit`, `not_found`, `image`, `bad_request`, `not_granted`, `in_use`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Other => "other",
            Self::Usage => "usage",
            Self::Ambiguous => "ambiguous",
            Self::Trust => "trust",
            Self::Unreachable => "unreachable",
            Self::Limit => "limit",
            Self::NotFound => "not_found",
            Self::Image => "image",
            Self::BadRequest => "bad_request",
            Self::NotGranted => "not_granted",
            Self::InUse => "in_use",
        }
    }

    /// The kind of a provider's protocol error.
    pub fn of(code: ErrorCode) -> Self {
        match code {
            ErrorCode::NotTrusted
            | ErrorCode::BadSignature
            | ErrorCode::Replayed
            | ErrorCode::Stale => Self::Trust,
            ErrorCode::LimitExceeded => Self::Limit,
            ErrorCode::NotFound => Self::NotFound,
            ErrorCode::ImageNotFound | ErrorCode::ImagePlatform => Self::Image,
            ErrorCode::BadRequest => Self::BadRequest,
            ErrorCode::NotGranted => Self::NotGranted,
            ErrorCode::InUse => Self::InUse,
            _ => Self::Other,
        }
    }
}

/// A one-line error for the user, with its kind (and, when a deployment argument was
/// ambiguous, the deployments it matched).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub kind: Kind,
    pub message: String,
    /// The deployments an ambiguous argument matched (empty otherwise).
    pub candidates: Vec<Candidate>,
}

impl CliError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            candidates: Vec::new(),
        }
    }

    /// `{"error": message, "kind": name, "exit_code": n}`, plus `"candidates": [{id, name}]`
    /// for an ambiguous deployment argument, on one line, fields in that order.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(&JsonError {
            error: &self.message,
            kind: self.kind.name(),
            exit_code: self.kind.exit_code(),
            candidates: &self.candidates,
        })
        .unwrap_or_else(|_| format!("{{\"error\":{:?}}}", self.message))
    }

    /// Prints the error on stderr (`error: …`, or one JSON line with `json`) and returns the
    /// exit code of its kind.
    pub fn report(&self, json: bool) -> ExitCode {
        if json {
            eprintln!("{}", self.to_json_line());
        } else {
            eprintln!("error: {}", self.message);
        }
        ExitCode::from(self.kind.exit_code())
    }
}

/// The JSON form of a [`CliError`], fields in the order people read them.
#[derive(serde::Serialize)]
struct JsonError<'a> {
    error: &'a str,
    kind: &'static str,
    exit_code: u8,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    candidates: &'a [Candidate],
}

impl From<ResolveError> for CliError {
    fn from(e: ResolveError) -> Self {
        let message = e.to_string();
        match e {
            ResolveError::NotFound { .. } => Self::new(Kind::NotFound, message),
            ResolveError::Ambiguous { candidates, .. } => Self {
                kind: Kind::Ambiguous,
                message,
                candidates,
            },
        }
    }
}

/// A command line clap refused (or `--help`/`--version`). With `json` (the arguments asked
/// for `--json`) a refusal is one JSON object of kind `usage` on stderr; help and version
/// print as usual.
pub fn clap_failure(e: &clap::Error, json: bool) -> ExitCode {
    if !json || !e.use_stderr() {
        let _ = e.print();
        return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
    }
    let rendered = e.render().to_string();
    // clap's message is "error: <what>\n\n<usage>\n\nFor more information, try '--help'.":
    // the JSON keeps the first part, which says what is wrong.
    let what = rendered
        .split("\n\n")
        .next()
        .unwrap_or(&rendered)
        .trim()
        .trim_start_matches("error: ");
    CliError::new(Kind::Usage, what).report(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_carry_kind_and_exit_code() {
        let e = CliError::new(Kind::Unreachable, "cannot reach provider 12D3KooW…");
        assert_eq!(
            e.to_json_line(),
            r#"{"error":"cannot reach provider 12D3KooW…","kind":"unreachable","exit_code":4}"#
        );
        let codes: Vec<(&str, u8)> = [
            Kind::Other,
            Kind::Usage,
            Kind::Ambiguous,
            Kind::Trust,
            Kind::Unreachable,
            Kind::Limit,
            Kind::NotFound,
            Kind::Image,
            Kind::BadRequest,
            Kind::NotGranted,
            Kind::InUse,
        ]
        .into_iter()
        .map(|k| (k.name(), k.exit_code()))
        .collect();
        assert_eq!(
            codes,
            [
                ("other", 1),
                ("usage", 2),
                ("ambiguous", 2),
                ("trust", 3),
                ("unreachable", 4),
                ("limit", 5),
                ("not_found", 6),
                ("image", 7),
                ("bad_request", 8),
                ("not_granted", 3),
                ("in_use", 8),
            ]
        );
        assert_eq!(Kind::of(ErrorCode::NotGranted), Kind::NotGranted);
        assert_eq!(Kind::of(ErrorCode::InUse), Kind::InUse);
        assert_eq!(Kind::of(ErrorCode::Unknown), Kind::Other);
    }

    #[test]
    fn ambiguity_lists_candidates_in_json() {
        let e = CliError::from(ResolveError::Ambiguous {
            arg: "a1".into(),
            candidates: vec![
                Candidate {
                    id: "a1b2c3d4e5f6".into(),
                    name: "web".into(),
                },
                Candidate {
                    id: "a1ff00112233".into(),
                    name: "api".into(),
                },
            ],
        });
        let json: serde_json::Value =
            serde_json::from_str(&e.to_json_line()).expect("one JSON object");
        assert_eq!(json["kind"], "ambiguous");
        assert_eq!(json["exit_code"], 2);
        assert_eq!(json["candidates"][1]["name"], "api");
        assert!(
            json["error"]
                .as_str()
                .is_some_and(|m| m.contains("a1ff00112233 (api)"))
        );
    }
}
