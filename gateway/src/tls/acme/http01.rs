//! HTTP-01 challenges: the tokens the HTTP listener answers at
//! `/.well-known/acme-challenge/<token>` while an order is being validated.
//!
//! The map is filled by the order in progress and emptied when it ends; the listener only
//! reads it (see [`crate::plain::redirect`]).

use std::sync::Arc;

use dashmap::DashMap;

/// Path prefix the ACME server fetches.
pub(crate) const PREFIX: &str = "/.well-known/acme-challenge/";

/// token → key authorization.
#[derive(Debug, Default, Clone)]
pub(crate) struct Http01Tokens {
    tokens: Arc<DashMap<String, String>>,
}

impl Http01Tokens {
    pub(crate) fn insert(&self, token: &str, key_authorization: &str) {
        self.tokens
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    pub(crate) fn remove(&self, token: &str) {
        self.tokens.remove(token);
    }

    /// The key authorization to answer for a request path, if it is a live challenge.
    pub(crate) fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(PREFIX)?;
        self.tokens.get(token).map(|v| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_live_tokens() {
        let t = Http01Tokens::default();
        t.insert("abc", "abc.thumb");
        assert_eq!(
            t.answer("/.well-known/acme-challenge/abc").as_deref(),
            Some("abc.thumb")
        );
        assert_eq!(t.answer("/.well-known/acme-challenge/abd"), None);
        assert_eq!(t.answer("/abc"), None);
        t.remove("abc");
        assert_eq!(t.answer("/.well-known/acme-challenge/abc"), None);
    }
}
