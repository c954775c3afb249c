//! Exit codes of the daemons: 2 when the command line or configuration is wrong (as clap and
//! `peerctl` do, so a supervisor can tell "fix the config" from "try again"), 1 otherwise.

use std::fmt;
use std::process::ExitCode;

/// Exit code for a failure at run time.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage or configuration error (clap's own code for a bad command line).
pub const EXIT_USAGE: u8 = 2;

/// Marks an error as the configuration's fault: [`exit_code`] maps it to [`EXIT_USAGE`].
/// Its message is the wrapped error's, unchanged.
#[derive(Debug)]
pub struct ConfigError(pub anyhow::Error);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// Wraps any error as a configuration error.
    pub fn wrap(e: impl Into<anyhow::Error>) -> anyhow::Error {
        anyhow::Error::new(ConfigError(e.into()))
    }
}

/// The exit code for `e`: [`EXIT_USAGE`] when a [`ConfigError`] is anywhere in its chain.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|cause| cause.is::<ConfigError>()) {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

/// Prints `error: …` (the whole chain on one line) to stderr and returns the exit code.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn config_errors_exit_2_even_under_context() {
        let e = ConfigError::wrap(anyhow::anyhow!("--domain is required"));
        assert_eq!(exit_code(&e), EXIT_USAGE);
        let wrapped = Err::<(), _>(e)
            .context("gateway failed")
            .expect_err("an error stays an error");
        assert_eq!(exit_code(&wrapped), EXIT_USAGE);
        assert_eq!(
            format!("{wrapped:#}"),
            "gateway failed: --domain is required"
        );
    }

    #[test]
    fn other_errors_exit_1() {
        assert_eq!(exit_code(&anyhow::anyhow!("address in use")), EXIT_FAILURE);
    }
}
