//! Bearer tokens for the admin listeners (`--admin-token-file`), shared by the gateway and the
//! provider daemon.
//!
//! The file holds one token per line, `read TOKEN` or `admin TOKEN`, with `#` comments and
//! blank lines allowed. A token is at least [`MIN_TOKEN_LEN`] characters of
//! `[A-Za-z0-9._~-]`. The file is refused when it is readable or writable by group or others,
//! when it holds no token, or when a line is malformed (its number is named). Only the SHA-256
//! digests of the tokens are kept, and a presented token is compared against every digest in
//! constant time. The file is looked at again (its mtime, ctime, size and inode) at most every
//! [`RECHECK`], and re-read when it changed, so a removed token stops working within a second.
//! A file that became unreadable or malformed denies every token until it is fixed: failing
//! closed is the only safe answer when the operator meant to remove one. `Debug` prints the
//! path and the number of tokens, never a token or a digest.

use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::HeaderValue;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 32;
/// How often [`Tokens::check`] looks whether the file changed.
pub const RECHECK: Duration = Duration::from_millis(250);

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// GET only.
    Read,
    /// Everything, including POST and DELETE.
    Admin,
}

/// Why a token file was refused. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the admin token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the admin token file {path} is readable by group or others (mode {mode:o}): run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "the admin token file {path} holds no token: add lines `read TOKEN` or `admin TOKEN` (tokens of {MIN_TOKEN_LEN}+ characters of A-Z a-z 0-9 . _ ~ -)"
    )]
    Empty { path: PathBuf },
    #[error("{path} line {line}: {problem}")]
    Line {
        path: PathBuf,
        line: usize,
        problem: LineProblem,
    },
}

/// What is wrong with one line of a token file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("expected `read TOKEN` or `admin TOKEN`")]
    Shape,
    #[error("unknown role (use `read` or `admin`)")]
    Role,
    #[error(
        "the token is shorter than {MIN_TOKEN_LEN} characters (make one with `openssl rand -hex 32`)"
    )]
    Short,
    #[error("the token has a character outside A-Z a-z 0-9 . _ ~ -")]
    Charset,
    #[error("the same token is given twice")]
    Duplicate,
}

type Digest32 = [u8; 32];

/// Parsed tokens: digests and roles.
#[derive(Clone, PartialEq, Eq)]
struct Entries(Vec<(Digest32, Role)>);

/// What identifies one version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: Option<SystemTime>,
    /// Status change time in nanoseconds: an in-place rewrite with a token of the same length
    /// within one coarse mtime tick still changes it.
    ctime_ns: (i64, i64),
    len: u64,
    ino: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            mtime: meta.modified().ok(),
            ctime_ns: (meta.ctime(), meta.ctime_nsec()),
            len: meta.len(),
            ino: meta.ino(),
        }
    }
}

struct Loaded {
    stamp: Option<Stamp>,
    /// `None`: the file changed into something refused; every token is denied.
    entries: Option<Arc<Entries>>,
    checked: Instant,
}

/// The tokens of one file, re-read when the file changes.
pub struct Tokens {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("Tokens")
            .field("path", &self.path)
            .field("tokens", &loaded.entries.as_ref().map(|e| e.0.len()))
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Reads and checks `path`. Called at start: a bad file is a start error.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, TokenFileError> {
        let path = path.into();
        let (stamp, entries) = read_file(&path)?;
        Ok(Self {
            path,
            loaded: Mutex::new(Loaded {
                stamp: Some(stamp),
                entries: Some(Arc::new(entries)),
                checked: Instant::now(),
            }),
        })
    }

    /// The file these tokens come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The role of the token in `authorization` (`Bearer TOKEN`), or `None` when the header is
    /// malformed or the token unknown. The comparison does not depend on which token matched
    /// or how much of it did.
    pub fn check(&self, authorization: &HeaderValue) -> Option<Role> {
        let token = bearer(authorization)?;
        let presented: Digest32 = Sha256::digest(token).into();
        let entries = self.current()?;
        let mut role = None;
        let mut found = Choice::from(0);
        for (digest, r) in &entries.0 {
            let hit = digest.ct_eq(&presented);
            // Every entry is compared; the branch only records which role matched.
            if bool::from(hit & !found) {
                role = Some(*r);
            }
            found |= hit;
        }
        role
    }

    /// The entries in force, re-reading the file when it changed since the last look.
    fn current(&self) -> Option<Arc<Entries>> {
        // The lock is held only to read and write the cache; the stat and the read happen
        // outside it, by the one caller whose turn it is (others keep using the cache).
        let (due, known, cached) = {
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            let due = loaded.checked.elapsed() >= RECHECK;
            if due {
                loaded.checked = Instant::now();
            }
            (due, loaded.stamp, loaded.entries.clone())
        };
        if !due {
            return cached;
        }
        let stamp = stamp_of(&self.path).ok();
        if stamp.is_some() && stamp == known {
            return cached;
        }
        let read = read_file(&self.path);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        match read {
            Ok((stamp, entries)) => {
                loaded.stamp = Some(stamp);
                if loaded.entries.is_none() {
                    tracing::info!(path = %self.path.display(), "admin token file accepted again");
                }
                loaded.entries = Some(Arc::new(entries));
            }
            Err(e) => {
                if loaded.entries.is_some() {
                    tracing::warn!(error = %e, "admin token file refused: every token is denied until it is fixed");
                }
                loaded.stamp = stamp;
                loaded.entries = None;
            }
        }
        loaded.entries.clone()
    }
}

/// The token of `Bearer TOKEN` (scheme case-insensitive, one space).
fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let bytes = value.as_bytes();
    let (scheme, token) = (bytes.get(..7)?, bytes.get(7..)?);
    if !scheme.eq_ignore_ascii_case(b"bearer ") || token.is_empty() {
        return None;
    }
    Some(token)
}

fn stamp_of(path: &Path) -> std::io::Result<Stamp> {
    let meta = fs::metadata(path)?;
    Ok(Stamp::of(&meta))
}

fn read_file(path: &Path) -> Result<(Stamp, Entries), TokenFileError> {
    let read_err = |source| TokenFileError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_err)?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenFileError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(read_err)?;
    let stamp = Stamp::of(&meta);
    let entries = parse(&text).map_err(|(line, problem)| TokenFileError::Line {
        path: path.to_owned(),
        line,
        problem,
    })?;
    if entries.0.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok((stamp, entries))
}

/// Parses the file's text; on error, the 1-based line number and the problem.
fn parse(text: &str) -> Result<Entries, (usize, LineProblem)> {
    let mut out: Vec<(Digest32, Role)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |p| (i + 1, p);
        let mut words = line.split_whitespace();
        let (Some(role), Some(token), None) = (words.next(), words.next(), words.next()) else {
            return Err(fail(LineProblem::Shape));
        };
        let role = match role {
            "read" => Role::Read,
            "admin" => Role::Admin,
            _ => return Err(fail(LineProblem::Role)),
        };
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_~".contains(&b))
        {
            return Err(fail(LineProblem::Charset));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(fail(LineProblem::Short));
        }
        let digest: Digest32 = Sha256::digest(token.as_bytes()).into();
        if out.iter().any(|(d, _)| *d == digest) {
            return Err(fail(LineProblem::Duplicate));
        }
        out.push((digest, role));
    }
    Ok(Entries(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    const READ: &str = "r0123456789abcdef0123456789abcdef";
    const ADMIN: &str = "a0123456789abcdef0123456789abcdef";

    fn file(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        let mut f = fs::File::create(&path).expect("create");
        f.write_all(text.as_bytes()).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        (dir, path)
    }

    fn header(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header")
    }

    #[test]
    fn parse_table() {
        let good = format!("# operators\n\nread {READ}\n  admin {ADMIN}  \n");
        type Want = Result<usize, (usize, LineProblem)>;
        let cases: Vec<(String, Want)> = vec![
            (good, Ok(2)),
            ("# only a comment\n".into(), Ok(0)),
            (
                format!("read {}", &READ[..31]),
                Err((1, LineProblem::Short)),
            ),
            (format!("root {READ}"), Err((1, LineProblem::Role))),
            (format!("read {READ} extra"), Err((1, LineProblem::Shape))),
            ("read\n".into(), Err((1, LineProblem::Shape))),
            (format!("\nread {READ}!"), Err((2, LineProblem::Charset))),
            (
                format!("read {READ}\nadmin {READ}\n"),
                Err((2, LineProblem::Duplicate)),
            ),
        ];
        for (text, want) in cases {
            let got = parse(&text).map(|e| e.0.len());
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn load_refuses_open_permissions_empty_and_bad_lines() {
        let (_d, p) = file(&format!("read {READ}\n"), 0o644);
        let err = Tokens::load(&p).expect_err("world-readable");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let (_d, p) = file("# nothing\n", 0o600);
        assert!(matches!(
            Tokens::load(&p),
            Err(TokenFileError::Empty { .. })
        ));
        let (_d, p) = file(&format!("read {READ}\nwrite {ADMIN}\n"), 0o600);
        let err = Tokens::load(&p).expect_err("bad role");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(matches!(
            Tokens::load("/nonexistent/tokens"),
            Err(TokenFileError::Read { .. })
        ));
    }

    #[test]
    fn check_gives_roles_and_refuses_everything_else() {
        let (_d, p) = file(&format!("read {READ}\nadmin {ADMIN}\n"), 0o600);
        let tokens = Tokens::load(&p).expect("load");
        assert_eq!(tokens.check(&header(READ)), Some(Role::Read));
        assert_eq!(tokens.check(&header(ADMIN)), Some(Role::Admin));
        let lower = HeaderValue::from_str(&format!("bearer {ADMIN}")).expect("h");
        assert_eq!(tokens.check(&lower), Some(Role::Admin));
        for bad in [
            format!("Bearer {}", &READ[..32]),
            format!("Basic {READ}"),
            format!("Bearer  {READ}"),
            READ.to_owned(),
            "Bearer ".to_owned(),
            String::new(),
        ] {
            let v = HeaderValue::from_str(&bad).expect("h");
            assert_eq!(tokens.check(&v), None, "{bad:?}");
        }
        let debug = format!("{tokens:?}");
        assert!(!debug.contains(READ) && !debug.contains("r0123"), "{debug}");
    }

    #[test]
    fn a_removed_token_stops_working_and_a_broken_file_denies_all() {
        let (_d, p) = file(&format!("read {READ}\nadmin {ADMIN}\n"), 0o600);
        let tokens = Tokens::load(&p).expect("load");
        assert_eq!(tokens.check(&header(READ)), Some(Role::Read));
        fs::write(&p, format!("admin {ADMIN}\n# and more\n")).expect("rewrite");
        std::thread::sleep(RECHECK + Duration::from_millis(20));
        assert_eq!(tokens.check(&header(READ)), None);
        assert_eq!(tokens.check(&header(ADMIN)), Some(Role::Admin));
        fs::write(&p, "garbage\n").expect("rewrite");
        std::thread::sleep(RECHECK + Duration::from_millis(20));
        assert_eq!(tokens.check(&header(ADMIN)), None);
        fs::write(&p, format!("admin {ADMIN}\n")).expect("rewrite");
        std::thread::sleep(RECHECK + Duration::from_millis(20));
        assert_eq!(tokens.check(&header(ADMIN)), Some(Role::Admin));
    }
}
