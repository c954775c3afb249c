//! The seed corpus of the `control_plane_frame` fuzz target: generated here, compared with
//! the files of `fuzz/corpus/control_plane_frame/`, and each seed's outcome pinned (what both
//! decoders make of it, and whether its signed envelope verifies), so a seed cannot silently
//! stop testing what its name says. `PEERCOMPUTE_WRITE_SEEDS=1 cargo test -p
//! peercompute-tunnel-proto --test control_plane_corpus` rewrites the files. Every corpus file
//! (seeds and anything the fuzzer adds) is also replayed by `fuzz_corpus.rs`.

use bytes::{BufMut, BytesMut};
use ed25519_dalek::SigningKey;
use peercompute_tunnel_proto::{
    ControlPlaneMessage, DeployProgress, DeployRequest, DeployResponse, DeployStage,
    DeploymentState, DeploymentSummary, EnvVar, ErrorCode, ErrorResponse, ListRequest,
    ListResponse, LogEntry, LogStream, LogsEnd, LogsRequest, MAX_CONTROL_PLANE_FRAME, Nonce,
    PeerId, Request, SignedEnvelope, StatusResponse, StopRequest, StopResponse, VolumeEnd,
    VolumeImportRequest, VolumeInfo, VolumeMount, VolumeUsage, VolumesRequest, VolumesResponse,
    encode_control_plane, encode_request, signing_message,
};

#[path = "../fuzz/src/control_plane.rs"]
pub mod checks;

use checks::{CLIENT_ID, PlaneEnd, PlaneReport, check_control_plane, check_import_data};

const NOW: u64 = 1_700_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn peer(key: &SigningKey) -> PeerId {
    let public =
        libp2p_identity::ed25519::PublicKey::try_from_bytes(&key.verifying_key().to_bytes())
            .expect("a dalek key is a libp2p key");
    libp2p_identity::PublicKey::from(public).to_peer_id()
}

fn encode(msg: &ControlPlaneMessage) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_control_plane(msg, &mut buf).expect("seed messages fit a frame");
    buf.to_vec()
}

fn encode_req(req: &Request) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_request(req, &mut buf).expect("seed requests are valid");
    buf.to_vec()
}

fn frame(ty: u8, json: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(ty);
    b.put_u32(json.len() as u32);
    b.put_slice(json.as_bytes());
    b.to_vec()
}

fn signed(req: &Request, nonce: u8) -> SignedEnvelope {
    SignedEnvelope::sign(
        &key(1),
        peer(&key(2)),
        req,
        Nonce::from_bytes([nonce; 16]),
        NOW,
    )
    .expect("sign")
}

fn signed_raw(payload: Vec<u8>) -> SignedEnvelope {
    let (provider, nonce) = (peer(&key(2)), Nonce::from_bytes([7; 16]));
    let message = signing_message(&provider, &nonce, NOW, &payload);
    let signature = ed25519_dalek::Signer::sign(&key(1), &message).to_bytes();
    SignedEnvelope {
        provider,
        nonce,
        timestamp: NOW,
        payload,
        signature,
    }
}

fn msg(m: ControlPlaneMessage) -> Vec<u8> {
    encode(&m)
}

/// A list answer with one exited deployment, stopped by the provider for `reason`.
fn list(reason: Option<&str>) -> Vec<u8> {
    msg(ControlPlaneMessage::ListResponse(ListResponse {
        deployments: vec![DeploymentSummary {
            id: "d-1".into(),
            name: "blog".into(),
            image: "nginx".into(),
            url: "https://blog.apps.example.com".into(),
            state: DeploymentState::Exited,
            created_at: NOW,
            stopped_reason: reason.map(str::to_owned),
        }],
    }))
}

/// (name, bytes, stream decoder report, request decoder report)
fn seeds() -> Vec<(&'static str, Vec<u8>, PlaneReport, PlaneReport)> {
    let r = |decoded, verified, end| PlaneReport {
        decoded,
        verified,
        end,
    };
    let need = PlaneEnd::NeedMore;
    let no = PlaneEnd::Refused;
    let mut deploy = DeployRequest::new("registry.example.com:5000/team/app:v1", 8080);
    deploy.name = Some("blog".into());
    deploy.env = vec![EnvVar {
        key: "GREETING".into(),
        value: "hello\nworld".into(),
    }];
    deploy.cpu_millis = Some(500);
    deploy.memory_bytes = Some(256 << 20);
    let deploy = Request::Deploy(deploy);
    let logs = Request::Logs(LogsRequest {
        id: "blog".into(),
        follow: true,
        tail: Some(10),
    });
    let privileged = frame(0x10, r#"{"image":"nginx","port":80,"privileged":true}"#);
    let mut bad_sig = signed(&deploy, 2);
    bad_sig.signature[0] ^= 1;
    let log = ControlPlaneMessage::LogEntry(LogEntry {
        stream: LogStream::Stdout,
        line: "GET / 200".into(),
        timestamp: Some("2026-11-21T15:00:00Z".into()),
    });
    let three = [
        msg(log.clone()),
        msg(log),
        msg(ControlPlaneMessage::LogsEnd(LogsEnd {})),
    ]
    .concat();
    let partial = [
        msg(ControlPlaneMessage::LogsEnd(LogsEnd {})),
        vec![0x25, 0, 0],
    ]
    .concat();
    let over = (MAX_CONTROL_PLANE_FRAME as u32 + 1).to_be_bytes();
    let status = ControlPlaneMessage::StatusResponse(StatusResponse {
        id: "d-1".into(),
        name: "blog".into(),
        image: "nginx:1.27".into(),
        url: "https://blog.apps.example.com".into(),
        state: DeploymentState::Running,
        created_at: NOW,
        started_at: Some(NOW + 1),
        uptime_secs: Some(60),
        restarts: 0,
        cpu_percent: Some(1.25),
        memory_bytes: Some(12 << 20),
        memory_limit: Some(256 << 20),
        volumes: Vec::new(),
        devices: Vec::new(),
        stopped_reason: None,
    });
    let ControlPlaneMessage::StatusResponse(plain) = &status else {
        unreachable!("built just above")
    };
    let status_volumes = ControlPlaneMessage::StatusResponse(StatusResponse {
        state: DeploymentState::Exited,
        volumes: vec![VolumeUsage {
            volume: "blog/data".into(),
            used_bytes: Some(5 << 20),
            share_bytes: 1 << 30,
        }],
        devices: vec!["arm".into()],
        stopped_reason: Some(
            "stopped by the provider: volume blog/data uses 2.3 GiB, over its 2 GiB share".into(),
        ),
        ..plain.clone()
    });
    let mut with_volumes = DeployRequest::new("ghcr.io/acme/notes:1.4", 8080);
    with_volumes.name = Some("notes".into());
    with_volumes.volumes = vec![VolumeMount {
        name: "data".into(),
        path: "/var/lib/notes".into(),
        size_bytes: Some(2 << 30),
    }];
    with_volumes.devices = vec!["arm".into()];
    let import = Request::VolumeImport(VolumeImportRequest {
        volume: "blog/data".into(),
        size_bytes: 10240,
        sha256: "5f".repeat(32),
        share_bytes: Some(2 << 30),
        replace: false,
    });
    let volume_data = msg(ControlPlaneMessage::VolumeData(bytes::Bytes::from_static(
        b"data/log\0\0\0",
    )));
    vec![
        (
            "signed-deploy",
            msg(ControlPlaneMessage::Signed(signed(&deploy, 1))),
            r(1, 1, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "signed-stop",
            msg(ControlPlaneMessage::Signed(signed(
                &Request::Stop(StopRequest { id: "blog".into() }),
                3,
            ))),
            r(1, 1, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "signed-list",
            msg(ControlPlaneMessage::Signed(signed(
                &Request::List(ListRequest {}),
                4,
            ))),
            r(1, 1, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "signed-logs",
            msg(ControlPlaneMessage::Signed(signed(&logs, 5))),
            r(1, 1, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "signed-bad-signature",
            msg(ControlPlaneMessage::Signed(bad_sig)),
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "signed-privileged",
            msg(ControlPlaneMessage::Signed(signed_raw(privileged.clone()))),
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "deploy-request",
            encode_req(&deploy),
            r(0, 0, no("unsigned_request")),
            r(1, 0, need(0)),
        ),
        (
            "deploy-minimal",
            frame(0x10, r#"{"image":"nginx","port":80}"#),
            r(0, 0, no("unsigned_request")),
            r(1, 0, need(0)),
        ),
        (
            "deploy-privileged",
            privileged,
            r(0, 0, no("unsigned_request")),
            r(0, 0, no("json")),
        ),
        (
            "deploy-binds",
            frame(
                0x10,
                r#"{"image":"nginx","port":80,"binds":["/var/run/docker.sock:/s"]}"#,
            ),
            r(0, 0, no("unsigned_request")),
            r(0, 0, no("json")),
        ),
        (
            "deploy-network-host",
            frame(0x10, r#"{"image":"nginx","port":80,"network_mode":"host"}"#),
            r(0, 0, no("unsigned_request")),
            r(0, 0, no("json")),
        ),
        (
            "deploy-workdir",
            frame(
                0x10,
                r#"{"image":"nginx","port":80,"working_dir":"/proc/self/fd/3"}"#,
            ),
            r(0, 0, no("unsigned_request")),
            r(0, 0, no("json")),
        ),
        (
            "deploy-bad-env",
            frame(
                0x10,
                r#"{"image":"nginx","port":80,"env":[{"key":"A=B","value":""}]}"#,
            ),
            r(0, 0, no("unsigned_request")),
            r(0, 0, no("invalid")),
        ),
        (
            "deploy-port-zero",
            frame(0x10, r#"{"image":"nginx","port":0}"#),
            r(0, 0, no("unsigned_request")),
            r(0, 0, no("invalid")),
        ),
        (
            "deploy-duplicate-field",
            frame(0x10, r#"{"image":"nginx","port":80,"port":81}"#),
            r(0, 0, no("unsigned_request")),
            r(0, 0, no("json")),
        ),
        (
            "deploy-volumes",
            encode_req(&Request::Deploy(with_volumes.clone())),
            r(0, 0, no("unsigned_request")),
            r(1, 0, need(0)),
        ),
        (
            "signed-deploy-volumes",
            msg(ControlPlaneMessage::Signed(signed(
                &Request::Deploy(with_volumes),
                8,
            ))),
            r(1, 1, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "deploy-volume-dotdot",
            frame(
                0x10,
                r#"{"image":"nginx","port":80,"volumes":[{"name":"..","path":"/data"}]}"#,
            ),
            r(0, 0, no("unsigned_request")),
            r(0, 0, no("invalid")),
        ),
        (
            "deploy-volume-docker-sock",
            frame(
                0x10,
                r#"{"image":"nginx","port":80,"volumes":[{"name":"docker.sock","path":"/var/run/docker.sock"}]}"#,
            ),
            r(0, 0, no("unsigned_request")),
            r(0, 0, no("invalid")),
        ),
        (
            "deploy-volume-bind",
            frame(
                0x10,
                r#"{"image":"nginx","port":80,"volumes":[{"name":"x","path":"/x","type":"bind","source":"/"}]}"#,
            ),
            r(0, 0, no("unsigned_request")),
            r(0, 0, no("json")),
        ),
        (
            "deploy-device-path",
            frame(
                0x10,
                r#"{"image":"nginx","port":80,"devices":["/dev/kvm"]}"#,
            ),
            r(0, 0, no("unsigned_request")),
            r(0, 0, no("invalid")),
        ),
        (
            "volume-import-request",
            encode_req(&import),
            r(0, 0, no("unsigned_request")),
            r(1, 0, need(0)),
        ),
        (
            "signed-volume-import",
            [
                msg(ControlPlaneMessage::Signed(signed(&import, 9))),
                volume_data.clone(),
            ]
            .concat(),
            r(2, 1, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "signed-volumes",
            msg(ControlPlaneMessage::Signed(signed(
                &Request::Volumes(VolumesRequest {}),
                10,
            ))),
            r(1, 1, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            // A client reads it as an export's bytes; a provider refuses it as a first message
            // (not signed), and the request decoder refuses it outright.
            "volume-data-bare",
            volume_data,
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "volume-data-oversized",
            vec![0x29, 0, 1, 0, 1],
            r(0, 0, no("too_large")),
            r(0, 0, no("not_a_request")),
        ),
        (
            "status-response-volumes",
            msg(status_volumes),
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "list-response-stopped",
            list(Some(
                "stopped by the provider: volume blog/data is over its share",
            )),
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "volume-data-empty",
            vec![0x29, 0, 0, 0, 0],
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "volumes-response",
            msg(ControlPlaneMessage::VolumesResponse(VolumesResponse {
                volumes: vec![VolumeInfo {
                    volume: "blog/data".into(),
                    used_bytes: Some(5 << 20),
                    share_bytes: 1 << 30,
                    in_use_by: vec!["blog (running)".into()],
                    created_at: Some(NOW),
                }],
            })),
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "volume-end",
            msg(ControlPlaneMessage::VolumeEnd(VolumeEnd {
                bytes: 10240,
                sha256: "5f".repeat(32),
            })),
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "logs-request",
            encode_req(&logs),
            r(0, 0, no("unsigned_request")),
            r(1, 0, need(0)),
        ),
        (
            "progress",
            msg(ControlPlaneMessage::DeployProgress(DeployProgress {
                stage: DeployStage::Pulling,
                message: "pulling".into(),
                layer: Some("sha256:ab".into()),
                current: Some(1),
                total: Some(2),
            })),
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "deploy-response",
            msg(ControlPlaneMessage::DeployResponse(DeployResponse {
                id: "d-1".into(),
                name: "blog".into(),
                url: Some("https://blog.apps.example.com".into()),
                peer: peer(&key(2)).to_string(),
                image: "nginx:1.27".into(),
                status: DeploymentState::Running,
                no_url: None,
            })),
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "stop-response",
            msg(ControlPlaneMessage::StopResponse(StopResponse {
                id: "d-1".into(),
                removed: true,
            })),
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "status-response",
            msg(status),
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "list-response",
            list(None),
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "error",
            msg(ControlPlaneMessage::Error(ErrorResponse {
                code: ErrorCode::NotTrusted,
                message: "add this client with `peerctl peers add`".into(),
            })),
            r(1, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "three-frames",
            three,
            r(3, 0, need(0)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "frame-then-partial",
            partial,
            r(1, 0, need(3)),
            r(0, 0, no("not_a_request")),
        ),
        ("empty", Vec::new(), r(0, 0, need(0)), r(0, 0, need(0))),
        (
            "prefix-only",
            vec![0x01, 0, 0, 0, 9],
            r(0, 0, need(5)),
            r(0, 0, no("not_a_request")),
        ),
        (
            "oversized-prefix",
            vec![0x01, 0xff, 0xff, 0xff, 0xff],
            r(0, 0, no("too_large")),
            r(0, 0, no("not_a_request")),
        ),
        (
            "just-over-max",
            [&[0x10][..], &over].concat(),
            r(0, 0, no("unsigned_request")),
            r(0, 0, no("too_large")),
        ),
        (
            "unknown-type",
            vec![0x7f, 0, 0, 0, 2, b'{', b'}'],
            r(0, 0, no("unknown_type")),
            r(0, 0, no("unknown_type")),
        ),
        (
            "json-not-object",
            frame(0x26, "\"x\""),
            r(0, 0, no("json")),
            r(0, 0, no("not_a_request")),
        ),
        (
            "json-trailing-garbage",
            frame(0x26, "{}}"),
            r(0, 0, no("json")),
            r(0, 0, no("not_a_request")),
        ),
        (
            "envelope-unknown-field",
            frame(0x01, r#"{"provider":"x","extra":1}"#),
            r(0, 0, no("json")),
            r(0, 0, no("not_a_request")),
        ),
    ]
}

/// What the import decoder (a provider reading an archive after a signed import request)
/// makes of some seeds: only `VolumeData` frames pass.
#[test]
fn import_decoder_accepts_only_volume_data() {
    let r = |decoded, end| PlaneReport {
        decoded,
        verified: 0,
        end,
    };
    let pinned = [
        ("volume-data-bare", r(1, PlaneEnd::NeedMore(0))),
        (
            "volume-data-oversized",
            r(0, PlaneEnd::Refused("too_large")),
        ),
        (
            "signed-volume-import",
            r(0, PlaneEnd::Refused("not_volume_data")),
        ),
        ("volume-end", r(0, PlaneEnd::Refused("not_volume_data"))),
        (
            "volume-data-empty",
            r(0, PlaneEnd::Refused("empty_volume_data")),
        ),
        (
            "volume-import-request",
            r(0, PlaneEnd::Refused("not_volume_data")),
        ),
        ("unknown-type", r(0, PlaneEnd::Refused("unknown_type"))),
        ("empty", r(0, PlaneEnd::NeedMore(0))),
    ];
    let seeds = seeds();
    for (name, report) in pinned {
        let (_, bytes, _, _) = seeds
            .iter()
            .find(|(n, ..)| *n == name)
            .unwrap_or_else(|| panic!("no seed {name}"));
        assert_eq!(check_import_data(bytes), report, "seed {name}");
    }
}

#[test]
fn client_id_is_the_seed_signer() {
    assert_eq!(CLIENT_ID, peer(&key(1)).to_string());
}

#[test]
fn seed_corpus_is_current_and_pinned() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/control_plane_frame");
    let write = std::env::var_os("PEERCOMPUTE_WRITE_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).expect("create corpus dir");
    }
    for (name, bytes, stream, requests) in seeds() {
        let path = dir.join(name);
        if write {
            std::fs::write(&path, &bytes).expect("write seed");
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (PEERCOMPUTE_WRITE_SEEDS=1 writes it)",
                path.display()
            )
        });
        assert_eq!(on_disk, bytes, "seed {name} differs from the generated one");
        assert_eq!(
            check_control_plane(&bytes),
            (stream, requests),
            "seed {name}"
        );
    }
}
