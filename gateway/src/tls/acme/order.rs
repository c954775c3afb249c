//! One ACME order, start to finish (RFC 8555 section 7.4): new order → present every pending
//! challenge → wait until visible → tell the server → poll with backoff → finalize with a
//! fresh key → download the chain.
//!
//! Challenges are not withdrawn here: the caller always runs [`Solver::cleanup`] afterwards,
//! also when this future fails or is cancelled.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};

use super::solver::{Solver, SolverError};

/// How the server's order state is polled after the challenges are ready, and after finalize.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// What a successful order returns.
pub(crate) struct Issued {
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// Why an order did not produce a certificate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OrderError {
    #[error("ACME server: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error(transparent)]
    Challenge(#[from] SolverError),
    #[error("the ACME server offers no {kind:?} challenge for {identifier}")]
    NoChallenge {
        identifier: String,
        kind: ChallengeType,
    },
    #[error("authorization for {identifier} is {status:?}")]
    Authorization {
        identifier: String,
        status: AuthorizationStatus,
    },
    #[error("the order became invalid: {0}")]
    Invalid(String),
    #[error("the issued certificate is unusable: {0}")]
    Unusable(String),
}

/// Runs one order for `names` (a `*.` prefix asks for a wildcard).
pub(crate) async fn obtain(
    account: &Account,
    names: &[String],
    solver: &Solver,
) -> Result<Issued, OrderError> {
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let kind = solver.kind();

    // 1. Present every pending challenge (DNS-01 for D and *.D publish two values of one
    //    record, so nothing is declared ready before all are in place).
    let mut pending = 0usize;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        let identifier = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            status => return Err(OrderError::Authorization { identifier, status }),
        }
        let Some(challenge) = authz.challenge(kind.clone()) else {
            return Err(OrderError::NoChallenge { identifier, kind });
        };
        solver
            .present(
                &identifier,
                &challenge.token,
                &challenge.key_authorization(),
            )
            .await?;
        pending += 1;
    }
    if pending > 0 {
        solver.wait_ready().await?;
    }

    // 2. Tell the server to validate.
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let identifier = authz.identifier().to_string();
        let Some(mut challenge) = authz.challenge(kind.clone()) else {
            return Err(OrderError::NoChallenge { identifier, kind });
        };
        challenge.set_ready().await?;
    }

    // 3. Wait for the verdict, then finalize with a fresh key.
    match order.poll_ready(&POLL).await {
        Ok(OrderStatus::Ready) => {}
        Ok(_) => return Err(OrderError::Invalid(why_invalid(&mut order).await)),
        Err(instant_acme::Error::Api(problem)) => {
            let details = why_invalid(&mut order).await;
            return Err(OrderError::Invalid(format!("{problem}; {details}")));
        }
        Err(e) => return Err(e.into()),
    }
    let key_pem = order.finalize().await?;
    let chain_pem = order.poll_certificate(&POLL).await?;
    Ok(Issued { chain_pem, key_pem })
}

/// The challenge errors of an invalid order, for the log line an operator reads.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let Ok(mut authz) = authz else { continue };
        let identifier = authz.identifier().to_string();
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        for ch in &state.challenges {
            if let Some(err) = &ch.error {
                reasons.push(format!("{identifier}: {err}"));
            }
        }
    }
    if reasons.is_empty() {
        "no challenge error reported".into()
    } else {
        reasons.join("; ")
    }
}
