//! [`ClusterError`]: what went wrong talking to the cluster store, written so that the person
//! reading it knows what to do. Errors from etcd are classified here once: unreachable (the
//! cache keeps answering; new names wait), refused (credentials), or a value that is not ours.

use std::path::PathBuf;

use crate::keys::SCHEMA;

/// An error of the cluster store. Cloneable, so one cause can be handed to every caller that
/// waited on it ([`Claim::Unavailable`](crate::Claim::Unavailable) carries one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// An endpoint is not a URL etcd-client can dial.
    #[error(
        "cluster endpoint {endpoint:?} is not usable ({reason}): give etcd://HOST:PORT, etcds://HOST:PORT (TLS), or http(s)://HOST:PORT"
    )]
    InvalidEndpoint { endpoint: String, reason: String },
    /// A name, peer id or domain that cannot be one key segment.
    #[error("{what} {value:?} cannot be stored in the cluster: {reason}")]
    InvalidKey {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// etcd did not answer (down, partitioned, or slower than the request timeout).
    #[error(
        "etcd unreachable at {endpoints} ({detail}): new names are refused until it is back; names already registered keep working"
    )]
    Unreachable { endpoints: String, detail: String },
    /// etcd answered but refused this gateway (authentication, permissions).
    #[error(
        "etcd at {endpoints} refused this gateway ({detail}): check the cluster user, its password file and its role's permissions on the /peercompute/ prefix"
    )]
    Refused { endpoints: String, detail: String },
    /// The cluster was written by a newer gateway.
    #[error(
        "the cluster store at {endpoints} uses schema {found} and this gateway knows only {SCHEMA}: upgrade this gateway before starting it in this cluster"
    )]
    SchemaTooNew { endpoints: String, found: String },
    /// A value in etcd that this crate did not write in that shape.
    #[error(
        "{key} in etcd holds a value this gateway cannot read ({reason}): fix or delete it with etcdctl"
    )]
    BadValue { key: String, reason: String },
    /// The cache's mirror file could not be read or written.
    #[error("cluster cache file {path}: {detail}")]
    Mirror { path: PathBuf, detail: String },
    /// The store was shut down.
    #[error("the cluster store was shut down")]
    Closed,
}

impl ClusterError {
    /// Whether the operation may succeed later without anyone changing anything (etcd back).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }

    /// Classifies an etcd-client error from a call to `endpoints`.
    pub(crate) fn from_etcd(endpoints: &str, err: &etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        let endpoints = endpoints.to_owned();
        match err {
            E::GRpcStatus(status) => {
                let detail = format!("{:?}: {}", status.code(), status.message());
                // gRPC codes 7 (PERMISSION_DENIED) and 16 (UNAUTHENTICATED) mean "not allowed",
                // not "not there"; tonic is etcd-client's dependency, not ours, so by number.
                match status.code() as i32 {
                    7 | 16 => Self::Refused { endpoints, detail },
                    _ => Self::Unreachable { endpoints, detail },
                }
            }
            E::InvalidUri(e) => Self::InvalidEndpoint {
                endpoint: endpoints,
                reason: e.to_string(),
            },
            other => Self::Unreachable {
                endpoints,
                detail: other.to_string(),
            },
        }
    }

    /// The error for a call that got no answer within `timeout`.
    pub(crate) fn timed_out(endpoints: &str, what: &str, timeout: std::time::Duration) -> Self {
        Self::Unreachable {
            endpoints: endpoints.to_owned(),
            detail: format!("{what}: no answer within {timeout:?}"),
        }
    }
}
