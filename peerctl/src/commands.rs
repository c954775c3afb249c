//! One function per command: build the request, send it, print the answer.

use std::time::Duration;

use peercompute_identity::{AddOutcome, Identity, TrustStore, resolve_home};
use peercompute_tunnel_proto::{
    ControlPlaneMessage, DeployRequest, EnvVar, ListRequest, LogStream, LogsRequest, Request,
    StatusRequest, StopRequest,
};
use peerctl::output::{self, Progress};
use peerctl::{CliError, Client, ClientOptions, Kind};

use crate::{Cli, Command, PeersCommand};

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

pub(crate) async fn run(cli: Cli) -> Result<()> {
    let home = resolve_home(cli.home.clone()).map_err(|e| CliError::new(Kind::Other, e))?;
    let options = ClientOptions {
        mdns: !cli.no_mdns,
        connect_timeout: cli.timeout,
    };
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
        async move { Client::connect(identity()?, &trust()?, &peer, &options).await }
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
        Command::Id => {
            println!("{}", identity()?.peer_id());
            Ok(())
        }
        Command::Peers(cmd) => peers(&home, cmd),
        Command::Deploy {
            image,
            peer,
            name,
            port,
            env,
            cpu,
            memory,
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
            };
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
                            return print_json(&r);
                        }
                        eprintln!(
                            "deployed {} ({}) as {} on {}",
                            r.image, r.id, r.name, r.peer
                        );
                        println!("{}", r.url);
                        return Ok(());
                    }
                    Ok(other) => return Err(unexpected(&other)),
                    Err(e) => {
                        progress.finish();
                        return Err(e);
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
            Ok(())
        }
        Command::Status { id, peer, json } => {
            let client = connect(peer).await?;
            let mut framed = client.send(&Request::Status(StatusRequest { id })).await?;
            let s = match Client::next(&mut framed).await? {
                ControlPlaneMessage::StatusResponse(s) => s,
                other => return Err(unexpected(&other)),
            };
            if json {
                return print_json(&s);
            }
            let mut rows = vec![
                vec!["id".into(), s.id.clone()],
                vec!["name".into(), s.name.clone()],
                vec!["state".into(), output::state(s.state)],
                vec!["image".into(), s.image.clone()],
                vec!["url".into(), s.url.clone()],
                vec![
                    "uptime".into(),
                    s.uptime_secs
                        .map_or("-".into(), |u| output::duration(Duration::from_secs(u))),
                ],
                vec!["restarts".into(), s.restarts.to_string()],
                vec![
                    "cpu".into(),
                    s.cpu_percent.map_or("-".into(), |c| format!("{c:.1}%")),
                ],
            ];
            let mem = match (s.memory_bytes, s.memory_limit) {
                (Some(m), Some(l)) => format!("{} / {}", output::bytes(m), output::bytes(l)),
                (Some(m), None) => output::bytes(m),
                _ => "-".into(),
            };
            rows.push(vec!["memory".into(), mem]);
            rows.push(vec!["created".into(), output::age(s.created_at)]);
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
        } => {
            let client = connect(peer).await?;
            let mut framed = client
                .send(&Request::Logs(LogsRequest { id, follow, tail }))
                .await?;
            let stream = async {
                loop {
                    match Client::next(&mut framed).await? {
                        ControlPlaneMessage::LogEntry(e) => match e.stream {
                            LogStream::Stderr => eprintln!("{}", e.line),
                            _ => println!("{}", e.line),
                        },
                        ControlPlaneMessage::LogsEnd(_) => return Ok(()),
                        other => return Err(unexpected(&other)),
                    }
                }
            };
            tokio::select! {
                r = stream => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
        Command::Stop { id, peer } => {
            let client = connect(peer).await?;
            let mut framed = client.send(&Request::Stop(StopRequest { id })).await?;
            match Client::next(&mut framed).await? {
                ControlPlaneMessage::StopResponse(r) => {
                    eprintln!("stopped {}: container removed, URL withdrawn", r.id);
                    Ok(())
                }
                other => Err(unexpected(&other)),
            }
        }
        Command::Completions { .. } => {
            unreachable!("main prints completions before the runtime starts")
        }
    }
}

fn peers(home: &std::path::Path, cmd: PeersCommand) -> Result<()> {
    let mut store = TrustStore::open(home).map_err(other)?;
    match cmd {
        PeersCommand::Add { peer, addrs, name } => {
            let outcome = store
                .add(&peer, name.as_deref(), &addrs)
                .map_err(|e| CliError::new(Kind::BadRequest, e.to_string()))?;
            match outcome {
                AddOutcome::Added => eprintln!("now trusting {peer}"),
                AddOutcome::Updated => eprintln!("updated {peer}"),
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
                            .join(","),
                    ]
                })
                .collect();
            print!("{}", output::table(&["PEER", "ALIAS", "ADDRESSES"], &rows));
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
