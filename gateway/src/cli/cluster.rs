//! `peercompute-gateway cluster …`: the operator's view of the state several gateways share
//! in etcd (`--cluster`), read and written directly in etcd with the same flags as `run`.
//! Revoking a provider here closes its tunnels on every gateway within the watch's latency.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use peercompute_cluster::ClusterStore;
use peercompute_gateway::GatewayConfig;
use peercompute_identity::parse_peer_id;
use serde_json::json;

/// The etcd settings, shared by `run` and `cluster`.
#[derive(Args, Debug, Default)]
pub(crate) struct ClusterArgs {
    /// etcd shared by several gateways, repeatable or comma-separated: etcd://HOST:PORT, or
    /// etcds://HOST:PORT for TLS (with --cluster-ca). Names and the allow/revoked sets then
    /// live there [default: off, one gateway alone].
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub(crate) cluster: Vec<String>,
    /// PEM CA that signed etcd's certificate (etcds://).
    #[arg(long, value_name = "FILE")]
    pub(crate) cluster_ca: Option<PathBuf>,
    /// PEM client certificate for etcd (with --cluster-key).
    #[arg(long, value_name = "FILE")]
    pub(crate) cluster_cert: Option<PathBuf>,
    /// PEM private key of --cluster-cert.
    #[arg(long, value_name = "FILE")]
    pub(crate) cluster_key: Option<PathBuf>,
    /// etcd user (etcds:// only, with --cluster-password-file).
    #[arg(long, value_name = "NAME")]
    pub(crate) cluster_user: Option<String>,
    /// File whose first line is the etcd user's password.
    #[arg(long, value_name = "FILE")]
    pub(crate) cluster_password_file: Option<PathBuf>,
    /// Allow plain etcd:// to a host that is not loopback (a network you trust).
    #[arg(long)]
    pub(crate) cluster_insecure: bool,
    /// 32 random bytes, mode 0600, the same file on every gateway: seals the ACME private
    /// keys kept in etcd (required with --cluster and --tls acme). Make it once with
    /// `head -c 32 /dev/urandom > F && chmod 600 F` and copy it to every gateway.
    #[arg(long, value_name = "FILE")]
    pub(crate) cluster_secret_file: Option<PathBuf>,
}

impl ClusterArgs {
    /// Flags win over the file's keys.
    pub(crate) fn apply(self, cfg: &mut GatewayConfig) {
        if !self.cluster.is_empty() {
            cfg.cluster = self.cluster;
        }
        for (flag, field) in [
            (self.cluster_ca, &mut cfg.cluster_ca),
            (self.cluster_cert, &mut cfg.cluster_cert),
            (self.cluster_key, &mut cfg.cluster_key),
            (self.cluster_password_file, &mut cfg.cluster_password_file),
            (self.cluster_secret_file, &mut cfg.cluster_secret_file),
        ] {
            if flag.is_some() {
                *field = flag;
            }
        }
        if self.cluster_user.is_some() {
            cfg.cluster_user = self.cluster_user;
        }
        cfg.cluster_insecure |= self.cluster_insecure;
    }
}

/// `peercompute-gateway cluster`.
#[derive(Args, Debug)]
pub(crate) struct ClusterCommand {
    /// The gateway's TOML file: its domain and cluster_* keys (flags win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The domain the gateways serve (the keys live under /peercompute/v1/<domain>/).
    #[arg(long)]
    domain: Option<String>,
    #[command(flatten)]
    etcd: ClusterArgs,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Admit a provider on every gateway of the cluster (adds to their own allowlists).
    #[command(after_help = "Examples:\n  \
        peercompute-gateway cluster --domain apps.example.com --cluster etcd://127.0.0.1:2379 allow 12D3KooW... --reason \"lab robot\"")]
    Allow {
        /// The provider's peer id.
        peer: String,
        /// Why (kept with the entry).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Refuse a provider on every gateway, whatever their own allowlists say; its live
    /// tunnels close at once.
    #[command(after_help = "Examples:\n  \
        peercompute-gateway cluster --config /etc/peercompute/gateway.toml revoke 12D3KooW... --reason \"key leaked\"")]
    Revoke {
        /// The provider's peer id.
        peer: String,
        /// Why (the provider is told).
        #[arg(long)]
        reason: String,
    },
    /// Lift a revocation (the gateways' allowlists decide again).
    #[command(after_help = "Examples:\n  \
        peercompute-gateway cluster --config /etc/peercompute/gateway.toml unrevoke 12D3KooW...")]
    Unrevoke {
        /// The provider's peer id.
        peer: String,
    },
    /// Whether etcd answers, and how many names, allowed and revoked providers it holds.
    #[command(after_help = "Examples:\n  \
        peercompute-gateway cluster --config /etc/peercompute/gateway.toml status\n  \
        peercompute-gateway cluster --domain apps.example.com --cluster etcds://etcd1:2379,etcds://etcd2:2379 --cluster-ca /etc/peercompute/etcd-ca.pem status --json")]
    Status {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every owned name and its owner's peer id.
    #[command(after_help = "Examples:\n  \
        peercompute-gateway cluster --config /etc/peercompute/gateway.toml names\n  \
        peercompute-gateway cluster --config /etc/peercompute/gateway.toml names --json")]
    Names {
        /// A JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `cluster` command.
pub(crate) async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    let mut cfg = match &command.config {
        Some(path) => GatewayConfig::from_file(path)?,
        None => GatewayConfig::default(),
    };
    if let Some(domain) = command.domain {
        cfg.domain = domain;
    }
    command.etcd.apply(&mut cfg);
    // A complete config is not needed here: only the domain and the cluster keys.
    cfg.open = true;
    let cfg = cfg.validate()?;
    let by = format!(
        "operator:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let options = cfg
        .cluster_options(&by)?
        .context("give --cluster etcd://HOST:PORT (or the gateway's --config with cluster keys)")?;
    let store = ClusterStore::connect(&cfg.cluster, options)
        .await
        .context("cannot use the cluster store")?;
    let endpoints = cfg.cluster.join(",");
    let up = *store.up().borrow();
    let need_up = || match store.last_error() {
        Some(err) if !up => Err(anyhow::Error::new(err)),
        _ => Ok(()),
    };
    match command.action {
        Action::Allow { peer, reason } => {
            let peer = peer_id(&peer)?;
            store.allow(&peer, &reason).await?;
            println!("{peer} is allowed on every gateway of {endpoints}");
        }
        Action::Revoke { peer, reason } => {
            let peer = peer_id(&peer)?;
            store.revoke(&peer, &reason).await?;
            println!("{peer} is revoked on every gateway of {endpoints}: {reason}");
        }
        Action::Unrevoke { peer } => {
            let peer = peer_id(&peer)?;
            if store.unrevoke(&peer).await? {
                println!("{peer} is no longer revoked; each gateway's allowlist decides again");
            } else {
                println!("{peer} was not revoked");
            }
        }
        Action::Status { json } => {
            let error = store.last_error().map(|e| e.to_string());
            let (names, allowed, revoked) = (
                store.owners().len(),
                store.allowed_peers().len(),
                store.revoked_peers().len(),
            );
            if json {
                let status = json!({
                    "endpoints": cfg.cluster, "up": up, "error": error,
                    "names": names, "allowed": allowed, "revoked": revoked,
                });
                println!("{status}");
            } else {
                println!("etcd:     {endpoints} ({})", if up { "up" } else { "DOWN" });
                if let Some(error) = error {
                    println!("error:    {error}");
                }
                println!("names:    {names}\nallowed:  {allowed}\nrevoked:  {revoked}");
            }
            need_up()?;
        }
        Action::Names { json } => {
            need_up()?;
            let owners = store.owners();
            if json {
                let list: Vec<_> = owners
                    .iter()
                    .map(|(name, owner)| json!({"name": name, "owner": owner}))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for (name, owner) in owners {
                    println!("{name}\t{owner}");
                }
            }
        }
    }
    store.shutdown().await;
    Ok(())
}

fn peer_id(text: &str) -> anyhow::Result<String> {
    let peer = parse_peer_id(text).map_err(anyhow::Error::msg)?;
    Ok(peer.to_string())
}
