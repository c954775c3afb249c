//! Join tokens: how a robot enrols without anyone copying ids by hand.
//!
//! An admin writes an `Invite` entry naming a fresh key's public half; the token carries that
//! key's secret half, the invite entry itself and where to find the fleet. The robot proves it
//! holds the token by a signature of the invite key over `fleet | invite | robot key`, which
//! it puts in its `Join` entry: every member checks the proof against the invite's public key,
//! the secret never enters the log, and a proof made for one robot does not serve another.
//!
//! Text form: `pcjoin1.` + base64url (no padding) of the postcard bytes of [`JoinToken`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, SignedEntry};
use crate::entry::{Invite, Op};
use crate::ids::{EntryHash, FleetId, MemberKey};
use crate::sig::{self, Sig};

const TOKEN_PREFIX: &str = "pcjoin1.";
const JOIN_DOMAIN: &[u8] = b"peercompute-fleet/1 join\0";
/// Longest token text accepted.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Why a token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "this is not a join token (tokens start with `{TOKEN_PREFIX}`); copy the whole line `peerctl fleet invite` printed"
    )]
    Prefix,
    #[error("the join token is damaged ({0}); copy the whole line again")]
    Damaged(String),
    #[error("the join token's invite entry is invalid: {0}")]
    Entry(#[from] DecodeError),
    #[error("the join token is forged: its secret does not match its invite")]
    Forged,
}

/// What a join token holds. Its `secret` admits robots: it is masked in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The invite entry's wire bytes.
    pub invite: Vec<u8>,
    /// The invite key's secret half.
    pub secret: [u8; 32],
    /// Where to fetch the fleet log: `<peer-id>@<multiaddr>` or multiaddrs with `/p2p/`.
    pub bootstrap: Vec<String>,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("invite_bytes", &self.invite.len())
            .field("secret", &"<redacted>")
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

/// A token checked to be whole and consistent.
#[derive(Debug, Clone)]
pub struct ParsedToken {
    pub token: JoinToken,
    pub entry: SignedEntry,
    pub invite: Invite,
}

impl ParsedToken {
    pub fn fleet(&self) -> FleetId {
        self.entry.entry().fleet
    }

    /// Signs the proof a `Join` entry by `robot` carries.
    pub fn proof_for(&self, robot: &MemberKey) -> Sig {
        let key = SigningKey::from_bytes(&self.token.secret);
        sig::sign(
            &key,
            JOIN_DOMAIN,
            &join_message(self.fleet(), self.entry.hash(), robot),
        )
    }
}

impl JoinToken {
    /// The text people copy.
    pub fn to_text(&self) -> String {
        let bytes = postcard::to_allocvec(self).expect("a JoinToken always serializes");
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Reads a token and checks its invite entry and secret (not yet against the fleet log).
    pub fn parse(text: &str) -> Result<ParsedToken, TokenError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Damaged("it is too long".into()));
        }
        let body = text.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::Prefix)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| TokenError::Damaged(e.to_string()))?;
        let token: JoinToken =
            postcard::from_bytes(&bytes).map_err(|e| TokenError::Damaged(e.to_string()))?;
        let entry = SignedEntry::decode(&token.invite)?;
        let Op::Invite(invite) = &entry.entry().op else {
            return Err(TokenError::Damaged("its entry is not an invite".into()));
        };
        let public = SigningKey::from_bytes(&token.secret)
            .verifying_key()
            .to_bytes();
        if public != invite.invite_key.0 {
            return Err(TokenError::Forged);
        }
        let invite = invite.clone();
        Ok(ParsedToken {
            token,
            entry,
            invite,
        })
    }
}

fn join_message(fleet: FleetId, invite: EntryHash, robot: &MemberKey) -> Vec<u8> {
    let mut m = Vec::with_capacity(96);
    m.extend_from_slice(&fleet.0);
    m.extend_from_slice(&invite.0);
    m.extend_from_slice(&robot.0);
    m
}

/// Checks a join proof (see the module docs).
pub(crate) fn verify_join_proof(
    invite_key: &MemberKey,
    fleet: FleetId,
    invite: EntryHash,
    robot: &MemberKey,
    proof: &Sig,
) -> bool {
    sig::verify(
        &invite_key.0,
        JOIN_DOMAIN,
        &join_message(fleet, invite, robot),
        proof,
    )
}
