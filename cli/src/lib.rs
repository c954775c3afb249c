//! What `peercompute-gateway`, `peercomputed` and `peerctl` share on the command line, so the
//! three behave alike where people and machines meet them:
//!
//! - [`logging`]: `--log-format text|json`, colour only on a terminal (and never with
//!   `NO_COLOR`), `RUST_LOG` filters.
//! - [`exit`]: exit code 2 for usage and configuration errors, 1 for failures at run time.
//! - [`help`]: a lint that walks a clap command tree and names every subcommand without an
//!   `Examples:` block and every argument without a help line; each program's tests run it.
//! - [`completions`] and [`signal`]: shell completion scripts, SIGTERM / Ctrl-C.

mod completions;
mod exit;
mod help;
mod logging;
mod signal;

pub use completions::print_completions;
pub use exit::{ConfigError, EXIT_FAILURE, EXIT_USAGE, exit_code, report};
pub use help::help_problems;
pub use logging::{DAEMON_LOG_FILTER, LogFormat, init_logging, use_colour};
pub use signal::shutdown_signal;
