//! DNS-01 challenges: `_acme-challenge.<name>` TXT records published by RFC 2136 update,
//! checked on the authoritative server before the ACME server is told to look, and removed
//! afterwards whatever the outcome.
//!
//! `D` and `*.D` share one record name, so both values are added to the same TXT set before
//! either challenge is declared ready.

use std::sync::Mutex;
use std::time::Duration;

use tracing::{debug, warn};

use super::rfc2136::{DnsError, Rfc2136};

/// TTL of challenge records: short, they live for one validation.
const TXT_TTL: u32 = 60;
/// How long the authoritative server may take to answer a freshly published record.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Records kept for a later removal attempt while the DNS server is unreachable.
const MAX_PENDING: usize = 64;

/// Publishes DNS-01 records and remembers them until [`Dns01::cleanup`].
#[derive(Debug)]
pub(crate) struct Dns01 {
    client: Rfc2136,
    /// (record name, value) published and not yet removed.
    published: Mutex<Vec<(String, String)>>,
}

/// Why DNS-01 could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Dns01Error {
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error("{name} is outside the DNS zone the gateway may update (--dns-zone)")]
    OutsideZone { name: String },
    #[error(
        "the DNS server did not serve the TXT record {name} within {PROPAGATION_TIMEOUT:?} \
         after the update"
    )]
    NotVisible { name: String },
}

impl Dns01 {
    pub(crate) fn new(client: Rfc2136) -> Self {
        Self {
            client,
            published: Mutex::new(Vec::new()),
        }
    }

    /// `_acme-challenge.<identifier>` (a wildcard's `*.` dropped).
    pub(crate) fn record_name(identifier: &str) -> String {
        format!("_acme-challenge.{}", identifier.trim_start_matches("*."))
    }

    /// Adds the TXT record for `identifier` with `value` (the key authorization digest).
    pub(crate) async fn present(&self, identifier: &str, value: &str) -> Result<(), Dns01Error> {
        let name = Self::record_name(identifier);
        if !self.client.covers(&name) {
            return Err(Dns01Error::OutsideZone { name });
        }
        // Remember first: an add whose answer was lost may still have been applied, and
        // removal is harmless. A refused add changed nothing: forget it.
        let entry = (name.clone(), value.to_owned());
        self.lock().push(entry.clone());
        match self.client.add_txt(&name, value, TXT_TTL).await {
            Ok(()) => {
                debug!(record = %name, "DNS-01 TXT record published");
                Ok(())
            }
            Err(e) => {
                if matches!(e, DnsError::Refused { .. }) {
                    self.lock().retain(|r| *r != entry);
                }
                Err(e.into())
            }
        }
    }

    /// Waits until the server answers every published value.
    pub(crate) async fn wait_visible(&self) -> Result<(), Dns01Error> {
        let wanted = self.lock().clone();
        let deadline = tokio::time::Instant::now() + PROPAGATION_TIMEOUT;
        let mut delay = Duration::from_millis(100);
        for (name, value) in &wanted {
            loop {
                match self.client.query_txt(name).await {
                    Ok(values) if values.iter().any(|v| v == value) => break,
                    Ok(_) => {}
                    Err(e) => debug!(record = %name, "TXT lookup failed, retrying: {e}"),
                }
                if tokio::time::Instant::now() + delay > deadline {
                    return Err(Dns01Error::NotVisible { name: name.clone() });
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        Ok(())
    }

    /// Removes every published record; the ones the server could not be reached for are kept
    /// for the next cleanup (at most [`MAX_PENDING`]).
    pub(crate) async fn cleanup(&self) {
        let records = std::mem::take(&mut *self.lock());
        let mut left = Vec::new();
        for (name, value) in records {
            match self.client.delete_txt(&name, &value).await {
                Ok(()) => debug!(record = %name, "DNS-01 TXT record removed"),
                // Refused: retrying with the same key cannot help (the operator must act).
                Err(e @ DnsError::Refused { .. }) => {
                    warn!(record = %name, "cannot remove DNS-01 TXT record: {e}");
                }
                Err(e) => {
                    warn!(record = %name, "cannot remove DNS-01 TXT record (retried later): {e}");
                    left.push((name, value));
                }
            }
        }
        let mut published = self.lock();
        published.extend(left);
        let excess = published.len().saturating_sub(MAX_PENDING);
        published.drain(..excess);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, String)>> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_and_apex_share_the_record() {
        assert_eq!(
            Dns01::record_name("*.apps.example.com"),
            "_acme-challenge.apps.example.com"
        );
        assert_eq!(
            Dns01::record_name("apps.example.com"),
            "_acme-challenge.apps.example.com"
        );
    }
}
