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
    after_help = "Examples:\n  peerctl init\n  peerctl peers add 12D3KooW... --addr /ip4/192.168.1.20/tcp/9000 --name homebox\n  peerctl gateways add 12D3KooW...@/ip4/203.0.113.7/udp/4001/quic-v1\n  peerctl deploy nginx:1.27 --peer homebox --port 80 --name blog\n  peerctl ls --peer homebox\n  peerctl logs blog --peer homebox -f\n  peerctl stop a1b2 --peer homebox\n  peerctl completions bash > /etc/bash_completion.d/peerctl\n\nDeployments are named by full id, a unique id prefix, or name (status, logs, stop).\n\nExit codes: 0 done, 1 other failure, 2 usage (bad arguments, ambiguous deployment),\n3 trust or device not granted, 4 provider unreachable, 5 provider limits, 6 not found,\n7 image, 8 bad request or volume in use.\nWith --json, an error is one JSON object on stderr: {\"error\",\"kind\",\"exit_code\"}."
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

/// `--timeout`: the durations the daemons accept (humantime: `10s`, `1m30s`, `500ms`).
fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}; write a duration like 10s, 1m30s or 500ms"))
}

/// The positional deployment argument's help (status, logs, stop).
const DEPLOYMENT_HELP: &str =
    "The deployment: its id, a unique prefix of the id, or its name (as `peerctl ls` shows them)";
/// The `--peer` help of the commands that talk to a provider.
const PEER_HELP: &str =
    "The provider: its peer id (12D3KooW…) or the alias given with `peerctl peers add --name`";

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create your identity (prints the existing one if present).
    #[command(
        after_help = "Examples:\n  peerctl init\n  peerctl --home /srv/ci-client init\n  PEERCOMPUTE_HOME=~/.peercompute-work peerctl init"
    )]
    Init,
    /// Print your peer id (give it to providers so they can trust you).
    #[command(
        after_help = "Examples:\n  peerctl id\n  peerctl id --json | jq -r .peer_id\n  ssh provider-host peerctl peers add \"$(peerctl id)\"\n  peerctl id --rotate\n\nWith --rotate, the new key waits in identity.key.next; peerctl switches to it at its first\nfleet command after a fleet accepted the rotation (the old key is kept as\nidentity.key.retired-<time>). Trust given to your old peer id by providers does not move:\nask them to trust the new one."
    )]
    Id {
        /// Print {"peer_id": "…"} on one line (for scripts); with --rotate,
        /// {"token","old_peer_id","new_peer_id","made_now"}.
        #[arg(long)]
        json: bool,
        /// Make your next key (once) and print the rotation token an admin publishes with
        /// `peerctl fleet rotate-member`: your roles move to the new key.
        #[arg(long)]
        rotate: bool,
    },
    /// Manage the peers you trust.
    #[command(
        subcommand,
        after_help = "Examples:\n  peerctl peers add 12D3KooW... --addr /ip4/192.168.1.20/tcp/9000 --name homebox\n  peerctl peers list\n  peerctl peers remove homebox"
    )]
    Peers(PeersCommand),
    /// Manage the gateways used to reach providers behind NAT by peer id.
    #[command(
        subcommand,
        after_help = "Examples:\n  peerctl gateways add 12D3KooW...@/ip4/203.0.113.7/udp/4001/quic-v1\n  peerctl gateways list\n  peerctl gateways remove 12D3KooW..."
    )]
    Gateways(GatewaysCommand),
    /// Route names at a gateway: let other provider keys serve a name you own.
    #[command(subcommand)]
    Names(NamesCommand),
    /// Run an image on a trusted provider and print its public URL.
    #[command(
        after_help = "Examples:\n  peerctl deploy nginx:1.27 --peer homebox --port 80 --name blog\n  peerctl deploy ghcr.io/acme/api:2.1 --peer homebox --port 8080 --env RUST_LOG=info --cpu 0.5 --memory 512M\n  URL=$(peerctl deploy nginx:1.27 --peer homebox)\n  peerctl deploy nginx:1.27 --peer homebox --json | jq -r .url\n  peerctl deploy ghcr.io/acme/notes:1.4 --peer homebox --port 8080 --volume data:/var/lib/notes:2G\n  peerctl deploy 127.0.0.1:5000/teleop:v3 --peer robot1 --device arm --device cam\n\nA volume keeps its data across redeploys of the same app name (`peerctl volumes ls` lists\nthem); a device is one the provider's owner granted you by name."
    )]
    Deploy {
        /// Image reference, e.g. nginx:1.27 or ghcr.io/acme/api:2.1.
        image: String,
        #[arg(long, help = PEER_HELP)]
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
        #[arg(long, value_parser = peercompute_tunnel_proto::parse_cpu)]
        cpu: Option<u32>,
        /// Memory, e.g. 256M, 1G [default: 256M].
        #[arg(long, value_parser = peercompute_tunnel_proto::parse_memory)]
        memory: Option<u64>,
        #[command(flatten)]
        attach: peerctl::volumes::AttachArgs,
        /// Print the result as one JSON object (id, name, url, peer, image, status, and the
        /// volumes and devices asked for), no progress.
        #[arg(long)]
        json: bool,
    },
    /// List your deployments on a provider.
    #[command(
        after_help = "Examples:\n  peerctl ls --peer homebox\n  peerctl ls --peer homebox --json | jq -r '.[] | select(.state == \"running\") | .url'"
    )]
    Ls {
        #[arg(long, help = PEER_HELP)]
        peer: String,
        /// Print the deployments as a JSON array (id, name, image, url, state, created_at).
        #[arg(long)]
        json: bool,
    },
    /// Show one deployment: state, image, uptime, restarts, CPU, memory, volumes, devices
    /// and why the provider stopped it.
    #[command(
        after_help = "Examples:\n  peerctl status blog --peer homebox\n  peerctl status a1b2 --peer homebox\n  peerctl status blog --peer homebox --json | jq .memory_bytes"
    )]
    Status {
        #[arg(value_name = "DEPLOYMENT", help = DEPLOYMENT_HELP)]
        id: String,
        #[arg(long, help = PEER_HELP)]
        peer: String,
        /// Print the status as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a deployment's logs; with -f keep following until Ctrl-C.
    #[command(
        after_help = "Examples:\n  peerctl logs blog --peer homebox --tail 100\n  peerctl logs a1b2 --peer homebox -f\n  peerctl logs blog --peer homebox -f --json | jq -r 'select(.stream == \"stderr\") | .line'"
    )]
    Logs {
        #[arg(value_name = "DEPLOYMENT", help = DEPLOYMENT_HELP)]
        id: String,
        #[arg(long, help = PEER_HELP)]
        peer: String,
        /// Keep streaming new lines.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u32>,
        /// One JSON object per line on stdout: {"stream":"stdout|stderr","line":"…","timestamp":"…"}.
        #[arg(long)]
        json: bool,
    },
    /// Stop a deployment: the container is removed and its URL stops answering.
    #[command(
        after_help = "Examples:\n  peerctl stop blog --peer homebox\n  peerctl stop a1b2c3d4e5f6 --peer homebox\n  peerctl ls --peer homebox --json | jq -r '.[].id' | xargs -n1 peerctl stop --peer homebox"
    )]
    Stop {
        #[arg(value_name = "DEPLOYMENT", help = DEPLOYMENT_HELP)]
        id: String,
        #[arg(long, help = PEER_HELP)]
        peer: String,
    },
    /// Your named volumes on a provider: list, remove, export and import them.
    #[command(
        subcommand,
        after_help = "Examples:\n  peerctl volumes ls --peer homebox\n  peerctl volumes export blog/data --peer homebox > blog-data.tar\n  peerctl volumes import blog/data --peer vps < blog-data.tar\n  peerctl volumes rm blog/data --peer homebox"
    )]
    Volumes(peerctl::volumes::VolumesCommand),
    /// Run a fleet of robots: signed releases to groups, roles, enrolment, status, audit log.
    #[command(
        after_help = "Examples:\n  peerctl fleet create lekiwi\n  peerctl fleet invite --group production --name-prefix lekiwi --expires 24h --uses 10\n  peerctl fleet release 127.0.0.1:5000/teleop:v3 --group production --port 8080 --health-path /healthz\n  peerctl fleet rollback --group production\n  peerctl fleet status --group production\n  peerctl fleet log --verify\n\nThe client keeps a verified copy of each fleet's log in <home>/fleets and exchanges entries\nwith the gateways of `peerctl gateways` (robots sync with their gateway)."
    )]
    Fleet(peerctl::fleet::FleetCommand),
    /// Print a shell completion script to stdout.
    #[command(
        after_help = "Examples:\n  peerctl completions bash > /etc/bash_completion.d/peerctl\n  peerctl completions zsh > \"${fpath[1]}/_peerctl\"\n  peerctl completions fish > ~/.config/fish/completions/peerctl.fish"
    )]
    Completions {
        /// The shell to write the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum GatewaysCommand {
    /// Remember a gateway: providers registered at it become reachable by peer id alone.
    #[command(
        after_help = "Examples:\n  peerctl gateways add 12D3KooW...@/ip4/203.0.113.7/udp/4001/quic-v1\n  peerctl gateways add /dns/gw.example.com/udp/4001/quic-v1/p2p/12D3KooW..."
    )]
    Add {
        /// PEERID@MULTIADDR (the gateway's p2p address, e.g.
        /// 12D3KooW…@/ip4/203.0.113.7/udp/4001/quic-v1) or MULTIADDR/p2p/PEERID.
        gateway: String,
    },
    /// List known gateways (added by hand or learned from providers).
    #[command(after_help = "Examples:\n  peerctl gateways list\n  peerctl gateways list --json")]
    List {
        /// Print the gateways as a JSON array (peer_id, addrs, source).
        #[arg(long)]
        json: bool,
    },
    /// Forget a gateway.
    #[command(after_help = "Examples:\n  peerctl gateways remove 12D3KooW...")]
    Remove {
        /// The gateway's peer id.
        gateway: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum NamesCommand {
    /// Print a grant letting provider PEER serve NAME too (the gateway balances requests
    /// between the owner's provider and the granted ones).
    #[command(
        after_help = "Examples:\n  peerctl names grant blog 12D3KooW... --domain apps.example.com --until 30d \\\n      --key /var/lib/peercompute/identity.key > blog.grant\n  # on the other provider (a TunnelHandle::register_granted caller) present blog.grant\n\nThe grant is signed by the key that owns NAME at the gateway: the provider's identity\n(--key FILE), or peerctl's own identity when it is the owner. It lasts at most 90 days."
    )]
    Grant {
        /// The route name (the DNS label of `https://NAME.DOMAIN`).
        name: String,
        /// The provider key that may serve it too (12D3KooW…).
        peer: String,
        /// The gateway's public domain (its `--domain`).
        #[arg(long)]
        domain: String,
        /// How long the grant lasts (at most 90d).
        #[arg(long, default_value = "30d", value_parser = humantime_duration)]
        until: Duration,
        /// The owner's identity key file [default: peerctl's identity].
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PeersCommand {
    /// Trust a peer (a provider you deploy to, or a client that may deploy to you).
    #[command(
        after_help = "Examples:\n  peerctl peers add 12D3KooW... --addr /ip4/192.168.1.20/tcp/9000 --name homebox\n  peerctl peers add 12D3KooW... --name vps --gateway 12D3KooW...@/ip4/203.0.113.7/udp/4001/quic-v1\n  peerctl --home /var/lib/peercompute peers add 12D3KooW...   # on a provider: trust a client"
    )]
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
    #[command(
        after_help = "Examples:\n  peerctl peers list\n  peerctl peers list --json | jq -r '.[].peer_id'"
    )]
    List {
        /// Print the peers as a JSON array (peer_id, alias, addrs, added_at, last_path).
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting a peer (by id or alias).
    #[command(
        after_help = "Examples:\n  peerctl peers remove homebox\n  peerctl peers remove 12D3KooW..."
    )]
    Remove {
        /// Its peer id or alias.
        peer: String,
    },
}

fn main() -> ExitCode {
    // Every Peer Compute binary picks rustls' ring provider first (libp2p links aws-lc too).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return peerctl::exit::clap_failure(&e, std::env::args().any(|a| a == "--json")),
    };
    let json = commands::wants_json(&cli.command);
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
        Err(e) => e.report(json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("peerctl").chain(args.iter().copied()))
    }

    #[test]
    fn deploy_takes_volumes_devices_and_exclusive() {
        let cli = parse(&[
            "deploy",
            "ghcr.io/acme/notes:1.4",
            "--peer",
            "homebox",
            "--volume",
            "data:/var/lib/notes:2G",
            "--volume",
            "cache:/cache",
            "--device",
            "arm",
            "--device",
            "cam",
            "--volume-exclusive",
        ])
        .expect("parses");
        let Command::Deploy { attach, .. } = cli.command else {
            panic!("not a deploy")
        };
        let volumes: Vec<_> = attach
            .volumes
            .iter()
            .map(|v| (v.name.as_str(), v.path.as_str(), v.size_bytes))
            .collect();
        assert_eq!(
            volumes,
            [
                ("data", "/var/lib/notes", Some(2 << 30)),
                ("cache", "/cache", None)
            ]
        );
        assert_eq!(attach.devices, ["arm", "cam"]);
        assert!(attach.volume_exclusive);
        let Command::Deploy { attach, .. } = parse(&["deploy", "nginx", "--peer", "p"])
            .expect("parses")
            .command
        else {
            panic!("not a deploy")
        };
        assert!(attach.volumes.is_empty() && attach.devices.is_empty() && !attach.volume_exclusive);
    }

    /// Bad volume and device arguments fail on the command line, before anything is signed,
    /// with the rule's own words.
    #[test]
    fn bad_attachments_are_refused_while_parsing() {
        for (flag, value, words) in [
            ("--device", "/dev/kvm", "paths are never accepted"),
            ("--device", "ARM", "not a device name"),
            (
                "--volume",
                "/var/run/docker.sock:/var/run/docker.sock",
                "not a volume name",
            ),
            ("--volume", "../etc:/data", "not a volume name"),
            ("--volume", "data:/proc/self", "/proc"),
            ("--volume", "data:relative", "not absolute"),
            ("--volume", "data", "NAME:/PATH"),
            ("--volume", "data:/x:0", "zero"),
        ] {
            let err = parse(&["deploy", "nginx", "--peer", "p", flag, value]).expect_err("refused");
            let text = err.to_string();
            assert!(text.contains(words), "{flag} {value}: {text}");
            assert_eq!(err.exit_code(), 2, "{flag} {value}");
        }
    }

    #[test]
    fn volumes_subcommands_parse() {
        let cli = parse(&["volumes", "ls", "--peer", "homebox", "--json"]).expect("parses");
        let Command::Volumes(cmd) = cli.command else {
            panic!("not volumes")
        };
        assert!(cmd.wants_json());
        assert_eq!(cmd.peer(), "homebox");
        let cli = parse(&[
            "volumes",
            "import",
            "blog/data",
            "--peer",
            "vps",
            "--share",
            "2G",
            "--replace",
            "--file",
            "a.tar",
        ])
        .expect("parses");
        let Command::Volumes(peerctl::volumes::VolumesCommand::Import {
            volume,
            share,
            replace,
            file,
            ..
        }) = cli.command
        else {
            panic!("not an import")
        };
        assert_eq!(
            (volume.as_str(), share, replace, file),
            ("blog/data", Some(2 << 30), true, Some("a.tar".into()))
        );
        assert!(
            parse(&["volumes", "rm", "blog/data"]).is_err(),
            "--peer is required"
        );
        // A volume that is not APP/NAME is refused before connecting.
        let Command::Volumes(cmd) = parse(&["volumes", "rm", "blog", "--peer", "p"])
            .expect("parses")
            .command
        else {
            panic!("not volumes")
        };
        let err = cmd.prepare().expect_err("not APP/NAME");
        assert_eq!(err.kind, Kind::BadRequest);
        assert!(err.message.contains("APP/NAME"), "{}", err.message);
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
}
