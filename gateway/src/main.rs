//! `peercompute-gateway`: command line of the public edge. See the library docs.
//! `cli/cluster.rs`: the `--cluster` flags and the `cluster` subcommand.

#[path = "cli/cluster.rs"]
mod cluster_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use peercompute_cli::{ConfigError, LogFormat};
use peercompute_gateway::{AcmeChallenge, DnsProvider, GatewayConfig, Listeners, TlsMode};

#[derive(Parser, Debug)]
#[command(
    name = "peercompute-gateway",
    version,
    about = "Public HTTPS edge of Peer Compute: routes https://<name>.<domain> through QUIC tunnels to providers",
    after_help = "Examples:\n  peercompute-gateway id --state-dir /var/lib/peercompute-gateway\n  peercompute-gateway run --domain apps.example.com --allow-provider 12D3KooW...\n  peercompute-gateway run --domain apps.example.com --tls acme --acme-directory letsencrypt-staging --dns-server ns1.example.com:53 --dns-zone example.com --dns-tsig-key /etc/peercompute/acme.key --allow-provider 12D3KooW...\n  peercompute-gateway run --config /etc/peercompute/gateway.toml\n  peercompute-gateway completions bash > /etc/bash_completion.d/peercompute-gateway"
)]
struct Cli {
    /// Log lines as text (coloured only on a terminal) or one JSON object per line.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "PEERCOMPUTE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the gateway's peer id (creating its identity if missing).
    #[command(after_help = "Examples:\n  \
        peercompute-gateway id                                   # /var/lib/peercompute-gateway\n  \
        peercompute-gateway id --state-dir ./gateway-state\n  \
        PEERCOMPUTE_GATEWAY_STATE=/srv/gw peercompute-gateway id")]
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
    #[command(after_help = "Examples:\n  \
        peercompute-gateway run --domain apps.example.com --allow-provider 12D3KooW...    # ACME, per-name certificates via HTTP-01\n  \
        peercompute-gateway run --domain apps.example.com --dns-server ns1.example.com:53 --dns-tsig-key /etc/peercompute/acme.key --allow-providers-file /etc/peercompute/providers.txt    # wildcard via DNS-01\n  \
        peercompute-gateway run --domain apps.localhost --https-listen 127.0.0.1:8443 --no-http --open    # local dev CA\n  \
        peercompute-gateway run --domain apps.example.com --allow-provider 12D3KooW... --admin-listen 0.0.0.0:9180 --admin-token-file /etc/peercompute/admin-tokens --admin-host gw.example.com    # admin API and dashboard off loopback\n  \
        peercompute-gateway run --domain apps.example.com --allow-provider 12D3KooW... --access-log /var/log/peercompute/access.log --access-log-keep 10\n  \
        peercompute-gateway run --domain apps.example.com --allow-provider 12D3KooW... --cluster etcd://127.0.0.1:2379    # several gateways sharing names through etcd\n  \
        peercompute-gateway run --domain apps.example.com --cluster etcds://etcd1:2379,etcds://etcd2:2379 --cluster-ca /etc/peercompute/etcd-ca.pem --cluster-cert /etc/peercompute/etcd-gw.pem --cluster-key /etc/peercompute/etcd-gw.key\n  \
        peercompute-gateway run --config /etc/peercompute/gateway.toml")]
    Run(Box<RunArgs>),
    /// The state several gateways share in etcd (--cluster): admit or revoke providers on
    /// all of them, see whether etcd answers, list owned names.
    #[command(after_help = "Examples:\n  \
        peercompute-gateway cluster --config /etc/peercompute/gateway.toml status\n  \
        peercompute-gateway cluster --domain apps.example.com --cluster etcd://127.0.0.1:2379 revoke 12D3KooW... --reason \"key leaked\"\n  \
        peercompute-gateway cluster --config /etc/peercompute/gateway.toml names --json")]
    Cluster(Box<cluster_cli::ClusterCommand>),
    /// Print a shell completion script to stdout.
    #[command(after_help = "Examples:\n  \
        peercompute-gateway completions bash > /etc/bash_completion.d/peercompute-gateway\n  \
        peercompute-gateway completions zsh > \"${fpath[1]}/_peercompute-gateway\"\n  \
        peercompute-gateway completions fish > ~/.config/fish/completions/peercompute-gateway.fish")]
    Completions {
        /// Shell to write the completion script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
    /// Plain HTTP listener: answers ACME HTTP-01 challenges and redirects everything else to
    /// HTTPS [default: 0.0.0.0:80].
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Disable the plain HTTP listener (no redirect; ACME then uses TLS-ALPN-01 on the HTTPS
    /// port).
    #[arg(long)]
    no_http: bool,
    /// QUIC tunnel listener (UDP) [default: 0.0.0.0:8443].
    #[arg(long)]
    tunnel_listen: Option<SocketAddr>,
    /// Health, readiness, Prometheus metrics, the admin API and the dashboard [default:
    /// 127.0.0.1:9180]; off loopback it needs --admin-token-file.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Admin API bearer tokens, one per line: `read TOKEN` or `admin TOKEN` (chmod 600).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Host name the admin listener answers to besides IP literals and localhost, repeatable
    /// (other Host headers get 421, against DNS rebinding).
    #[arg(long = "admin-host", value_name = "NAME")]
    admin_host: Vec<String>,
    /// Write an access log (JSON lines) to PATH, or to standard output with `-` [default: off].
    #[arg(long, value_name = "PATH|-")]
    access_log: Option<PathBuf>,
    /// Rotate the access log at this size [default: 104857600].
    #[arg(long, value_name = "BYTES")]
    access_log_max_bytes: Option<u64>,
    /// Rotated access logs kept (PATH.1 … PATH.N), 1 to 100 [default: 5].
    #[arg(long, value_name = "N")]
    access_log_keep: Option<usize>,
    /// Most apps with their own `route` label in /metrics; later ones share route="other"
    /// (0: no per-app labels at all) [default: 500].
    #[arg(long, value_name = "N")]
    metrics_max_routes: Option<usize>,
    /// Port printed in public URLs when HTTPS is not reachable on 443.
    #[arg(long)]
    public_port: Option<u16>,
    /// Certificate source [default: auto]; the choice and its reason are logged at start.
    #[arg(long, value_enum)]
    tls: Option<TlsMode>,
    /// PEM certificate chain for --tls files (with --tls auto, giving it selects files).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// PEM private key for --tls files (with --tls auto, giving it selects files).
    #[arg(long)]
    key: Option<PathBuf>,
    /// ACME directory URL, or letsencrypt / letsencrypt-staging [default: Let's Encrypt
    /// production]. Try staging first.
    #[arg(long, value_name = "URL")]
    acme_directory: Option<String>,
    /// Contact e-mail given to the ACME server.
    #[arg(long, value_name = "ADDR")]
    acme_email: Option<String>,
    /// PEM CA certificate(s) to trust for a private ACME server's HTTPS.
    #[arg(long, value_name = "FILE")]
    acme_ca: Option<PathBuf>,
    /// dns-01: one wildcard certificate for D and *.D (needs --dns-server and --dns-tsig-key);
    /// http-01 / tls-alpn-01: per-name certificates for registered names, no DNS credentials
    /// [default: dns-01 when any --dns-* is given, else http-01, tls-alpn-01 with --no-http].
    #[arg(long, value_enum)]
    acme_challenge: Option<AcmeChallenge>,
    /// How DNS-01 records are published; giving it asks for DNS-01 [default: rfc2136].
    #[arg(long, value_enum)]
    dns_provider: Option<DnsProvider>,
    /// Primary DNS server accepting RFC 2136 updates, HOST[:PORT].
    #[arg(long, value_name = "HOST:PORT")]
    dns_server: Option<String>,
    /// Zone holding the _acme-challenge records [default: the domain].
    #[arg(long, value_name = "ZONE")]
    dns_zone: Option<String>,
    /// TSIG key file (BIND `key "name" {...};` or Knot `id:/algorithm:/secret:` layout).
    #[arg(long, value_name = "FILE")]
    dns_tsig_key: Option<PathBuf>,
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
    /// libp2p address of the meeting point (relay + rendezvous) that lets clients reach
    /// providers behind NAT, repeatable [default: /ip4/0.0.0.0/tcp/4001 and
    /// /ip4/0.0.0.0/udp/4001/quic-v1].
    #[arg(long, value_name = "MULTIADDR")]
    p2p_listen: Vec<String>,
    /// Public libp2p address to announce when it differs from --p2p-listen (NAT, DNS name),
    /// repeatable, e.g. /dns4/gw.example.com/tcp/4001.
    #[arg(long, value_name = "MULTIADDR")]
    p2p_announce: Vec<String>,
    /// Do not run the libp2p meeting point (providers behind NAT then need a LAN or an address).
    #[arg(long, conflicts_with = "p2p_listen")]
    no_p2p: bool,
    /// Most relay slots reserved at once [default: 1024].
    #[arg(long)]
    relay_max_reservations: Option<usize>,
    /// How long a provider's relay slot lasts before it must renew it, e.g. 1h [default: 1h].
    #[arg(long, value_parser = humantime::parse_duration)]
    relay_reservation_duration: Option<Duration>,
    /// A relayed control session closes after this long, e.g. 30m [default: 30m].
    #[arg(long, value_parser = humantime::parse_duration)]
    relay_max_circuit_duration: Option<Duration>,
    /// A relayed control session closes after this many bytes [default: 16777216].
    #[arg(long, value_name = "BYTES")]
    relay_max_circuit_bytes: Option<u64>,
    /// QUIC congestion controller of the tunnel, for what the gateway sends to providers
    /// (uploads): cubic, bbr (keeps its rate on lossy links; quinn calls it experimental) or
    /// newreno [default: cubic].
    #[arg(long, value_name = "cubic|bbr|newreno")]
    tunnel_congestion: Option<peercompute_gateway::TunnelCongestion>,
    #[command(flatten)]
    cluster: cluster_cli::ClusterArgs,
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
            acme_directory,
            rate_limit,
            rate_limit_ip,
            grace_period,
            upstream_timeout,
            max_connections,
            access_log_max_bytes,
            access_log_keep,
            metrics_max_routes,
            relay_max_reservations,
            relay_reservation_duration,
            relay_max_circuit_duration,
            relay_max_circuit_bytes,
            tunnel_congestion
        );
        if !self.p2p_listen.is_empty() {
            cfg.p2p_listen = self.p2p_listen;
        }
        if self.no_p2p {
            cfg.p2p_listen.clear();
        }
        if !self.p2p_announce.is_empty() {
            cfg.p2p_announce = self.p2p_announce;
        }
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
        if self.acme_challenge.is_some() {
            cfg.acme_challenge = self.acme_challenge;
        }
        if self.dns_provider.is_some() {
            cfg.dns_provider = self.dns_provider;
        }
        if self.key.is_some() {
            cfg.key = self.key;
        }
        for (flag, field) in [
            (self.acme_email, &mut cfg.acme_email),
            (self.dns_server, &mut cfg.dns_server),
            (self.dns_zone, &mut cfg.dns_zone),
        ] {
            if flag.is_some() {
                *field = flag;
            }
        }
        for (flag, field) in [
            (self.acme_ca, &mut cfg.acme_ca),
            (self.dns_tsig_key, &mut cfg.dns_tsig_key),
        ] {
            if flag.is_some() {
                *field = flag;
            }
        }
        for (flag, field) in [
            (self.admin_token_file, &mut cfg.admin_token_file),
            (self.access_log, &mut cfg.access_log),
        ] {
            if flag.is_some() {
                *field = flag;
            }
        }
        if !self.admin_host.is_empty() {
            cfg.admin_host = self.admin_host;
        }
        if self.allow_providers_file.is_some() {
            cfg.allow_providers_file = self.allow_providers_file;
        }
        cfg.allow_providers.extend(self.allow_provider);
        self.cluster.apply(&mut cfg);
        cfg.open |= self.open;
        Ok(cfg.validate()?)
    }
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    peercompute_cli::init_logging(cli.log_format, peercompute_cli::DAEMON_LOG_FILTER);
    if let Command::Completions { shell } = cli.command {
        return peercompute_cli::print_completions(shell, <Cli as clap::CommandFactory>::command());
    }
    let result = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(async_main(cli)),
        Err(e) => Err(anyhow::Error::from(e).context("cannot start the async runtime")),
    };
    peercompute_cli::report(result)
}

async fn async_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Completions { .. } => {
            unreachable!("main prints completions before the runtime starts")
        }
        Command::Id { state_dir } => {
            let (identity, created) = peercompute_gateway::identity(&state_dir)?;
            if created {
                eprintln!("created a new gateway identity in {}", state_dir.display());
            }
            println!("{}", identity.peer_id());
            Ok(())
        }
        Command::Cluster(command) => cluster_cli::run(*command).await,
        Command::Run(args) => {
            let config = args.into_config().map_err(ConfigError::wrap)?;
            let listeners = Listeners::bind(&config).await?;
            peercompute_gateway::run(config, listeners, peercompute_cli::shutdown_signal())
                .await
                .context("gateway failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_examples_and_every_flag_a_description() {
        let problems = peercompute_cli::help_problems(&<Cli as clap::CommandFactory>::command());
        assert!(
            problems.is_empty(),
            "incomplete --help:\n{}",
            problems.join("\n")
        );
    }
}
