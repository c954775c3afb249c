//! The key schema, written once: every key this crate reads or writes lives under
//! `/peercompute/v1/<domain>/`, so several gateway clusters (one per public domain) can share
//! one etcd. Below the prefix:
//!
//! | key               | value                         | written by                          |
//! |-------------------|-------------------------------|-------------------------------------|
//! | `schema`          | `1`                           | the first gateway that connects     |
//! | `names/<name>`    | [`NameRecord`] JSON           | `claim` (one Txn), removed by `release` |
//! | `allow/<peer>`    | [`PeerRecord`] JSON           | an operator (`allow`)               |
//! | `revoked/<peer>`  | [`PeerRecord`] JSON           | an operator (`revoke`)              |
//! | `released/<name>/<owner>` | [`HoldRecord`] JSON, on a 24 h lease | `release` (the hold on the previous owner) |
//!
//! A name or peer id is one path segment: never empty, no `/`, no control characters, at most
//! [`MAX_SEGMENT`] bytes. [`Keys::parse`] turns a key from a watch back into what it is;
//! anything else under the prefix is [`Key::Other`] and ignored (a later schema's keys).
//!
//! [`NameRecord`]: crate::NameRecord
//! [`PeerRecord`]: crate::PeerRecord
//! [`HoldRecord`]: crate::HoldRecord

use crate::error::ClusterError;

/// The schema version this crate writes; a gateway refuses to run on a higher one.
pub(crate) const SCHEMA: u32 = 1;

/// Longest name, peer id or domain segment, in bytes (a DNS name is at most 253).
pub(crate) const MAX_SEGMENT: usize = 253;

/// The keys of one domain's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    /// `/peercompute/v1/<domain>/`, with the trailing slash.
    root: String,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    Schema,
    Name(&'a str),
    Allow(&'a str),
    Revoked(&'a str),
    /// A release hold: (name, previous owner).
    Released(&'a str, &'a str),
    /// Under the prefix but not ours to read (a newer schema's key, a malformed one).
    Other,
}

impl Keys {
    /// The keys of `domain`'s cluster.
    pub(crate) fn new(domain: &str) -> Result<Self, ClusterError> {
        segment("domain", domain)?;
        Ok(Self {
            root: format!("/peercompute/v1/{domain}/"),
        })
    }

    /// Everything this cluster owns: the prefix the snapshot reads and the watch follows.
    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    pub(crate) fn schema(&self) -> String {
        format!("{}schema", self.root)
    }

    /// Every name's key starts with this.
    pub(crate) fn names_prefix(&self) -> String {
        format!("{}names/", self.root)
    }

    pub(crate) fn name(&self, name: &str) -> Result<String, ClusterError> {
        segment("name", name)?;
        Ok(format!("{}names/{name}", self.root))
    }

    pub(crate) fn allow(&self, peer: &str) -> Result<String, ClusterError> {
        segment("peer id", peer)?;
        Ok(format!("{}allow/{peer}", self.root))
    }

    pub(crate) fn revoked(&self, peer: &str) -> Result<String, ClusterError> {
        segment("peer id", peer)?;
        Ok(format!("{}revoked/{peer}", self.root))
    }

    /// The hold on `owner` taking `name` back after a release.
    pub(crate) fn released(&self, name: &str, owner: &str) -> Result<String, ClusterError> {
        segment("peer id", owner)?;
        Ok(format!("{}/{owner}", self.released_prefix(name)?))
    }

    /// Every hold on `name` (at most one in practice): `released/<name>/`, without the owner.
    pub(crate) fn released_prefix(&self, name: &str) -> Result<String, ClusterError> {
        segment("name", name)?;
        Ok(format!("{}released/{name}", self.root))
    }

    /// What `key` (raw bytes from etcd) is; `None` when it is not under this prefix at all.
    pub(crate) fn parse<'a>(&self, key: &'a [u8]) -> Option<Key<'a>> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(self.root.as_str())?;
        let kind = |prefix: &str| {
            rest.strip_prefix(prefix)
                .filter(|seg| segment("", seg).is_ok())
        };
        Some(if rest == "schema" {
            Key::Schema
        } else if let Some(name) = kind("names/") {
            Key::Name(name)
        } else if let Some(peer) = kind("allow/") {
            Key::Allow(peer)
        } else if let Some(peer) = kind("revoked/") {
            Key::Revoked(peer)
        } else if let Some((name, owner)) = rest
            .strip_prefix("released/")
            .and_then(|pair| pair.split_once('/'))
            .filter(|(n, o)| segment("", n).is_ok() && segment("", o).is_ok())
        {
            Key::Released(name, owner)
        } else {
            Key::Other
        })
    }
}

/// Checks that `value` can stand as one key segment.
fn segment(what: &'static str, value: &str) -> Result<(), ClusterError> {
    let reason = if value.is_empty() {
        "it is empty"
    } else if value.len() > MAX_SEGMENT {
        "it is longer than 253 bytes"
    } else if value.contains('/') {
        "it contains '/'"
    } else if value.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(ClusterError::InvalidKey {
        what,
        value: value.chars().take(64).collect(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_built_under_the_domain_prefix() {
        let keys = Keys::new("example.net").expect("domain");
        assert_eq!(keys.root(), "/peercompute/v1/example.net/");
        assert_eq!(keys.schema(), "/peercompute/v1/example.net/schema");
        assert_eq!(
            keys.name("blog").expect("name"),
            "/peercompute/v1/example.net/names/blog"
        );
        assert_eq!(
            keys.allow("12D3Koo").expect("peer"),
            "/peercompute/v1/example.net/allow/12D3Koo"
        );
        assert_eq!(
            keys.revoked("12D3Koo").expect("peer"),
            "/peercompute/v1/example.net/revoked/12D3Koo"
        );
        assert_eq!(
            keys.released("blog", "12D3Koo").expect("hold"),
            "/peercompute/v1/example.net/released/blog/12D3Koo"
        );
    }

    #[test]
    fn bad_segments_are_refused_with_the_reason() {
        let keys = Keys::new("example.net").expect("domain");
        let long = "a".repeat(254);
        for (value, reason) in [
            ("", "empty"),
            ("a/b", "'/'"),
            ("a\nb", "control"),
            (long.as_str(), "253"),
        ] {
            let err = keys.name(value).expect_err(value);
            assert!(err.to_string().contains(reason), "{value:?}: {err}");
        }
        assert!(Keys::new("a/b").is_err());
        assert!(keys.name(&"a".repeat(253)).is_ok());
    }

    #[test]
    fn parse_is_the_inverse_and_ignores_what_it_does_not_know() {
        let keys = Keys::new("example.net").expect("domain");
        let table: [(&str, Option<Key<'_>>); 11] = [
            (
                "/peercompute/v1/example.net/released/blog/p1",
                Some(Key::Released("blog", "p1")),
            ),
            (
                "/peercompute/v1/example.net/released/blog/",
                Some(Key::Other),
            ),
            ("/peercompute/v1/example.net/schema", Some(Key::Schema)),
            (
                "/peercompute/v1/example.net/names/blog",
                Some(Key::Name("blog")),
            ),
            (
                "/peercompute/v1/example.net/allow/p1",
                Some(Key::Allow("p1")),
            ),
            (
                "/peercompute/v1/example.net/revoked/p1",
                Some(Key::Revoked("p1")),
            ),
            ("/peercompute/v1/example.net/names/", Some(Key::Other)),
            ("/peercompute/v1/example.net/names/a/b", Some(Key::Other)),
            ("/peercompute/v1/example.net/gateways/g1", Some(Key::Other)),
            ("/peercompute/v1/other.net/names/blog", None),
            ("/elsewhere", None),
        ];
        for (key, want) in table {
            assert_eq!(keys.parse(key.as_bytes()), want, "{key}");
        }
        assert_eq!(keys.parse(b"/peercompute/v1/example.net/\xff"), None);
    }
}
