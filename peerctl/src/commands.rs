//! One function per command: build the request, send it, print the answer.

use peercompute_identity::{AddOutcome, Identity, TrustStore, resolve_home};
use peercompute_tunnel_proto::{
    ControlPlaneMessage, DeployRequest, EnvVar, ListRequest, LogStream, LogsRequest, Request,
    StatusRequest, StopRequest,
};
use std::sync::{Arc, Mutex};

use peercompute_p2p::Framed;
use peerctl::output::{self, Progress};
use peerctl::places::{self, Places};
use peerctl::resolve::{is_full_id, resolve};
use peerctl::{CliError, Client, ClientOptions, Kind};

use crate::{Cli, Command, GatewaysCommand, NamesCommand, PeersCommand};

type Result<T> = std::result::Result<T, CliError>;

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::Other, e.to_string())
}

fn unexpected(msg: &ControlPlaneMessage) -> CliError {
    CliError::new(
        Kind::Other,
        format!("unexpected answer from the provider: {msg:?}"),
    )
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value).map_err(other)?);
    Ok(())
}

/// Whether the command was asked for JSON output (its errors then print as JSON too).
pub(crate) fn wants_json(command: &Command) -> bool {
    match command {
        Command::Id { json, .. }
        | Command::Deploy { json, .. }
        | Command::Ls { json, .. }
        | Command::Status { json, .. }
        | Command::Logs { json, .. }
        | Command::Peers(PeersCommand::List { json })
        | Command::Gateways(GatewaysCommand::List { json }) => *json,
        Command::Volumes(volumes) => volumes.wants_json(),
        Command::Fleet(fleet) => fleet.wants_json(),
        _ => false,
    }
}

pub(crate) async fn run(cli: Cli) -> Result<()> {
    let json = wants_json(&cli.command);
    let home = resolve_home(cli.home.clone()).map_err(|e| CliError::new(Kind::Other, e))?;
    let places = || Places::open(&home).map_err(other);
    let options = ClientOptions {
        mdns: !cli.no_mdns,
        connect_timeout: cli.timeout,
        gateways: match &cli.command {
            Command::Deploy { .. }
            | Command::Ls { .. }
            | Command::Status { .. }
            | Command::Logs { .. }
            | Command::Volumes(_)
            | Command::Stop { .. } => places()?
                .gateways()
                .iter()
                .filter_map(places::Gateway::parsed)
                .collect(),
            _ => Vec::new(),
        },
        ..ClientOptions::default()
    };
    // The client of this run, to remember how its provider was reached once it is done.
    let used: Mutex<Option<Arc<Client>>> = Mutex::new(None);
    let result = dispatch(cli, &home, options, &used).await;
    let client = used.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(client) = client {
        remember(&client, &home, json).await;
    }
    result
}

/// Records the path to the provider and the gateways it announced (so a provider first met
/// on the LAN stays reachable through its gateway later). Failures only warn. With `json`
/// stderr is kept for the one JSON error object: notes and warnings go to the log instead.
async fn remember(client: &Client, home: &std::path::Path, json: bool) {
    let note = |line: String| {
        if json {
            tracing::info!("{line}");
        } else {
            eprintln!("{line}");
        }
    };
    let mut places = match Places::open(home) {
        Ok(p) => p,
        Err(e) => {
            note(format!("warning: {e}"));
            return;
        }
    };
    let provider = client.provider();
    if let Some(path) = client.path().await
        && let Err(e) = places.record_path(&provider, &path)
    {
        note(format!(
            "warning: cannot record how {provider} was reached: {e}"
        ));
    }
    for circuit in client.provider_circuits().await {
        if let Some((gw, addr)) = places::gateway_of_circuit(&circuit) {
            match places.add_gateway(gw, &addr, &format!("learned from {provider}")) {
                Ok(true) => note(format!("learned gateway {gw} at {addr} (from {provider})")),
                Ok(false) => {}
                Err(e) => note(format!("warning: cannot record gateway {gw}: {e}")),
            }
        }
    }
}

async fn dispatch(
    cli: Cli,
    home: &std::path::Path,
    options: ClientOptions,
    used: &Mutex<Option<Arc<Client>>>,
) -> Result<()> {
    let home = home.to_path_buf();
    let identity = || {
        Identity::load(&home).map_err(|e| match e {
            peercompute_identity::IdentityError::Missing { .. } => CliError::new(
                Kind::Other,
                format!(
                    "no identity in {}: run `peerctl init` first",
                    home.display()
                ),
            ),
            other => CliError::new(Kind::Other, other.to_string()),
        })
    };
    let trust = || TrustStore::open(&home).map_err(other);
    let connect = |peer: String| {
        let options = options.clone();
        async move {
            let client = Arc::new(Client::connect(identity()?, &trust()?, &peer, &options).await?);
            *used.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
            Ok::<_, CliError>(client)
        }
    };
    match cli.command {
        Command::Init => {
            let (id, created) = Identity::load_or_create(&home).map_err(other)?;
            if created {
                eprintln!("created a new identity in {}", home.display());
            }
            println!("{}", id.peer_id());
            Ok(())
        }
        Command::Id { json, rotate: true } => peerctl::fleet::id_rotate(&home, json),
        Command::Id { json, .. } => {
            let peer_id = identity()?.peer_id();
            if json {
                return print_line_json(&serde_json::json!({ "peer_id": peer_id.to_string() }));
            }
            println!("{peer_id}");
            Ok(())
        }
        Command::Peers(cmd) => peers(&home, cmd),
        Command::Fleet(cmd) => peerctl::fleet::run(&home, cmd, cli.timeout).await,
        Command::Gateways(cmd) => gateways(&home, cmd),
        Command::Names(NamesCommand::Grant {
            name,
            peer,
            domain,
            until,
            key,
        }) => {
            let owner = match key {
                Some(path) => Identity::load_file(&path).map_err(other)?,
                None => identity()?,
            };
            let grantee = peercompute_identity::parse_peer_id(&peer)
                .map_err(|e| CliError::new(Kind::BadRequest, e))?;
            println!(
                "{}",
                peerctl::names::grant(&owner, &domain, &name, grantee, until)?
            );
            Ok(())
        }
        Command::Deploy {
            image,
            peer,
            name,
            port,
            env,
            cpu,
            memory,
            attach,
            json,
        } => {
            let env = env
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok(EnvVar {
                        key: k.to_owned(),
                        value: v.to_owned(),
                    }),
                    _ => Err(CliError::new(
                        Kind::BadRequest,
                        format!("--env `{kv}` is not KEY=VALUE"),
                    )),
                })
                .collect::<Result<Vec<_>>>()?;
            let req = DeployRequest {
                image,
                name,
                port,
                env,
                cpu_millis: cpu,
                memory_bytes: memory,
                volumes: attach.volumes,
                devices: attach.devices,
                volume_exclusive: attach.volume_exclusive,
            };
            let asked = Attached::of(&req);
            let request = Request::Deploy(req);
            request
                .validate()
                .map_err(|e| CliError::new(Kind::BadRequest, e.to_string()))?;
            let client = connect(peer).await?;
            let mut framed = client.send(&request).await?;
            let mut progress = Progress::new();
            loop {
                let msg = Client::next(&mut framed).await;
                match msg {
                    Ok(ControlPlaneMessage::DeployProgress(p)) => {
                        if !json {
                            progress.update(&p);
                        }
                    }
                    Ok(ControlPlaneMessage::DeployResponse(r)) => {
                        progress.finish();
                        if json {
                            return print_json(&asked.add_to(&r).map_err(other)?);
                        }
                        eprintln!(
                            "deployed {} ({}) as {} on {}",
                            r.image, r.id, r.name, r.peer
                        );
                        // stdout carries the URL only, so `$(peerctl deploy …)` is a URL or
                        // nothing; the reason for none goes with the other notes.
                        match (&r.url, r.no_url) {
                            (Some(url), _) => println!("{url}"),
                            (None, Some(peercompute_tunnel_proto::NoUrl::Pending)) => eprintln!(
                                "{} (see `peerctl status {}`)",
                                peercompute_tunnel_proto::NoUrl::Pending,
                                r.id
                            ),
                            (None, reason) => {
                                eprintln!(
                                    "{}",
                                    reason.unwrap_or(peercompute_tunnel_proto::NoUrl::Unknown)
                                )
                            }
                        }
                        return Ok(());
                    }
                    Ok(other) => return Err(unexpected(&other)),
                    Err(e) => {
                        progress.finish();
                        return Err(peerctl::volumes::explain_old_provider(e));
                    }
                }
            }
        }
        Command::Ls { peer, json } => {
            let client = connect(peer).await?;
            let mut framed = client.send(&Request::List(ListRequest {})).await?;
            let list = match Client::next(&mut framed).await? {
                ControlPlaneMessage::ListResponse(l) => l,
                other => return Err(unexpected(&other)),
            };
            if json {
                return print_json(&list.deployments);
            }
            if list.deployments.is_empty() {
                eprintln!("no deployments of yours on {}", client.provider());
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .deployments
                .iter()
                .map(|d| {
                    vec![
                        d.id.clone(),
                        d.name.clone(),
                        output::state(d.state),
                        d.image.clone(),
                        output::age(d.created_at),
                        d.url.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(&["ID", "NAME", "STATE", "IMAGE", "CREATED", "URL"], &rows)
            );
            // Why the provider stopped some: after the table (which scripts parse), on stderr.
            for d in &list.deployments {
                if let Some(reason) = &d.stopped_reason {
                    eprintln!("{}: {reason}", d.name);
                }
            }
            Ok(())
        }
        Command::Status { id, peer, json } => {
            let client = connect(peer.clone()).await?;
            let (_, answer) = send_for_deployment(&client, &peer, &id, |id| {
                Request::Status(StatusRequest { id })
            })
            .await?;
            let s = match answer {
                ControlPlaneMessage::StatusResponse(s) => s,
                other => return Err(unexpected(&other)),
            };
            if json {
                return print_json(&s);
            }
            let rows = output::status_rows(&s);
            let text = output::table(&["FIELD", "VALUE"], &rows);
            // Skip the header line: a key/value listing reads better without it.
            print!("{}", text.split_once('\n').map_or("", |(_, rest)| rest));
            Ok(())
        }
        Command::Logs {
            id,
            peer,
            follow,
            tail,
            json,
        } => {
            let client = connect(peer.clone()).await?;
            tokio::select! {
                r = logs(&client, &peer, &id, follow, tail, json) => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
        Command::Stop { id, peer } => {
            let client = connect(peer.clone()).await?;
            let (_, answer) =
                send_for_deployment(&client, &peer, &id, |id| Request::Stop(StopRequest { id }))
                    .await?;
            match answer {
                ControlPlaneMessage::StopResponse(r) => {
                    eprintln!("stopped {}: container removed, URL withdrawn", r.id);
                    Ok(())
                }
                other => Err(unexpected(&other)),
            }
        }
        Command::Volumes(cmd) => {
            let prepared = cmd.prepare()?;
            let client = connect(cmd.peer().to_owned()).await?;
            peerctl::volumes::run(&client, cmd, prepared).await
        }
        Command::Completions { .. } => {
            unreachable!("main prints completions before the runtime starts")
        }
    }
}

/// Prints a deployment's log lines until the provider ends them (or, with `follow`, until
/// Ctrl-C): as they came (stdout lines on stdout, stderr lines on stderr), or with `json` one
/// object per line on stdout (`{"stream":"stdout","line":"…","timestamp":"…"}`).
async fn logs(
    client: &Client,
    peer: &str,
    arg: &str,
    follow: bool,
    tail: Option<u32>,
    json: bool,
) -> Result<()> {
    let (mut framed, mut answer) = send_for_deployment(client, peer, arg, |id| {
        Request::Logs(LogsRequest { id, follow, tail })
    })
    .await?;
    loop {
        match answer {
            ControlPlaneMessage::LogEntry(e) if json => print_line_json(&e)?,
            ControlPlaneMessage::LogEntry(e) => match e.stream {
                LogStream::Stderr => eprintln!("{}", e.line),
                _ => println!("{}", e.line),
            },
            ControlPlaneMessage::LogsEnd(_) => return Ok(()),
            other => return Err(unexpected(&other)),
        }
        answer = Client::next(&mut framed).await?;
    }
}

/// Sends the request `make(id)` for the deployment `arg` designates (full id, unique id
/// prefix or name) and returns the stream with the first answer.
///
/// A full id goes out as is, saving a round trip; anything else is resolved first from the
/// provider's list of your deployments. A name may look like a full id, so a "not found"
/// for one is resolved from the list before it is believed.
async fn send_for_deployment(
    client: &Client,
    peer: &str,
    arg: &str,
    make: impl Fn(String) -> Request,
) -> Result<(Framed, ControlPlaneMessage)> {
    let exchange = |id: String| {
        let request = make(id);
        async move {
            let mut framed = client.send(&request).await?;
            let first = Client::next(&mut framed).await?;
            Ok::<_, CliError>((framed, first))
        }
    };
    if !is_full_id(arg) {
        return exchange(resolve_on(client, peer, arg).await?).await;
    }
    match exchange(arg.to_owned()).await {
        Err(e) if e.kind == Kind::NotFound => match resolve_on(client, peer, arg).await {
            Ok(id) if id != arg => exchange(id).await,
            _ => Err(e),
        },
        other => other,
    }
}

/// The full id of the deployment `arg` designates among yours on the provider.
async fn resolve_on(client: &Client, peer: &str, arg: &str) -> Result<String> {
    let mut framed = client.send(&Request::List(ListRequest {})).await?;
    let list = match Client::next(&mut framed).await? {
        ControlPlaneMessage::ListResponse(l) => l,
        other => return Err(unexpected(&other)),
    };
    match resolve(arg, &list.deployments) {
        Ok(d) => Ok(d.id.clone()),
        Err(e) => {
            let mut e = CliError::from(e);
            if e.kind == Kind::NotFound {
                e.message = format!(
                    "{} on {} (see `peerctl ls --peer {peer}`)",
                    e.message,
                    client.provider()
                );
            }
            Err(e)
        }
    }
}

/// The volumes and devices a deploy asked for, added to its `--json` answer (the provider's
/// answer does not repeat them).
struct Attached {
    volumes: Vec<peercompute_tunnel_proto::VolumeMount>,
    devices: Vec<String>,
}

impl Attached {
    fn of(req: &DeployRequest) -> Self {
        Self {
            volumes: req.volumes.clone(),
            devices: req.devices.clone(),
        }
    }

    /// `r` as JSON, with `volumes` and `devices` when there are any.
    fn add_to(&self, r: &impl serde::Serialize) -> serde_json::Result<serde_json::Value> {
        let mut value = serde_json::to_value(r)?;
        if let Some(object) = value.as_object_mut() {
            if !self.volumes.is_empty() {
                object.insert("volumes".into(), serde_json::to_value(&self.volumes)?);
            }
            if !self.devices.is_empty() {
                object.insert("devices".into(), serde_json::to_value(&self.devices)?);
            }
        }
        Ok(value)
    }
}

/// One JSON object on one line of stdout (for streams: `logs --json`, `id --json`).
fn print_line_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(value).map_err(other)?);
    Ok(())
}

fn peers(home: &std::path::Path, cmd: PeersCommand) -> Result<()> {
    let mut store = TrustStore::open(home).map_err(other)?;
    let known = Places::open(home).map_err(other)?;
    match cmd {
        PeersCommand::Add {
            peer,
            addrs,
            name,
            gateways,
        } => {
            let parsed = gateways
                .iter()
                .map(|g| {
                    places::parse_gateway(g)
                        .map_err(|e| CliError::new(Kind::BadRequest, e.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            let outcome = store
                .add(&peer, name.as_deref(), &addrs)
                .map_err(|e| CliError::new(Kind::BadRequest, e.to_string()))?;
            match outcome {
                AddOutcome::Added => eprintln!("now trusting {peer}"),
                AddOutcome::Updated => eprintln!("updated {peer}"),
            }
            let mut known = Places::open(home).map_err(other)?;
            for (gw, addr) in parsed {
                if known
                    .add_gateway(gw, &addr, &format!("peers add {peer}"))
                    .map_err(other)?
                {
                    eprintln!("added gateway {gw} at {addr}");
                }
            }
            Ok(())
        }
        PeersCommand::List { json } => {
            if json {
                let list: Vec<_> = store
                    .list()
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "peer_id": p.peer_id.to_string(),
                            "alias": p.alias,
                            "addrs": p.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                            "added_at": p.added_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                            "last_path": known.last_path(&p.peer_id),
                        })
                    })
                    .collect();
                return print_json(&list);
            }
            if store.list().is_empty() {
                eprintln!("no trusted peers yet: `peerctl peers add PEERID --addr MULTIADDR`");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = store
                .list()
                .iter()
                .map(|p| {
                    vec![
                        p.peer_id.to_string(),
                        p.alias.clone().unwrap_or_else(|| "-".into()),
                        p.addrs
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                            .chars()
                            .take(80)
                            .collect(),
                        known
                            .last_path(&p.peer_id)
                            .map_or_else(|| "never reached".into(), output::last_path),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(&["PEER", "ALIAS", "ADDRESSES", "LAST REACHED"], &rows)
            );
            Ok(())
        }
        PeersCommand::Remove { peer } => {
            let removed = store
                .remove(&peer)
                .map_err(|e| CliError::new(Kind::NotFound, e.to_string()))?;
            eprintln!("no longer trusting {}", removed.peer_id);
            Ok(())
        }
    }
}

fn gateways(home: &std::path::Path, cmd: GatewaysCommand) -> Result<()> {
    let mut known = Places::open(home).map_err(other)?;
    match cmd {
        GatewaysCommand::Add { gateway } => {
            let (gw, addr) = places::parse_gateway(&gateway)
                .map_err(|e| CliError::new(Kind::BadRequest, e.to_string()))?;
            if known.add_gateway(gw, &addr, "manual").map_err(other)? {
                eprintln!(
                    "added gateway {gw} at {addr}: providers registered there are now reachable by peer id"
                );
            } else {
                eprintln!("gateway {gw} at {addr} was already known");
            }
            Ok(())
        }
        GatewaysCommand::List { json } => {
            if json {
                return print_json(&known.gateways());
            }
            if known.gateways().is_empty() {
                eprintln!("no gateways yet: `peerctl gateways add PEERID@MULTIADDR`");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = known
                .gateways()
                .iter()
                .map(|g| vec![g.peer_id.clone(), g.addrs.join(","), g.source.clone()])
                .collect();
            print!(
                "{}",
                output::table(&["GATEWAY", "ADDRESSES", "SOURCE"], &rows)
            );
            Ok(())
        }
        GatewaysCommand::Remove { gateway } => {
            let removed = known
                .remove_gateway(&gateway)
                .map_err(|e| CliError::new(Kind::NotFound, e.to_string()))?;
            eprintln!("forgot gateway {}", removed.peer_id);
            Ok(())
        }
    }
}
