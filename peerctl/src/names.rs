//! `peerctl names grant`: the owner of a route name lets another provider key serve it too.
//!
//! The name belongs to the provider key that registered it first at the gateway (the
//! `peercomputed` identity, e.g. `/var/lib/peercompute/identity.key`), so the grant is signed
//! with that key (`--key`), or with peerctl's own identity when it is the owner. The printed
//! text (`pcgrant1.…`) is what the other provider presents (`RegisterGranted`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peercompute_identity::{Identity, PeerId};
use peercompute_tunnel_proto::{MAX_GRANT_SECS, NameGrant};

use crate::exit::{CliError, Kind};

/// Signs a grant for `grantee` to serve `name` on the gateway of `domain` for `until`, and
/// returns its text form.
pub fn grant(
    owner: &Identity,
    domain: &str,
    name: &str,
    grantee: PeerId,
    until: Duration,
) -> Result<String, CliError> {
    let bad = |e: String| CliError::new(Kind::BadRequest, e);
    if until.as_secs() == 0 || until.as_secs() > MAX_GRANT_SECS {
        return Err(bad(format!(
            "--until must be between 1s and 90d (got {:.1} days)",
            until.as_secs_f64() / 86_400.0
        )));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| CliError::new(Kind::Other, e.to_string()))?
        .as_secs();
    let grant = NameGrant::sign(
        owner.signing_key(),
        domain,
        name,
        grantee,
        now + until.as_secs(),
        now,
    )
    .map_err(|e| bad(e.to_string()))?;
    grant.to_text().map_err(|e| bad(e.to_string()))
}
