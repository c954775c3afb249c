//! `peerctl volumes …` (the real binary) against a stand-in provider: an in-process libp2p
//! node that verifies each signed request as a provider does and answers with the volume
//! frames, so the client's side of the wire is tested without Docker: the list, the refusal
//! of a volume in use (exit 8), an export written to stdout and checked against the
//! provider's count (a damaged one exits 1), and an import hashed first, streamed in 64 KiB
//! frames and read back with `Framed::read_import_data`. The provider's own handling (the
//! engine, shares, the archive filter) is tested end to end in the `tests` package.

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use peercompute_identity::Identity;
use peercompute_p2p::{Framed, Node, NodeConfig, PeerId, control_protocol};
use peercompute_tunnel_proto::{
    ControlPlaneMessage, ErrorCode, ErrorResponse, MAX_VOLUME_DATA, ReplayGuard, Request,
    VolumeEnd, VolumeInfo, VolumeRemoved, VolumesResponse,
};
use sha2::{Digest, Sha256};

/// What the stand-in provider exports, and what it received by import.
#[derive(Default)]
struct Volumes {
    export: Vec<u8>,
    /// Answer exports with a wrong SHA-256 (a damaged transfer).
    lie: bool,
    imported: Vec<(String, Vec<u8>, Option<u64>, bool)>,
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A provider that answers volume requests from `state`.
async fn provider(state: Arc<Mutex<Volumes>>) -> (Node, String) {
    let identity = Identity::generate().expect("identity");
    let node = Node::start(
        &identity,
        NodeConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
            mdns: false,
            hole_punch_wait: Duration::ZERO,
            ..NodeConfig::default()
        },
    )
    .await
    .expect("provider node");
    let me = node.peer_id();
    let mut incoming = node.control().accept(control_protocol()).expect("accept");
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            let state = state.clone();
            tokio::spawn(async move {
                let mut framed = Framed::new(stream);
                if let Err(e) = answer(peer, me, &mut framed, &state).await {
                    let _ = framed.write(&ControlPlaneMessage::Error(e)).await;
                }
                framed.close().await;
            });
        }
    });
    let addr = node.listen_addrs().into_iter().next().expect("bound");
    (node, addr.to_string())
}

async fn answer(
    peer: PeerId,
    me: PeerId,
    framed: &mut Framed,
    state: &Mutex<Volumes>,
) -> Result<(), ErrorResponse> {
    let refuse = |message: String| ErrorResponse {
        code: ErrorCode::BadRequest,
        message,
    };
    let Ok(Some(ControlPlaneMessage::Signed(envelope))) = framed.read().await else {
        return Err(refuse("expected a signed request".into()));
    };
    let request = envelope
        .verify(&peer, &me, envelope.timestamp, &mut ReplayGuard::default())
        .map_err(|e| refuse(e.to_string()))?;
    match request {
        Request::Volumes(_) => {
            send(
                framed,
                ControlPlaneMessage::VolumesResponse(VolumesResponse {
                    volumes: vec![VolumeInfo {
                        volume: "blog/data".into(),
                        used_bytes: Some(5 << 20),
                        share_bytes: 1 << 30,
                        in_use_by: vec!["blog (running)".into()],
                        created_at: Some(1_700_000_000),
                    }],
                }),
            )
            .await
        }
        Request::VolumeRemove(r) if r.volume == "blog/data" => Err(ErrorResponse {
            code: ErrorCode::InUse,
            message: "volume blog/data is mounted by deployment a1b2 (running): stop it first"
                .into(),
        }),
        Request::VolumeRemove(r) => {
            send(
                framed,
                ControlPlaneMessage::VolumeRemoved(VolumeRemoved { volume: r.volume }),
            )
            .await
        }
        Request::VolumeExport(_) => {
            let (data, lie) = {
                let s = state.lock().expect("state");
                (s.export.clone(), s.lie)
            };
            for chunk in data.chunks(MAX_VOLUME_DATA) {
                send(
                    framed,
                    ControlPlaneMessage::VolumeData(chunk.to_vec().into()),
                )
                .await?;
            }
            let sha256 = if lie { "00".repeat(32) } else { sha(&data) };
            let end = VolumeEnd {
                bytes: data.len() as u64,
                sha256,
            };
            send(framed, ControlPlaneMessage::VolumeEnd(end)).await
        }
        // Refused before any data is read, while the client is still sending.
        Request::VolumeImport(r) if r.volume == "big/data" => Err(ErrorResponse {
            code: ErrorCode::LimitExceeded,
            message: "volumes: asked 1 GiB for big/data, 10 MiB available".into(),
        }),
        Request::VolumeImport(r) => {
            let mut got = Vec::new();
            let mut frames = 0;
            while (got.len() as u64) < r.size_bytes {
                match framed.read_import_data().await {
                    Ok(Some(data)) => {
                        assert!(data.len() <= MAX_VOLUME_DATA);
                        got.extend_from_slice(&data);
                        frames += 1;
                    }
                    other => return Err(refuse(format!("archive cut short: {other:?}"))),
                }
            }
            assert!(frames >= r.size_bytes.div_ceil(MAX_VOLUME_DATA as u64));
            if sha(&got) != r.sha256 || got.len() as u64 != r.size_bytes {
                return Err(refuse("the archive is not what the request signed".into()));
            }
            let end = VolumeEnd {
                bytes: got.len() as u64,
                sha256: sha(&got),
            };
            state
                .lock()
                .expect("state")
                .imported
                .push((r.volume, got, r.share_bytes, r.replace));
            send(framed, ControlPlaneMessage::VolumeEnd(end)).await
        }
        other => Err(refuse(format!(
            "{:?} is not served here",
            other.message_type()
        ))),
    }
}

async fn send(framed: &mut Framed, msg: ControlPlaneMessage) -> Result<(), ErrorResponse> {
    framed.write(&msg).await.map_err(|e| ErrorResponse {
        code: ErrorCode::Internal,
        message: e.to_string(),
    })
}

/// Runs peerctl off the async runtime's threads, `stdin` from a file when given.
async fn peerctl(home: &Path, args: &[&str], stdin: Option<&Path>) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_peerctl"));
    command
        .env_remove("PEERCOMPUTE_HOME")
        .arg("--home")
        .arg(home)
        .args(["--timeout", "5s", "--no-mdns"])
        .args(args);
    match stdin {
        Some(path) => command.stdin(std::fs::File::open(path).expect("stdin file")),
        None => command.stdin(Stdio::null()),
    };
    let run = tokio::task::spawn_blocking(move || command.output().expect("peerctl runs"));
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("peerctl ends within 60 s")
        .expect("joined")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A client home that trusts the provider at `addr`.
async fn client(home: &Path, provider: PeerId, addr: &str) {
    for args in [
        vec!["init"],
        vec![
            "peers",
            "add",
            &provider.to_string(),
            "--addr",
            addr,
            "--name",
            "box",
        ],
    ] {
        let out = peerctl(home, &args, None).await;
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
}

/// 300 000 bytes that are not all alike (five frames, the last one short).
fn archive() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_remove_export_and_import_speak_the_volume_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = Arc::new(Mutex::new(Volumes {
        export: archive(),
        ..Volumes::default()
    }));
    let (node, addr) = provider(state.clone()).await;
    let home = dir.path().join("client");
    client(&home, node.peer_id(), &addr).await;

    let out = peerctl(&home, &["volumes", "ls", "--peer", "box"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "VOLUME     USED     SHARE    MOUNTED BY\nblog/data  5.0 MiB  1.0 GiB  blog (running)\n"
    );
    let out = peerctl(&home, &["volumes", "ls", "--peer", "box", "--json"], None).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json[0]["volume"], "blog/data");
    assert_eq!(json[0]["share_bytes"], 1 << 30);

    // In use: the provider's refusal, exit 8, kind in_use.
    let out = peerctl(
        &home,
        &["volumes", "rm", "blog/data", "--peer", "box"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("stop it first"), "{}", stderr(&out));
    let out = peerctl(&home, &["volumes", "rm", "old/db", "--peer", "box"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("removed volume old/db"),
        "{}",
        stderr(&out)
    );

    // Export: the archive on stdout, `sha256 <hex> <bytes>` last on stderr.
    let out = peerctl(
        &home,
        &["volumes", "export", "blog/data", "--peer", "box"],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, archive());
    let last = stderr(&out).lines().last().unwrap_or_default().to_owned();
    assert_eq!(last, format!("sha256 {} 300000", sha(&archive())));
    let tar = dir.path().join("data.tar");
    std::fs::write(&tar, &out.stdout).expect("write");

    // Import from stdin (spooled, hashed, streamed), then from --file with a share.
    let out = peerctl(
        &home,
        &["volumes", "import", "blog/data", "--peer", "box"],
        Some(&tar),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("sha256 {} 300000\n", sha(&archive()))
    );
    let file = tar.to_str().expect("utf-8 path");
    let args = [
        "volumes",
        "import",
        "copy/data",
        "--peer",
        "box",
        "--file",
        file,
        "--share",
        "2G",
        "--replace",
        "--json",
    ];
    let out = peerctl(&home, &args, None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["bytes"], 300_000);
    {
        let s = state.lock().expect("state");
        assert_eq!(s.imported.len(), 2);
        assert_eq!(s.imported[0], ("blog/data".into(), archive(), None, false));
        assert_eq!(
            s.imported[1],
            ("copy/data".into(), archive(), Some(2 << 30), true)
        );
    }

    // Refused early: the provider's reason and exit code, not a broken stream.
    let args = [
        "volumes", "import", "big/data", "--peer", "box", "--file", file,
    ];
    let out = peerctl(&home, &args, None).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("10 MiB available"),
        "{}",
        stderr(&out)
    );

    // A damaged export (the provider's SHA-256 differs from the bytes): exit 1, said so.
    state.lock().expect("state").lie = true;
    let out = peerctl(
        &home,
        &["volumes", "export", "blog/data", "--peer", "box"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));

    // Refused before connecting: not APP/NAME (exit 8), an empty archive (exit 8).
    let out = peerctl(&home, &["volumes", "export", "blog", "--peer", "box"], None).await;
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    let empty = dir.path().join("empty.tar");
    std::fs::write(&empty, b"").expect("write");
    let out = peerctl(
        &home,
        &["volumes", "import", "blog/data", "--peer", "box"],
        Some(&empty),
    )
    .await;
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    assert_eq!(state.lock().expect("state").imported.len(), 2);
}
