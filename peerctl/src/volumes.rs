//! `peerctl volumes …` (list, remove, export, import a provider's named volumes of yours) and
//! the `--volume`/`--device`/`--volume-exclusive` flags `deploy` and `fleet release` share.
//!
//! Export and import stream a tar archive (entries `data/…`) over the control stream in
//! `VolumeData` frames of at most 64 KiB. Both are refused over a relayed path: a gateway's
//! relay caps the bytes of a circuit, so a transfer would break midway. An import is hashed
//! first (stdin is spooled to a temporary file), so the signed request fixes its size and
//! SHA-256 before any data is sent; an export is hashed as it is written and checked against
//! the provider's count at the end.

use std::io::{IsTerminal, Read, Seek, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use peercompute_p2p::{Framed, PathKind};
use peercompute_tunnel_proto::{
    ControlPlaneMessage, MAX_VOLUME_DATA, Request, VolumeEnd, VolumeExportRequest,
    VolumeImportRequest, VolumeInfo, VolumeMount, VolumeRemoveRequest, VolumesRequest,
    validate_device_name, validate_volume_ref,
};
use sha2::{Digest, Sha256};

use crate::exit::{CliError, Kind};
use crate::{Client, output};

type Result<T> = std::result::Result<T, CliError>;

/// The provider help of the volume commands.
const PEER_HELP: &str =
    "The provider: its peer id (12D3KooW…) or the alias given with `peerctl peers add --name`";
const VOLUME_HELP: &str = "The volume: APP/NAME, e.g. blog/data (as `peerctl volumes ls` shows it)";

/// Volumes and devices a deployment asks for (`deploy` and `fleet release`).
#[derive(Args, Debug, Clone, Default)]
pub struct AttachArgs {
    /// A named volume NAME:/PATH[:SIZE] mounted at PATH, kept across redeploys of the same app
    /// name; SIZE is its share of the provider's volume space [default: 1G] (repeatable, at
    /// most 8).
    #[arg(long = "volume", value_name = "NAME:/PATH[:SIZE]", value_parser = peercompute_tunnel_proto::parse_volume)]
    pub volumes: Vec<VolumeMount>,
    /// A device by the name the provider's owner granted you, e.g. arm (repeatable, at most
    /// 8); device paths are never accepted.
    #[arg(long = "device", value_name = "NAME", value_parser = device_name)]
    pub devices: Vec<String>,
    /// In a fleet release, stop the old container before the new one starts, so the two never
    /// run against the same volume (for apps not safe to run twice, e.g. SQLite without WAL);
    /// the switch then has a brief gap. A plain deploy ignores it (a redeploy is stop + deploy).
    #[arg(long)]
    pub volume_exclusive: bool,
}

fn device_name(s: &str) -> std::result::Result<String, String> {
    validate_device_name(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

/// `peerctl volumes <action>`.
#[derive(Subcommand, Debug)]
pub enum VolumesCommand {
    /// List your volumes on a provider: use, share and the deployments that mount them.
    #[command(
        after_help = "Examples:\n  peerctl volumes ls --peer homebox\n  peerctl volumes ls --peer homebox --json | jq -r '.[] | select(.in_use_by == []) | .volume'"
    )]
    Ls {
        #[arg(long, help = PEER_HELP)]
        peer: String,
        /// Print the volumes as a JSON array (volume, used_bytes, share_bytes, in_use_by,
        /// created_at).
        #[arg(long)]
        json: bool,
    },
    /// Remove a volume and its data (refused while a deployment, running or stopped by the
    /// provider, mounts it).
    #[command(
        after_help = "Examples:\n  peerctl volumes rm blog/data --peer homebox\n  peerctl stop blog --peer homebox && peerctl volumes rm blog/data --peer homebox"
    )]
    Rm {
        #[arg(value_name = "APP/NAME", help = VOLUME_HELP)]
        volume: String,
        #[arg(long, help = PEER_HELP)]
        peer: String,
    },
    /// Write a volume's files as a tar archive to stdout (entries data/…), progress on stderr,
    /// then `sha256 <hex> <bytes>` on stderr.
    #[command(
        after_help = "Examples:\n  peerctl volumes export blog/data --peer homebox > blog-data.tar\n  peerctl volumes export blog/data --peer homebox | peerctl volumes import blog/data --peer vps\n  peerctl volumes export blog/data --peer homebox --json > blog-data.tar 2> blog-data.json\n\nRefused over a relayed path (relays cap the bytes of a circuit): retry when a direct path\nexists (`peerctl peers list` shows how each provider was last reached)."
    )]
    Export {
        #[arg(value_name = "APP/NAME", help = VOLUME_HELP)]
        volume: String,
        #[arg(long, help = PEER_HELP)]
        peer: String,
        /// End with {"volume","bytes","sha256"} as one JSON object on stderr, no progress.
        #[arg(long)]
        json: bool,
    },
    /// Fill a volume from a tar archive (entries data/…, as `volumes export` writes): the
    /// volume must be absent or empty, unless --replace.
    #[command(
        after_help = "Examples:\n  peerctl volumes import blog/data --peer vps < blog-data.tar\n  peerctl volumes import blog/data --peer vps --file blog-data.tar --share 2G\n  peerctl volumes import blog/data --peer vps --replace < blog-data.tar\n\nThe archive is hashed first (stdin is copied to a temporary file), so the signed request\nfixes its size and SHA-256; the provider checks both, and every entry, before writing.\nRefused over a relayed path (relays cap the bytes of a circuit)."
    )]
    Import {
        #[arg(value_name = "APP/NAME", help = VOLUME_HELP)]
        volume: String,
        #[arg(long, help = PEER_HELP)]
        peer: String,
        /// The volume's share of the provider's volume space, e.g. 2G [default: the volume's
        /// current share, or 1G for a new one].
        #[arg(long, value_name = "SIZE", value_parser = peercompute_tunnel_proto::parse_memory)]
        share: Option<u64>,
        /// Replace what the volume holds (it must not be mounted by any deployment); the old
        /// data is cleared only once the new archive is verified.
        #[arg(long)]
        replace: bool,
        /// Read the archive from this file instead of stdin.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Print {"volume","bytes","sha256"} as one JSON object on stdout, no progress.
        #[arg(long)]
        json: bool,
    },
}

impl VolumesCommand {
    /// The provider the command talks to.
    pub fn peer(&self) -> &str {
        match self {
            Self::Ls { peer, .. }
            | Self::Rm { peer, .. }
            | Self::Export { peer, .. }
            | Self::Import { peer, .. } => peer,
        }
    }

    /// Whether errors should print as JSON.
    pub fn wants_json(&self) -> bool {
        match self {
            Self::Ls { json, .. } | Self::Export { json, .. } | Self::Import { json, .. } => *json,
            Self::Rm { .. } => false,
        }
    }

    /// Does what needs no provider, before connecting: checks the volume's syntax and the
    /// terminals, and for an import reads and hashes the archive (spooling stdin), so a long
    /// spool never keeps a connection idle.
    pub fn prepare(&self) -> Result<Prepared> {
        self.precheck()?;
        match self {
            Self::Import { file, .. } => Ok(Prepared {
                archive: Some(Archive::open(file.as_deref())?),
            }),
            _ => Ok(Prepared { archive: None }),
        }
    }

    /// Checks the volume's syntax and the terminals.
    fn precheck(&self) -> Result<()> {
        let volume = match self {
            Self::Ls { .. } => return Ok(()),
            Self::Rm { volume, .. } | Self::Export { volume, .. } | Self::Import { volume, .. } => {
                volume
            }
        };
        validate_volume_ref(volume).map_err(|e| CliError::new(Kind::BadRequest, e.to_string()))?;
        match self {
            Self::Export { .. } if std::io::stdout().is_terminal() => Err(CliError::new(
                Kind::Usage,
                "stdout is a terminal: redirect the archive to a file (> data.tar) or a pipe",
            )),
            Self::Import { file: None, .. } if std::io::stdin().is_terminal() => {
                Err(CliError::new(
                    Kind::Usage,
                    "stdin is a terminal: give the archive on stdin (< data.tar) or with --file",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// What [`VolumesCommand::prepare`] made ready: an import's archive, hashed.
#[derive(Debug)]
pub struct Prepared {
    archive: Option<Archive>,
}

/// Runs a volume command against `client` (connected to the command's `--peer`).
pub async fn run(client: &Client, command: VolumesCommand, prepared: Prepared) -> Result<()> {
    run_one(client, command, prepared)
        .await
        .map_err(explain_old_provider)
}

/// An older provider's refusal of the fields and messages it does not know, with what to do
/// about it; any other error as it is.
pub fn explain_old_provider(e: CliError) -> CliError {
    const NEW_FIELDS: [&str; 3] = ["`volumes`", "`devices`", "`volume_exclusive`"];
    const NEW_TYPES: [&str; 4] = ["0x15", "0x16", "0x17", "0x18"];
    let old = e.kind == Kind::BadRequest
        && (NEW_FIELDS
            .iter()
            .any(|f| e.message.contains(&format!("unknown field {f}")))
            || NEW_TYPES.iter().any(|t| {
                e.message
                    .contains(&format!("unknown control-plane message type {t}"))
            }));
    if !old {
        return e;
    }
    CliError::new(
        e.kind,
        format!(
            "{}: this provider's peercomputed is older than volumes and devices; its operator must upgrade it",
            e.message
        ),
    )
}

async fn run_one(client: &Client, command: VolumesCommand, prepared: Prepared) -> Result<()> {
    match command {
        VolumesCommand::Ls { json, .. } => ls(client, json).await,
        VolumesCommand::Rm { volume, .. } => {
            let request = Request::VolumeRemove(VolumeRemoveRequest {
                volume: volume.clone(),
            });
            match Client::next(&mut client.send(&request).await?).await? {
                ControlPlaneMessage::VolumeRemoved(r) => {
                    eprintln!("removed volume {} on {}", r.volume, client.provider());
                    Ok(())
                }
                other => Err(unexpected(&other)),
            }
        }
        VolumesCommand::Export { volume, json, .. } => export(client, &volume, json).await,
        VolumesCommand::Import {
            volume,
            share,
            replace,
            json,
            ..
        } => {
            let archive = prepared.archive.ok_or_else(|| {
                CliError::new(Kind::Other, "internal: the archive was not prepared")
            })?;
            import(client, volume, share, replace, archive, json).await
        }
    }
}

async fn ls(client: &Client, json: bool) -> Result<()> {
    let mut framed = client.send(&Request::Volumes(VolumesRequest {})).await?;
    let list = match Client::next(&mut framed).await? {
        ControlPlaneMessage::VolumesResponse(l) => l,
        other => return Err(unexpected(&other)),
    };
    if json {
        let text = serde_json::to_string_pretty(&list.volumes)
            .map_err(|e| CliError::new(Kind::Other, e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    if list.volumes.is_empty() {
        eprintln!("no volumes of yours on {}", client.provider());
        return Ok(());
    }
    print!("{}", volumes_table(&list.volumes));
    Ok(())
}

/// VOLUME, USED, SHARE, MOUNTED BY.
pub fn volumes_table(volumes: &[VolumeInfo]) -> String {
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|v| {
            vec![
                v.volume.clone(),
                v.used_bytes.map_or_else(|| "-".into(), output::bytes),
                output::bytes(v.share_bytes),
                if v.in_use_by.is_empty() {
                    "-".into()
                } else {
                    v.in_use_by.join(", ")
                },
            ]
        })
        .collect();
    output::table(&["VOLUME", "USED", "SHARE", "MOUNTED BY"], &rows)
}

/// Refuses a transfer over a relayed path (relays cap a circuit's bytes).
async fn refuse_relayed(client: &Client, what: &str) -> Result<()> {
    match client.path().await {
        Some(path) if path.kind == PathKind::Relayed => Err(CliError::new(
            Kind::Unreachable,
            format!(
                "provider {} is reachable only through a gateway's relay now ({}), which caps the bytes of a circuit: a volume {what} would break midway. Retry when a direct path exists (on the same LAN, or once hole punching succeeds; `peerctl peers list` shows the last path)",
                client.provider(),
                path.address
            ),
        )),
        _ => Ok(()),
    }
}

async fn export(client: &Client, volume: &str, json: bool) -> Result<()> {
    refuse_relayed(client, "export").await?;
    let request = Request::VolumeExport(VolumeExportRequest {
        volume: volume.to_owned(),
    });
    let mut framed = client.send(&request).await?;
    let bar = transfer_bar(None, json);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut out = std::io::stdout().lock();
    let end = loop {
        match Client::next(&mut framed).await {
            Ok(ControlPlaneMessage::VolumeData(data)) => {
                out.write_all(&data)
                    .map_err(|e| CliError::new(Kind::Other, format!("cannot write stdout: {e}")))?;
                hasher.update(&data);
                bytes += data.len() as u64;
                bar.set_position(bytes);
            }
            Ok(ControlPlaneMessage::VolumeEnd(end)) => break end,
            Ok(other) => {
                bar.abandon();
                return Err(unexpected(&other));
            }
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        }
    };
    out.flush()
        .map_err(|e| CliError::new(Kind::Other, format!("cannot write stdout: {e}")))?;
    bar.finish_and_clear();
    let sha256 = hex::encode(hasher.finalize());
    check_end(&end, bytes, &sha256, "sent", "received")?;
    report_end(volume, bytes, &sha256, json, true)
}

/// The provider's count against ours.
fn check_end(end: &VolumeEnd, bytes: u64, sha256: &str, theirs: &str, ours: &str) -> Result<()> {
    if end.bytes != bytes || end.sha256 != sha256 {
        return Err(CliError::new(
            Kind::Other,
            format!(
                "the transfer is damaged: the provider {theirs} {} bytes (sha256 {}), this client {ours} {bytes} bytes (sha256 {sha256}); do not use the archive, retry",
                end.bytes, end.sha256
            ),
        ));
    }
    Ok(())
}

/// `sha256 <hex> <bytes>`, or one JSON object; on stderr when stdout carries the archive.
fn report_end(volume: &str, bytes: u64, sha256: &str, json: bool, stderr: bool) -> Result<()> {
    let line = if json {
        serde_json::json!({ "volume": volume, "bytes": bytes, "sha256": sha256 }).to_string()
    } else {
        format!("sha256 {sha256} {bytes}")
    };
    if stderr {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    Ok(())
}

/// An archive to import: a file, its size and SHA-256, read once before sending.
#[derive(Debug)]
pub struct Archive {
    file: std::fs::File,
    /// Keeps the spooled copy of stdin alive (removed on drop).
    _spool: Option<tempfile::TempPath>,
    pub size: u64,
    pub sha256: String,
}

impl Archive {
    /// Opens `path`, or spools stdin to a temporary file when there is none, and hashes it.
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let io = |what: &str, e: std::io::Error| CliError::new(Kind::Other, format!("{what}: {e}"));
        let (mut file, spool) = match path {
            Some(path) => (
                std::fs::File::open(path)
                    .map_err(|e| io(&format!("cannot open {}", path.display()), e))?,
                None,
            ),
            None => {
                let mut spool = tempfile::NamedTempFile::new()
                    .map_err(|e| io("cannot create a temporary file for stdin", e))?;
                std::io::copy(&mut std::io::stdin().lock(), &mut spool)
                    .map_err(|e| io("cannot copy stdin to a temporary file", e))?;
                let (file, path) = spool.into_parts();
                (file, Some(path))
            }
        };
        file.rewind()
            .map_err(|e| io("cannot read the archive", e))?;
        let (size, sha256) = hash(&mut file).map_err(|e| io("cannot read the archive", e))?;
        file.rewind()
            .map_err(|e| io("cannot read the archive", e))?;
        if size == 0 {
            return Err(CliError::new(
                Kind::BadRequest,
                "the archive is empty: give a tar archive as `peerctl volumes export` writes it",
            ));
        }
        Ok(Self {
            file,
            _spool: spool,
            size,
            sha256,
        })
    }

    /// The next chunk of at most one frame; empty at the end.
    fn chunk(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

/// Size and SHA-256 (lowercase hex) of everything `reader` yields.
pub fn hash(reader: &mut impl Read) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hex::encode(hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

async fn import(
    client: &Client,
    volume: String,
    share: Option<u64>,
    replace: bool,
    mut archive: Archive,
    json: bool,
) -> Result<()> {
    refuse_relayed(client, "import").await?;
    let request = Request::VolumeImport(VolumeImportRequest {
        volume: volume.clone(),
        size_bytes: archive.size,
        sha256: archive.sha256.clone(),
        share_bytes: share,
        replace,
    });
    let mut framed = client.send(&request).await?;
    let bar = transfer_bar(Some(archive.size), json);
    let sent = send_archive(&mut framed, &mut archive, &bar).await;
    // An early refusal (over the share, not empty, in use) arrives while we are still sending;
    // otherwise the answer follows the last frame. Even when the stream broke, read it: the
    // provider's reason says more than the broken stream.
    let (answer, sent) = match sent {
        Ok(Some(early)) => (Ok(Some(early)), Ok(())),
        Ok(None) => (framed.read().await, Ok(())),
        Err(e) => (framed.read().await, Err(e)),
    };
    bar.abandon();
    let end = match (answer, sent) {
        (Ok(Some(ControlPlaneMessage::Error(e))), _) => {
            return Err(CliError::new(Kind::of(e.code), e.message));
        }
        (Ok(Some(ControlPlaneMessage::VolumeEnd(end))), Ok(())) => end,
        (_, Err(e)) => return Err(e),
        (Ok(Some(other)), Ok(())) => return Err(unexpected(&other)),
        (Ok(None), Ok(())) => {
            return Err(CliError::new(
                Kind::Other,
                "the provider closed the stream without an answer",
            ));
        }
        (Err(e), Ok(())) => {
            return Err(CliError::new(
                Kind::Other,
                format!("bad answer from the provider: {e}"),
            ));
        }
    };
    check_end(&end, archive.size, &archive.sha256, "wrote", "sent")?;
    if !json {
        eprintln!(
            "imported {} bytes into {volume} on {}",
            end.bytes,
            client.provider()
        );
    }
    report_end(&volume, end.bytes, &end.sha256, json, false)
}

/// Streams the archive; stops early, returning the provider's message, when it answers before
/// the end (a refusal: it then reads no more).
async fn send_archive(
    framed: &mut Framed,
    archive: &mut Archive,
    bar: &ProgressBar,
) -> Result<Option<ControlPlaneMessage>> {
    let mut buf = vec![0; MAX_VOLUME_DATA];
    let mut sent = 0u64;
    while sent < archive.size {
        let n = archive
            .chunk(&mut buf)
            .map_err(|e| CliError::new(Kind::Other, format!("cannot read the archive: {e}")))?;
        if n == 0 {
            return Err(CliError::new(
                Kind::Other,
                "the archive shrank while it was sent: do not change it during an import",
            ));
        }
        let n = n.min(usize::try_from(archive.size - sent).unwrap_or(usize::MAX));
        let data = ControlPlaneMessage::VolumeData(buf[..n].to_vec().into());
        let early = framed
            .write_unless_answered(&data)
            .await
            .map_err(|e| CliError::new(Kind::Unreachable, format!("the transfer broke: {e}")))?;
        if early.is_some() {
            return Ok(early);
        }
        sent += n as u64;
        bar.set_position(sent);
    }
    Ok(None)
}

/// A byte bar on stderr (a counter when the total is unknown); hidden with `json` or off a
/// terminal.
fn transfer_bar(total: Option<u64>, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        "[{bar:30}] {binary_bytes} / {binary_total_bytes} {binary_bytes_per_sec}"
    } else {
        "{spinner} {binary_bytes} {binary_bytes_per_sec}"
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid indicatif template")
            .progress_chars("#>-"),
    );
    bar
}

fn unexpected(msg: &ControlPlaneMessage) -> CliError {
    CliError::new(
        Kind::Other,
        format!("unexpected answer from the provider: {msg:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_counts_and_digests() {
        let (size, sha) = hash(&mut &b"abc"[..]).expect("reads");
        assert_eq!(size, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn an_archive_file_is_hashed_before_sending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.tar");
        std::fs::write(&path, vec![7u8; 200_000]).expect("write");
        let mut archive = Archive::open(Some(&path)).expect("opens");
        assert_eq!(archive.size, 200_000);
        assert_eq!(
            archive.sha256,
            hash(&mut &vec![7u8; 200_000][..]).expect("hash").1
        );
        // Reading starts again at the beginning after hashing.
        let mut buf = vec![0; MAX_VOLUME_DATA];
        assert_eq!(archive.chunk(&mut buf).expect("reads"), MAX_VOLUME_DATA);
        std::fs::write(&path, b"").expect("write");
        let err = Archive::open(Some(&path)).expect_err("empty");
        assert_eq!(err.kind, Kind::BadRequest);
        let err = Archive::open(Some(&dir.path().join("missing.tar"))).expect_err("missing");
        assert!(err.message.contains("missing.tar"), "{}", err.message);
    }

    #[test]
    fn an_old_providers_refusal_says_to_upgrade_it() {
        for message in [
            "bad request: invalid DeployRequest body: unknown field `volumes`, expected one of `image`",
            "bad request: unknown control-plane message type 0x17",
        ] {
            let e = explain_old_provider(CliError::new(Kind::BadRequest, message));
            assert!(e.message.starts_with(message), "{}", e.message);
            assert!(e.message.contains("must upgrade it"), "{}", e.message);
            assert_eq!(e.kind, Kind::BadRequest);
        }
        for (kind, message) in [
            (Kind::BadRequest, "bad request: unknown field `privileged`"),
            (Kind::Other, "unknown field `volumes`"),
        ] {
            let e = explain_old_provider(CliError::new(kind, message));
            assert_eq!(e.message, message);
        }
    }

    #[test]
    fn a_damaged_transfer_is_named() {
        let end = VolumeEnd {
            bytes: 10,
            sha256: "ab".repeat(32),
        };
        assert!(check_end(&end, 10, &"ab".repeat(32), "sent", "received").is_ok());
        let err = check_end(&end, 9, &"ab".repeat(32), "sent", "received").expect_err("short");
        assert!(err.message.contains("damaged"), "{}", err.message);
        assert!(check_end(&end, 10, &"cd".repeat(32), "sent", "received").is_err());
    }

    #[test]
    fn the_table_shows_use_share_and_users() {
        let text = volumes_table(&[
            VolumeInfo {
                volume: "blog/data".into(),
                used_bytes: Some(5 << 20),
                share_bytes: 1 << 30,
                in_use_by: vec!["blog (running)".into()],
                created_at: None,
            },
            VolumeInfo {
                volume: "old/db".into(),
                used_bytes: None,
                share_bytes: 2 << 30,
                in_use_by: vec![],
                created_at: Some(1),
            },
        ]);
        assert_eq!(
            text,
            "VOLUME     USED     SHARE    MOUNTED BY\nblog/data  5.0 MiB  1.0 GiB  blog (running)\nold/db     -        2.0 GiB  -\n"
        );
    }
}
