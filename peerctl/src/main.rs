//! `peerctl`: command line of the Peer Compute client. See the library docs.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use peerctl::{CliError, Kind};

#[derive(Parser, Debug)]
#[command(
    name = "peerctl",
    version,
    about = "Peer Compute client: trust providers and run containers on them, each with a public HTTPS URL",
    after_help = "Examples:\n  peerctl init\n  peerctl peers add 12D3KooW... --addr /ip4/192.168.1.20/tcp/9000 --name homebox\n  peerctl gateways add 12D3KooW...@/ip4/203.0.113.7/udp/4001/quic-v1\n  peerctl deploy nginx:1.27 --peer homebox --port 80 --name blog\n  peerctl ls --peer homebox\n  peerctl logs a1b2c3d4e5f6 --peer homebox -f\n  peerctl stop a1b2c3d4e5f6 --peer homebox\n  peerctl completions bash > /etc/bash_completion.d/peerctl"
)]
pub(crate) struct Cli {
    /// Home directory (identity, trusted peers) [default: $PEERCOMPUTE_HOME or ~/.peercompute].
    #[arg(long, global = true)]
    pub(crate) home: Option<PathBuf>,
    /// Do not look for providers on the LAN with mDNS.
    #[arg(long, global = true)]
    pub(crate) no_mdns: bool,
    /// Log lines (warnings, -v style detail via RUST_LOG) as text or one JSON object per line.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "PEERCOMPUTE_LOG_FORMAT"
    )]
    pub(crate) log_format: peercompute_cli::LogFormat,
    /// How long to try to reach a provider, e.g. 10s.
    #[arg(long, global = true, default_value = "10s", value_parser = humantime_duration)]
    pub(crate) timeout: Duration,
    #[command(subcommand)]
    pub(crate) command: Command,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 10s or 2m"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("`{s}` is not a duration like 10s or 2m")),
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create your identity (prints the existing one if present).
    Init,
    /// Print your peer id (give it to providers so they can trust you).
    Id,
    /// Manage the peers you trust.
    #[command(subcommand)]
    Peers(PeersCommand),
    /// Manage the gateways used to reach providers behind NAT by peer id.
    #[command(subcommand)]
    Gateways(GatewaysCommand),
    /// Run an image on a trusted provider and print its public URL.
    Deploy {
        /// Image reference, e.g. nginx:1.27.
        image: String,
        /// Provider peer id or alias.
        #[arg(long)]
        peer: String,
        /// Route name: the app answers at https://NAME.<gateway domain> [default: from the image].
        #[arg(long)]
        name: Option<String>,
        /// Port the container listens on.
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// Environment variable KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// CPU: millicores (500m) or cores (0.5) [default: 500m].
        #[arg(long, value_parser = peercompute_runtime::parse_cpu)]
        cpu: Option<u32>,
        /// Memory, e.g. 256M, 1G [default: 256M].
        #[arg(long, value_parser = peercompute_runtime::parse_memory)]
        memory: Option<u64>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List your deployments on a provider.
    Ls {
        #[arg(long)]
        peer: String,
        #[arg(long)]
        json: bool,
    },
    /// Show one deployment: state, image, uptime, restarts, CPU and memory.
    Status {
        /// Deployment id.
        id: String,
        #[arg(long)]
        peer: String,
        #[arg(long)]
        json: bool,
    },
    /// Print a deployment's logs; with -f keep following until Ctrl-C.
    Logs {
        /// Deployment id.
        id: String,
        #[arg(long)]
        peer: String,
        /// Keep streaming new lines.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u32>,
    },
    /// Stop a deployment: the container is removed and its URL stops answering.
    Stop {
        /// Deployment id.
        id: String,
        #[arg(long)]
        peer: String,
    },
    /// Print a shell completion script to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum GatewaysCommand {
    /// Remember a gateway: providers registered at it become reachable by peer id alone.
    Add {
        /// PEERID@MULTIADDR (the gateway's p2p address, e.g.
        /// 12D3KooW…@/ip4/203.0.113.7/udp/4001/quic-v1) or MULTIADDR/p2p/PEERID.
        gateway: String,
    },
    /// List known gateways (added by hand or learned from providers).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Forget a gateway.
    Remove {
        /// The gateway's peer id.
        gateway: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PeersCommand {
    /// Trust a peer (a provider you deploy to, or a client that may deploy to you).
    Add {
        /// Its peer id (12D3KooW…).
        peer: String,
        /// Where to reach it, e.g. /ip4/192.168.1.20/tcp/9000 (repeatable).
        #[arg(long = "addr", value_name = "MULTIADDR")]
        addrs: Vec<String>,
        /// A short name to use instead of the peer id.
        #[arg(long)]
        name: Option<String>,
        /// A gateway the provider uses, PEERID@MULTIADDR: reach it through there when no
        /// address answers (repeatable; same as `peerctl gateways add`).
        #[arg(long = "gateway", value_name = "PEERID@MULTIADDR")]
        gateways: Vec<String>,
    },
    /// List trusted peers and how each was last reached (direct LAN / direct public /
    /// hole punched / relayed, round-trip time).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting a peer (by id or alias).
    Remove { peer: String },
}

fn main() -> ExitCode {
    // Every Peer Compute binary picks rustls' ring provider first (libp2p links aws-lc too).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    peercompute_cli::init_logging(cli.log_format, "warn");
    if let Command::Completions { shell } = cli.command {
        return peercompute_cli::print_completions(shell, Cli::command());
    }
    let result = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(commands::run(cli)),
        Err(e) => Err(CliError::new(
            Kind::Other,
            format!("cannot start the async runtime: {e}"),
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.kind.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_examples_and_every_flag_a_description() {
        let problems = peercompute_cli::help_problems(&Cli::command());
        assert!(
            problems.is_empty(),
            "incomplete --help:\n{}",
            problems.join("\n")
        );
    }
}
