//! Where a participant keeps its files: `--home`, else `$PEERCOMPUTE_HOME`, else
//! `~/.peercompute`.

use std::path::PathBuf;

/// Environment variable naming the home directory.
pub const HOME_ENV: &str = "PEERCOMPUTE_HOME";

/// Resolves the home directory from an explicit flag, the environment, or `~/.peercompute`.
pub fn resolve_home(flag: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(dir) = flag {
        return Ok(dir);
    }
    if let Some(dir) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".peercompute")),
        None => Err(format!(
            "cannot find a home directory: pass --home DIR or set {HOME_ENV}"
        )),
    }
}
