//! `peercompute-gateway`: command line of the public edge. See the library docs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use peercompute_gateway::{GatewayConfig, Listeners, TlsMode};

#[derive(Parser, Debug)]
#[command(
    name = "peercompute-gateway",
    version,
    about = "Public HTTPS edge of Peer Compute: routes https://<name>.<domain> through QUIC tunnels to providers",
    after_help = "Examples:\n  peercompute-gateway id --state-dir /var/lib/peercompute-gateway\n  peercompute-gateway run --domain apps.example.com --allow-provider 12D3KooW...\n  peercompute-gateway run --config /etc/peercompute/gateway.toml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the gateway's peer id (creating its identity if missing).
    Id {
        /// Directory holding the identity, names and certificates.
        #[arg(
            long,
            env = "PEERCOMPUTE_GATEWAY_STATE",
            default_value = "/var/lib/peercompute-gateway"
        )]
        state_dir: PathBuf,
    },
    /// Serve visitors and provider tunnels until SIGTERM / Ctrl-C.
    Run(Box<RunArgs>),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// TOML file with the same keys as these flags (flags win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Apps answer at https://<name>.<domain>.
    #[arg(long)]
    domain: Option<String>,
    /// Identity, name ownership and certificates [default: /var/lib/peercompute-gateway].
    #[arg(long, env = "PEERCOMPUTE_GATEWAY_STATE")]
    state_dir: Option<PathBuf>,
    /// HTTPS listener [default: 0.0.0.0:443].
    #[arg(long)]
    https_listen: Option<SocketAddr>,
    /// Plain HTTP listener that redirects to HTTPS [default: 0.0.0.0:80].
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Disable the plain HTTP redirect listener.
    #[arg(long)]
    no_http: bool,
    /// QUIC tunnel listener (UDP) [default: 0.0.0.0:8443].
    #[arg(long)]
    tunnel_listen: Option<SocketAddr>,
    /// Health, readiness and Prometheus metrics [default: 127.0.0.1:9180].
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Port printed in public URLs when HTTPS is not reachable on 443.
    #[arg(long)]
    public_port: Option<u16>,
    /// Certificate source: dev (local CA) or files (--cert/--key).
    #[arg(long, value_enum)]
    tls: Option<TlsMode>,
    /// PEM certificate chain for --tls files.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// PEM private key for --tls files.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Provider peer id allowed to open tunnels (repeatable).
    #[arg(long = "allow-provider", value_name = "PEERID")]
    allow_provider: Vec<String>,
    /// File of allowed provider peer ids, one per line; re-read when it changes.
    #[arg(long)]
    allow_providers_file: Option<PathBuf>,
    /// Accept tunnels from any provider (development only).
    #[arg(long)]
    open: bool,
    /// Requests per second per hostname, 0 to disable [default: 100].
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Requests per second per client IP (IPv6 per /64), 0 to disable [default: 200].
    #[arg(long)]
    rate_limit_ip: Option<u32>,
    /// Time in-flight requests get to finish after SIGTERM, e.g. 30s [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    grace_period: Option<Duration>,
    /// Time to wait for an app's response head before answering 504 [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    upstream_timeout: Option<Duration>,
    /// Most visitor connections at once [default: 10000].
    #[arg(long)]
    max_connections: Option<usize>,
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<GatewayConfig> {
        let mut cfg = match &self.config {
            Some(path) => GatewayConfig::from_file(path)?,
            None => GatewayConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { cfg.$field = v; } )* };
        }
        set!(
            domain,
            state_dir,
            https_listen,
            tunnel_listen,
            tls,
            rate_limit,
            rate_limit_ip,
            grace_period,
            upstream_timeout,
            max_connections
        );
        if let Some(a) = self.http_listen {
            cfg.http_listen = Some(a);
        }
        if self.no_http {
            cfg.http_listen = None;
        }
        if let Some(a) = self.admin_listen {
            cfg.admin_listen = Some(a);
        }
        if self.public_port.is_some() {
            cfg.public_port = self.public_port;
        }
        if self.cert.is_some() {
            cfg.cert = self.cert;
        }
        if self.key.is_some() {
            cfg.key = self.key;
        }
        if self.allow_providers_file.is_some() {
            cfg.allow_providers_file = self.allow_providers_file;
        }
        cfg.allow_providers.extend(self.allow_provider);
        cfg.open |= self.open;
        Ok(cfg.validate()?)
    }
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,quinn=warn,rustls=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(async_main(cli)),
        Err(e) => Err(anyhow::Error::from(e).context("cannot start the async runtime")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn async_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Id { state_dir } => {
            let (identity, created) = peercompute_gateway::identity(&state_dir)?;
            if created {
                eprintln!("created a new gateway identity in {}", state_dir.display());
            }
            println!("{}", identity.peer_id());
            Ok(())
        }
        Command::Run(args) => {
            let config = args.into_config()?;
            let listeners = Listeners::bind(&config).await?;
            if config.tls == TlsMode::Dev {
                eprintln!(
                    "dev TLS: trust {} (curl --cacert …)",
                    peercompute_gateway::dev_ca_path(&config.state_dir).display()
                );
            }
            peercompute_gateway::run(config, listeners, shutdown_signal())
                .await
                .context("gateway failed")
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
