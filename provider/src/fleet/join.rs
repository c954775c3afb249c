//! Joining a fleet with a join token. `peercomputed join TOKEN` checks the token locally
//! (whole, not forged, not expired) and saves it as `<home>/fleet/join.token` (0600, it admits
//! robots); the running daemon picks it up, fetches the fleet log from the gateway (and the
//! token's bootstrap peers), and writes its own `Join` entry — authored with the robot's key,
//! carrying the token's proof — which every member checks before counting it as a member.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use peercompute_fleet::{FleetLog, Join, JoinToken, MemberKey, Op, ParsedToken, SignedEntry};
use peercompute_p2p::{Multiaddr, PeerId, Protocol};

/// The saved token, under the fleet directory.
pub(crate) const TOKEN_FILE: &str = "join.token";
/// The name asked for with `--name`, beside it.
pub(crate) const NAME_FILE: &str = "join.name";
/// Robots of an invite without a prefix are named `robot-<hex>`.
const DEFAULT_PREFIX: &str = "robot";

/// Why a token was not saved.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Token(#[from] peercompute_fleet::TokenError),
    #[error(
        "this join token expired at {expired} (UTC): ask an admin for a new one (`peerctl fleet invite`)"
    )]
    Expired { expired: String },
    #[error("`{name}` cannot be this robot's name: {reason}")]
    Name { name: String, reason: String },
    #[error("cannot save the token in {path}: {source}")]
    Save {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the daemon is with a saved join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinStatus {
    /// No token saved.
    NoToken,
    /// Trying (no gateway yet, the log not fetched yet, …): why it is not done.
    Waiting { reason: String },
    /// This robot is a member, under `name`.
    Joined {
        fleet: peercompute_fleet::FleetId,
        name: String,
    },
    /// Refused for good (expired, used up, forged, name taken): the members' reason.
    Refused { reason: String },
}

/// What `peercomputed join` saved.
#[derive(Debug, Clone)]
pub struct JoinSaved {
    pub fleet: peercompute_fleet::FleetId,
    pub groups: Vec<String>,
    /// The name the robot will join with.
    pub name: String,
    pub expires_at: u64,
    pub path: PathBuf,
}

/// The name of robot `key` for an invite with `prefix`: `<prefix>-<6 hex of the key>`.
pub(crate) fn default_name(prefix: Option<&str>, key: &MemberKey) -> String {
    let hex: String = key.0[..3].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", prefix.unwrap_or(DEFAULT_PREFIX))
}

/// The name a robot joins with: `asked`, checked against the invite's prefix, or the default.
pub(crate) fn join_name(
    token: &ParsedToken,
    key: &MemberKey,
    asked: Option<&str>,
) -> Result<String, JoinError> {
    let prefix = token.invite.name_prefix.as_deref();
    let Some(name) = asked else {
        return Ok(default_name(prefix, key));
    };
    let bad = |reason: String| JoinError::Name {
        name: name.to_owned(),
        reason,
    };
    peercompute_tunnel_proto::validate_name(name).map_err(|e| bad(e.to_string()))?;
    if let Some(prefix) = prefix
        && !name.starts_with(&format!("{prefix}-"))
    {
        return Err(bad(format!("this invite names robots `{prefix}-…`")));
    }
    Ok(name.to_owned())
}

/// `peercomputed join`: checks `text` and saves it in `dir` (the fleet directory).
pub fn save_token(
    dir: &Path,
    text: &str,
    robot: &SigningKey,
    name: Option<&str>,
    now: u64,
) -> Result<JoinSaved, JoinError> {
    let token = JoinToken::parse(text)?;
    if token.invite.expires_at < now {
        return Err(JoinError::Expired {
            expired: utc(token.invite.expires_at),
        });
    }
    let key = MemberKey(robot.verifying_key().to_bytes());
    let name = join_name(&token, &key, name)?;
    let save = |path: PathBuf, bytes: &[u8]| {
        std::fs::create_dir_all(dir)
            .and_then(|()| peercompute_identity::write_atomic(&path, bytes, 0o600))
            .map_err(|source| JoinError::Save { path, source })
    };
    let path = dir.join(TOKEN_FILE);
    save(path.clone(), token.token.to_text().as_bytes())?;
    save(dir.join(NAME_FILE), name.as_bytes())?;
    Ok(JoinSaved {
        fleet: token.fleet(),
        groups: token.invite.groups.clone(),
        name,
        expires_at: token.invite.expires_at,
        path,
    })
}

/// The saved token and name, if any (a damaged file is reported, not fatal).
pub(crate) fn load_token(dir: &Path) -> Option<Result<(ParsedToken, Option<String>), String>> {
    let text = std::fs::read_to_string(dir.join(TOKEN_FILE)).ok()?;
    let name = std::fs::read_to_string(dir.join(NAME_FILE))
        .ok()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    Some(
        JoinToken::parse(&text)
            .map(|t| (t, name))
            .map_err(|e| format!("{}: {e}", dir.join(TOKEN_FILE).display())),
    )
}

/// Writes this robot's `Join` entry on `log` (the caller inserts it, which checks it).
pub(crate) fn author_join(
    log: &FleetLog,
    token: &ParsedToken,
    robot: &SigningKey,
    name: &str,
    now: u64,
) -> Result<SignedEntry, peercompute_fleet::EntryError> {
    let key = MemberKey(robot.verifying_key().to_bytes());
    let op = Op::Join(Join {
        invite: token.entry.hash(),
        name: name.to_owned(),
        proof: token.proof_for(&key),
    });
    log.author(robot, op, now)
}

/// The token's bootstrap peers: `<peer-id>@<multiaddr>` or a multiaddr ending in `/p2p/<id>`.
pub(crate) fn bootstrap_peers(token: &ParsedToken) -> Vec<(PeerId, Multiaddr)> {
    token
        .token
        .bootstrap
        .iter()
        .filter_map(|s| parse_bootstrap(s))
        .collect()
}

fn parse_bootstrap(s: &str) -> Option<(PeerId, Multiaddr)> {
    if let Some((peer, addr)) = s.split_once('@') {
        return Some((peer.parse().ok()?, addr.parse().ok()?));
    }
    let mut addr: Multiaddr = s.parse().ok()?;
    match addr.pop()? {
        Protocol::P2p(peer) => Some((peer, addr)),
        _ => None,
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS`.
fn utc(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use peercompute_fleet::{FleetId, Invite, TokenError};

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn token(expires_at: u64, prefix: Option<&str>) -> JoinToken {
        let fleet_key = SigningKey::from_bytes(&[1; 32]);
        let invite_key = SigningKey::from_bytes(&[9; 32]);
        let mut log = FleetLog::new(FleetId(fleet_key.verifying_key().to_bytes()));
        let genesis = log
            .author(&fleet_key, Op::Genesis { name: "f".into() }, NOW)
            .expect("genesis");
        log.insert(genesis, NOW).expect("insert");
        let invite = log
            .author(
                &fleet_key,
                Op::Invite(Invite {
                    invite_key: MemberKey(invite_key.verifying_key().to_bytes()),
                    groups: vec!["production".into()],
                    name_prefix: prefix.map(str::to_owned),
                    expires_at,
                    uses: 1,
                }),
                NOW,
            )
            .expect("invite");
        JoinToken {
            invite: invite.bytes().to_vec(),
            secret: invite_key.to_bytes(),
            bootstrap: vec![],
        }
    }

    #[test]
    fn saves_a_good_token_and_names_the_robot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let robot = SigningKey::from_bytes(&[2; 32]);
        let text = token(NOW + 60, Some("lekiwi")).to_text();
        let saved = save_token(dir.path(), &text, &robot, None, NOW).expect("saved");
        let hex: String = robot.verifying_key().to_bytes()[..3]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(saved.name, format!("lekiwi-{hex}"));
        assert_eq!(saved.groups, ["production"]);
        let (loaded, name) = load_token(dir.path()).expect("file").expect("parses");
        assert_eq!(loaded.fleet(), saved.fleet);
        assert_eq!(name.as_deref(), Some(saved.name.as_str()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&saved.path).expect("meta").permissions();
            assert_eq!(mode.mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn refuses_expired_damaged_forged_tokens_and_bad_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let robot = SigningKey::from_bytes(&[2; 32]);
        let expired = save_token(
            dir.path(),
            &token(NOW - 1, None).to_text(),
            &robot,
            None,
            NOW,
        );
        let err = expired.expect_err("expired").to_string();
        assert!(err.contains("expired"), "{err}");
        let text = token(NOW + 60, Some("lekiwi")).to_text();
        let damaged = format!("{}x!", &text[..text.len() - 5]);
        assert!(matches!(
            save_token(dir.path(), &damaged, &robot, None, NOW),
            Err(JoinError::Token(TokenError::Damaged(_)))
        ));
        let mut forged = token(NOW + 60, None);
        forged.secret = [3; 32];
        assert!(matches!(
            save_token(dir.path(), &forged.to_text(), &robot, None, NOW),
            Err(JoinError::Token(TokenError::Forged))
        ));
        let named = save_token(dir.path(), &text, &robot, Some("other-1"), NOW);
        assert!(matches!(named, Err(JoinError::Name { .. })), "{named:?}");
        assert!(load_token(dir.path()).is_none(), "nothing saved");
        let ok = save_token(dir.path(), &text, &robot, Some("lekiwi-kitchen"), NOW);
        assert_eq!(ok.expect("ok").name, "lekiwi-kitchen");
    }

    #[test]
    fn bootstrap_forms() {
        let peer = peercompute_identity::Identity::generate()
            .expect("id")
            .peer_id();
        assert!(parse_bootstrap(&format!("{peer}@/ip4/1.2.3.4/tcp/9000")).is_some());
        let (p, a) = parse_bootstrap(&format!("/ip4/1.2.3.4/udp/9000/quic-v1/p2p/{peer}"))
            .expect("p2p form");
        assert_eq!(
            (p, a.to_string()),
            (peer, "/ip4/1.2.3.4/udp/9000/quic-v1".into())
        );
        assert!(parse_bootstrap("/ip4/1.2.3.4/tcp/9000").is_none());
    }
}
