//! `peercomputed`: command line of the provider daemon. See the library docs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use peercompute_cli::{ConfigError, LogFormat};
use peercompute_provider::devices::DeviceGrant;
use peercompute_provider::{
    AdminListen, Expose, Firewall, GatewaySpec, ProviderConfig, ProviderFile,
};

mod status_cmd;

#[derive(Parser, Debug)]
#[command(
    name = "peercomputed",
    version,
    about = "Peer Compute provider: runs trusted peers' containers in a sandbox and publishes them (and local services) at https://NAME.DOMAIN through a gateway",
    after_help = "Examples:\n  peercomputed init\n  peercomputed run --gateway 12D3KooW...@gw.example.com:8443\n  peercomputed run --gateway 12D3KooW...@gw.example.com:8443 --expose blog=127.0.0.1:8080 --max-memory 2GB\n  peercomputed run --config /etc/peercompute/provider.toml\n  peercomputed completions bash > /etc/bash_completion.d/peercomputed\n\nTrust a client (on this machine): peerctl --home ~/.peercompute peers add CLIENT_PEER_ID"
)]
struct Cli {
    /// Home directory (identity, state) [default: $PEERCOMPUTE_HOME or ~/.peercompute].
    #[arg(long, global = true)]
    home: Option<PathBuf>,
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
    /// Create this provider's identity (prints the existing one if present).
    #[command(
        after_help = "Examples:\n  peercomputed init\n  peercomputed --home /var/lib/peercomputed init"
    )]
    Init,
    /// Print this provider's peer id (what the gateway's allowlist and clients' `peerctl peers add` take).
    #[command(
        after_help = "Examples:\n  peercomputed id\n  peercomputed --home /var/lib/peercomputed id"
    )]
    Id,
    /// Serve trusted peers' deploy requests, run their containers and publish them through
    /// the gateway, until SIGTERM / Ctrl-C.
    #[command(
        after_help = "Examples:\n  peercomputed run --gateway 12D3KooW...@gw.example.com:8443\n  peercomputed run --config /etc/peercompute/provider.toml\n  peercomputed run --gateway 12D3KooW...@gw.example.com:8443 --expose blog=127.0.0.1:8080 --max-memory 2GB\n  peercomputed run --gateway 12D3KooW...@gw1.example.com:8443 --gateway 12D3KooW...@gw2.example.com:8443   # one tunnel to each gateway of the domain\n  peercomputed run --listen /ip4/127.0.0.1/tcp/9000 --no-mdns   # no gateway: deploys run, without a public URL\n  peercomputed run --config /etc/peercompute/provider.toml --grant-device name=arm,path=/dev/ttyACM0,access=rw,peers=12D3KooW...,fleets=lekiwi\n  peercomputed run --config /etc/peercompute/provider.toml --max-volumes-size 50GB --volume-check-interval 5m\n  peercomputed run --config /etc/peercompute/provider.toml --offline-start-wait 30s   # fleet robot on a flaky uplink"
    )]
    Run(Box<RunArgs>),
    /// Join a fleet with a join token from `peerctl fleet invite`: the token is checked and
    /// saved; the daemon (`run`, now or when it next starts) enrols this robot through the
    /// gateway.
    #[command(
        after_help = "Examples:\n  peercomputed join pcjoin1.AAAA...\n  peercomputed --home /var/lib/peercomputed join pcjoin1.AAAA... --name lekiwi-kitchen\n\nThen run (or keep running) the daemon with a gateway: peercomputed run --gateway 12D3KooW...@gw.example.com:8443"
    )]
    Join {
        /// The join token (`pcjoin1.…`), as `peerctl fleet invite` printed it.
        #[arg(value_name = "TOKEN")]
        token: String,
        /// This robot's name in the fleet [default: <invite's prefix>-<6 hex digits of this robot's key>].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Make this robot's next key and print its rotation token for a fleet admin (`peerctl
    /// fleet rotate-member TOKEN`); the daemon switches to the new key by itself once the
    /// admin's entry reaches it (it restarts in place; containers keep running). Run again,
    /// it prints the same token.
    #[command(
        after_help = "Examples:\n  peercomputed rotate-key\n  sudo -u peercompute peercomputed --home /var/lib/peercomputed rotate-key --json | jq -r .token\n\nThen, on an admin's machine: peerctl fleet rotate-member <token>\nThe new key waits in <home>/identity.key.next (mode 0600) until then; the old one is kept as\nidentity.key.retired-<unix time> after the switch. Works whether or not the daemon runs."
    )]
    RotateKey {
        /// Print {"token","old_peer_id","new_peer_id"} as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Install the nftables rules that keep containers off this host and its private
    /// networks (needs root; lasts until reboot). `run` does this itself when it can.
    #[command(
        after_help = "Examples:\n  sudo peercomputed firewall\n  peercomputed firewall --print > peercompute.nft && sudo nft -f peercompute.nft\n  sudo peercomputed firewall --remove"
    )]
    Firewall {
        /// Print the ruleset (for `nft -f`) instead of installing it.
        #[arg(long, conflicts_with = "remove")]
        print: bool,
        /// Remove the rules (containers can then reach this host and its LAN).
        #[arg(long)]
        remove: bool,
    },
    /// Show the running daemon's readiness (tunnel, Docker, firewall), relay, deployments,
    /// deploy counts and machine, from its admin listener. Exits 1 when no daemon runs, 3
    /// when it runs but is not ready.
    #[command(
        after_help = "Examples:\n  peercomputed status\n  peercomputed --home /var/lib/peercomputed status --json\n  peercomputed status || echo \"exit $?: 1 not running, 3 not ready\"\n\nWith --admin-token-file on the daemon, put a token in PEERCOMPUTE_ADMIN_TOKEN."
    )]
    Status {
        /// Print the daemon's answer as JSON (the same document as GET /api/v1/status).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script to stdout.
    #[command(
        after_help = "Examples:\n  peercomputed completions bash > /etc/bash_completion.d/peercomputed\n  peercomputed completions zsh > ~/.zfunc/_peercomputed\n  peercomputed completions fish > ~/.config/fish/completions/peercomputed.fish"
    )]
    Completions {
        /// The shell to write the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// TOML file with the same keys as these flags (flags win; a repeated flag replaces the
    /// file's list).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Gateway tunnel address; with PEERID@ the gateway's key is pinned. Repeatable: one
    /// tunnel to each gateway, every app published at all of them, so losing one gateway
    /// loses no app.
    #[arg(long, value_name = "[PEERID@]HOST:PORT")]
    gateway: Vec<GatewaySpec>,
    /// CA bundle that signs the gateway's certificate (when not pinning its peer id).
    #[arg(long, value_name = "FILE")]
    gateway_ca: Option<PathBuf>,
    /// How the tunnel reaches the gateway: auto (QUIC; TLS over TCP to the gateway's HTTPS
    /// port within ~1 s when UDP gets no answer, back to QUIC when it works again), quic or
    /// tcp [default: auto].
    #[arg(long, value_name = "auto|quic|tcp")]
    transport: Option<peercompute_provider::TransportMode>,
    /// The gateway's HTTPS listener, where the tunnel goes over TCP [default: the --gateway
    /// host, port 443]. With several --gateway: none, or one per --gateway, in the same
    /// order.
    #[arg(long, value_name = "HOST:PORT")]
    gateway_https: Vec<peercompute_provider::HttpsAddr>,
    /// Publish an existing local TCP service under NAME (repeatable).
    #[arg(long, value_name = "NAME=HOST:PORT")]
    expose: Vec<Expose>,
    /// A file holding the owner's grant for an --expose NAME another key owns (printed by
    /// `peerctl names grant`; repeatable, one per name). Needs a gateway of protocol version 2.
    #[arg(long, value_name = "FILE")]
    grant: Vec<PathBuf>,
    /// The gateway's libp2p address for relaying (repeatable), ending in /p2p/GATEWAYID
    /// unless (the first) --gateway pins the id [default: announced by the gateway in the
    /// tunnel; with several gateways, by the first that announced one].
    #[arg(long, value_name = "MULTIADDR")]
    gateway_p2p: Vec<peercompute_p2p::Multiaddr>,
    /// Do not keep a relay slot at the gateway (clients then need a LAN or an address).
    #[arg(long)]
    no_relay: bool,
    /// libp2p control-plane listen address (repeatable) [default: /ip4/0.0.0.0/tcp/9000 and
    /// /ip4/0.0.0.0/udp/9000/quic-v1, on every interface].
    ///
    /// Why every interface: peerctl on the LAN connects straight to it (mDNS announces these
    /// addresses), and hole punching through NATs dials from the QUIC port. Only trusted
    /// peers' signed requests are served; anyone who connects learns this provider's peer id,
    /// listen addresses, agent version and protocol names (identify, ping) and, on a control
    /// request, an error naming the provider. `--listen /ip4/127.0.0.1/tcp/9000 --no-mdns`
    /// keeps it on this host: remote clients then come through the gateway's relay.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<peercompute_p2p::Multiaddr>,
    /// Do not announce or discover peers on the LAN with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// CPU for all deployments together: millicores (4000m) or cores (4, 0.5) [default: 4].
    #[arg(long, value_parser = peercompute_runtime::parse_cpu)]
    max_cpu: Option<u32>,
    /// Memory for all deployments together, e.g. 4GB, 512M, 1GiB [default: 4GB].
    #[arg(long, value_parser = peercompute_runtime::parse_memory)]
    max_memory: Option<u64>,
    /// Number of deployments at the same time [default: 10].
    #[arg(long)]
    max_deploys: Option<u32>,
    /// How long a container may take to accept connections, e.g. 60s [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    ready_timeout: Option<std::time::Duration>,
    /// Who keeps containers off this host and its LAN: install (the daemon installs the
    /// nftables rules; needs root, else deploys are refused), external (`peercomputed
    /// firewall` ran as root before), off (nobody: containers reach the LAN) [default:
    /// install].
    #[arg(long, value_name = "install|external|off")]
    firewall: Option<Firewall>,
    /// Grant a device of this machine to some peers and fleets (repeatable; the file's
    /// `[[devices]]` table has the same keys): name (what deploys ask for with --device),
    /// path (the node; a /dev/serial/by-id link is resolved at each deploy), container_path
    /// [default: path when under /dev, else /dev/NAME], access r|rw [default: rw], peers and
    /// fleets (lists joined by +; a fleet by name or pcf… id; both empty: nobody), kind
    /// char|gpu [default: char], count or gpu_ids (gpu), shared true|false (several
    /// containers at once) [default: false for char, true for gpu]. Nothing is granted by
    /// default.
    #[arg(
        long,
        value_name = "name=NAME,path=/dev/NODE,access=r|rw,peers=ID+ID,fleets=FLEET"
    )]
    grant_device: Vec<DeviceGrant>,
    /// Bytes all named volumes together may hold, e.g. 10GB, 500M (deploys that would
    /// exceed it are refused) [default: 10GB].
    #[arg(long, value_parser = peercompute_runtime::parse_memory)]
    max_volumes_size: Option<u64>,
    /// How often volume use is measured; an app whose volume is over its share is stopped,
    /// e.g. 60s, 5m [default: 60s].
    #[arg(long, value_parser = ProviderConfig::parse_check_interval)]
    volume_check_interval: Option<std::time::Duration>,
    /// How long a fleet robot waits at start for one sync of its fleet log with any peer
    /// (gateway or LAN) before it starts the fleet's apps from its own copy, so a stop issued
    /// while it was off is seen first; e.g. 10s, 0s for no wait [default: 10s].
    #[arg(long, value_parser = ProviderConfig::parse_start_wait)]
    offline_start_wait: Option<std::time::Duration>,
    /// Where the admin listener serves /healthz, /readyz, /metrics and /api/v1/status (what
    /// `peercomputed status` reads), or `off`. Off loopback it needs --admin-token-file
    /// [default: 127.0.0.1:9181; if that port is taken the daemon runs on without it].
    #[arg(long, value_name = "IP:PORT|off")]
    admin_listen: Option<AdminListen>,
    /// Bearer tokens for the admin listener, one `read TOKEN` or `admin TOKEN` per line
    /// (chmod 600; re-read when it changes). /healthz and /readyz stay open.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Host name the admin listener answers to besides IP addresses and localhost,
    /// repeatable (e.g. the name Prometheus scrapes it by); other Host headers get 421,
    /// against DNS rebinding.
    #[arg(long, value_name = "NAME")]
    admin_host: Vec<String>,
    /// QUIC congestion controller of the tunnel, for what this provider sends (responses,
    /// downloads): cubic, bbr (keeps its rate on lossy links; quinn calls it experimental) or
    /// newreno [default: cubic].
    #[arg(long, value_name = "cubic|bbr|newreno")]
    tunnel_congestion: Option<peercompute_provider::TunnelCongestion>,
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    peercompute_cli::init_logging(cli.log_format, peercompute_cli::DAEMON_LOG_FILTER);
    if let Command::Completions { shell } = cli.command {
        return peercompute_cli::print_completions(shell, Cli::command());
    }
    if let Command::Status { json } = cli.command {
        return status_cmd::main(cli.home, json);
    }
    let result = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(async_main(cli)),
        Err(e) => Err(anyhow::Error::from(e).context("cannot start the async runtime")),
    };
    peercompute_cli::report(result)
}

async fn async_main(cli: Cli) -> anyhow::Result<()> {
    let home = peercompute_identity::resolve_home(cli.home)
        .map_err(|e| ConfigError::wrap(anyhow::Error::msg(e)))?;
    match cli.command {
        Command::Completions { .. } | Command::Status { .. } => {
            unreachable!("handled before the runtime starts")
        }
        Command::Firewall { print, remove } => {
            if print {
                print!("{}", peercompute_runtime::egress_ruleset());
            } else if remove {
                let removed = peercompute_runtime::remove_egress_firewall().await?;
                eprintln!(
                    "{}",
                    if removed {
                        "removed: containers can now reach this host and its LAN"
                    } else {
                        "there were no Peer Compute egress rules to remove"
                    }
                );
            } else {
                peercompute_runtime::install_egress_firewall().await?;
                eprintln!(
                    "installed: containers on {} reach neither this host nor private networks (until reboot; the daemon reinstalls them at start when it runs as root)",
                    peercompute_runtime::SANDBOX_BRIDGE
                );
            }
            Ok(())
        }
        Command::Join { token, name } => join(&home, &token, name.as_deref()),
        Command::RotateKey { json } => rotate_key(&home, json),
        Command::Init | Command::Id => {
            let (identity, created) = match cli.command {
                Command::Init => peercompute_provider::identity(&home)?,
                _ => (
                    peercompute_identity::Identity::load(&home)
                        .context("no provider identity yet: run `peercomputed init`")?,
                    false,
                ),
            };
            if created {
                eprintln!("created a new identity in {}", home.display());
            }
            println!("{}", identity.peer_id());
            Ok(())
        }
        Command::Run(args) => {
            let RunArgs {
                config: config_file,
                gateway,
                gateway_ca,
                transport,
                gateway_https,
                gateway_p2p,
                no_relay,
                expose,
                grant,
                listen,
                no_mdns,
                max_cpu,
                max_memory,
                max_deploys,
                ready_timeout,
                firewall,
                grant_device,
                max_volumes_size,
                volume_check_interval,
                offline_start_wait,
                admin_listen,
                admin_token_file,
                admin_host,
                tunnel_congestion,
            } = *args;
            let mut config = ProviderConfig::new(home);
            // Grant files are read once the exposed names are settled; the flag wins over
            // the file's `grant`, as for every repeated flag.
            let mut grant_files = Vec::new();
            if let Some(path) = &config_file {
                let file = ProviderFile::from_file(path).map_err(ConfigError::wrap)?;
                grant_files.clone_from(&file.grant);
                file.apply_to(&mut config);
            }
            if !grant.is_empty() {
                grant_files = grant;
            }
            if !gateway.is_empty() {
                config.gateways = gateway;
            }
            if gateway_ca.is_some() {
                config.gateway_ca = gateway_ca;
            }
            if let Some(transport) = transport {
                config.transport = transport;
            }
            if !gateway_https.is_empty() {
                config.gateway_https = gateway_https;
            }
            if !expose.is_empty() {
                config.expose = expose;
            }
            for path in grant_files {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read the grant file {}", path.display()))
                    .map_err(ConfigError::wrap)?;
                let parsed = peercompute_tunnel_proto::NameGrant::from_text(&text)
                    .with_context(|| format!("{} is not a grant", path.display()))
                    .map_err(ConfigError::wrap)?;
                if !config.expose.iter().any(|e| e.name == parsed.name) {
                    return Err(ConfigError::wrap(anyhow::anyhow!(
                        "the grant in {} is for `{}`, which no --expose publishes",
                        path.display(),
                        parsed.name
                    )));
                }
                config.grants.push(parsed);
            }
            if !listen.is_empty() {
                config.listen = listen;
            }
            if no_mdns {
                config.mdns = false;
            }
            if !gateway_p2p.is_empty() {
                config.gateway_p2p = gateway_p2p;
            }
            if no_relay {
                config.relay = false;
            }
            let limits = &mut config.deploy.limits;
            if let Some(v) = max_cpu {
                limits.max_cpu_millis = v;
            }
            if let Some(v) = max_memory {
                limits.max_memory_bytes = v;
            }
            if let Some(v) = max_deploys {
                limits.max_deploys = v;
            }
            if let Some(v) = ready_timeout {
                config.deploy.ready_timeout = v;
            }
            if let Some(v) = firewall {
                config.firewall = v;
            }
            if !grant_device.is_empty() {
                config.devices = grant_device;
            }
            if let Some(v) = max_volumes_size {
                config.max_volumes_size = v;
            }
            if let Some(v) = volume_check_interval {
                config.volume_check_interval = v;
            }
            if let Some(v) = offline_start_wait {
                config.offline_start_wait = v;
            }
            if let Some(v) = admin_listen {
                config.admin_listen = v;
            }
            if admin_token_file.is_some() {
                config.admin_token_file = admin_token_file;
            }
            if !admin_host.is_empty() {
                config.admin_host = admin_host;
            }
            if let Some(v) = tunnel_congestion {
                config.tunnel_congestion = v;
            }
            config
                .check()
                .map_err(|e| ConfigError::wrap(anyhow::Error::msg(e)))?;
            let ended = peercompute_provider::run(config, peercompute_cli::shutdown_signal())
                .await
                .context("provider failed")?;
            match ended {
                peercompute_provider::Ended::Stopped => Ok(()),
                peercompute_provider::Ended::KeyRotated { new } => Err(restart_in_place(&new)),
            }
        }
    }
}

/// `peercomputed rotate-key`: the next key and its token, and what to do with it.
fn rotate_key(home: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let request =
        peercompute_provider::request_rotation(home).context("cannot prepare the key rotation")?;
    if json {
        let doc = serde_json::json!({
            "token": request.token,
            "old_peer_id": request.old.to_string(),
            "new_peer_id": request.new.to_string(),
        });
        println!("{doc}");
        return Ok(());
    }
    println!("{}", request.token);
    eprintln!(
        "{} the next key {} in {} (this robot is {} until the switch).",
        if request.created { "made" } else { "reusing" },
        request.new,
        home.join(peercompute_provider::NEXT_KEY_FILE).display(),
        request.old
    );
    eprintln!(
        "Give this token to a fleet admin: peerctl fleet rotate-member <token>\nOnce the entry reaches this robot the daemon switches to the new key by itself (it restarts in place; containers keep running, its name and URL stay). Not running now? It switches at its next start."
    );
    Ok(())
}

/// After a key switch: the same binary with the same arguments, in place of this process
/// (containers keep running; its boot path adopts them). Returns only when exec failed.
fn restart_in_place(new: &peercompute_identity::PeerId) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            return anyhow::Error::from(e).context(format!(
                "switched to the new key {new}, but cannot find this program to restart it: restart peercomputed by hand"
            ));
        }
    };
    tracing::info!(peer_id = %new, exe = %exe.display(), "restarting in place with the new key");
    let error = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .exec();
    tracing::error!(
        "switched to the new key {new}, but restarting {} failed: {error}; restart peercomputed by hand",
        exe.display()
    );
    anyhow::Error::from(error).context(format!(
        "switched to the new key {new}; restart peercomputed by hand"
    ))
}

/// `peercomputed join`: checks and saves the token, says what happens next.
fn join(home: &std::path::Path, token: &str, name: Option<&str>) -> anyhow::Result<()> {
    let (identity, created) = peercompute_provider::identity(home)?;
    if created {
        eprintln!("created a new identity in {}", home.display());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let saved = peercompute_provider::save_token(
        &peercompute_provider::fleet_dir(home),
        token,
        identity.signing_key(),
        name,
        now,
    )
    .map_err(ConfigError::wrap)?;
    println!("{}", saved.fleet);
    eprintln!(
        "saved the join token for fleet {} in {} (groups: {}; this robot joins as {}).",
        saved.fleet,
        saved.path.display(),
        saved.groups.join(", "),
        saved.name
    );
    eprintln!(
        "Next: `peercomputed run --gateway PEERID@HOST:PORT` (a running daemon picks the token up within 30 s); it fetches the fleet log from the gateway and enrols this robot ({}). Its log says `joined the fleet`, or why the join was refused.",
        identity.peer_id()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_examples_and_every_flag_a_description() {
        let problems = peercompute_cli::help_problems(&Cli::command());
        assert!(
            problems.is_empty(),
            "incomplete --help:\n{}",
            problems.join("\n")
        );
    }

    /// `--config FILE` takes the same keys as the `run` flags: a flag added without its key
    /// fails here.
    #[test]
    fn config_file_knows_every_run_flag() {
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("a run subcommand");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("provider.toml");
        for arg in run.get_arguments() {
            let key = arg.get_id().as_str();
            if ["config", "help", "home", "log_format"].contains(&key) {
                continue;
            }
            // `--grant-device` is a `[[devices]]` table each in the file.
            let key = if key == "grant_device" {
                "devices"
            } else {
                key
            };
            // A value of the wrong type: a known key fails on its value, an unknown one on
            // its name.
            std::fs::write(&path, format!("{key} = {{}}\n")).expect("write");
            let err = ProviderFile::from_file(&path).expect_err("a table is no valid value");
            assert!(
                !err.to_string().contains("unknown field"),
                "--{} has no `{key}` key in the config file: {err}",
                arg.get_long().unwrap_or(key)
            );
        }
    }
}
