//! Property tests of the control-plane codec and signed envelopes: round trips of every message
//! with arbitrary field values, decoding split at every byte, concatenated frames, oversized
//! and unknown prefixes refused from the prefix alone, arbitrary bytes never panicking (with
//! the fuzz target's checks), signatures over arbitrary requests verifying while any flipped
//! bit of a signed frame is refused. The fuzz target's seed corpus is generated and pinned in
//! `control_plane_corpus.rs`.

use std::collections::BTreeMap;

use bytes::BytesMut;
use ed25519_dalek::SigningKey;
use peercompute_tunnel_proto::{
    ControlPlaneDecodeError, ControlPlaneMessage, DeployProgress, DeployRequest, DeployResponse,
    DeployStage, DeploymentState, DeploymentSummary, EnvVar, ErrorCode, ErrorResponse, ListRequest,
    ListResponse, LogEntry, LogStream, LogsEnd, LogsRequest, MAX_CONTROL_PLANE_FRAME,
    MAX_VOLUME_DATA, MIN_VOLUME_SHARE, MessageType, NoUrl, Nonce, PeerId, ReplayGuard, Request,
    SignedEnvelope, StatusRequest, StatusResponse, StopRequest, StopResponse, VolumeEnd,
    VolumeExportRequest, VolumeImportRequest, VolumeInfo, VolumeMount, VolumeRemoveRequest,
    VolumeRemoved, VolumeUsage, VolumesRequest, VolumesResponse, decode_control_plane,
    decode_request, encode_control_plane, encode_request,
};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

#[path = "../fuzz/src/control_plane.rs"]
pub mod checks;

use checks::check_control_plane;

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

// ---------------------------------------------------------------------------------------------
// Strategies

fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

fn opt_text(max: usize) -> impl Strategy<Value = Option<String>> {
    of(text(max))
}

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}"
}

fn image() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,8}((__|[._]|-{1,3})[a-z0-9]{1,8}){0,2}",
        "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){1,3}:[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        "(localhost|[a-z]{1,8}\\.[a-z]{2,3})(:[1-9][0-9]{0,3})?/[a-z0-9]{1,8}(@sha256:[0-9a-f]{64})?",
    ]
}

fn env() -> impl Strategy<Value = Vec<EnvVar>> {
    let value = text(40).prop_map(|s| s.replace('\0', ""));
    vec(("[A-Za-z_][A-Za-z0-9_.]{0,15}", value), 0..8).prop_map(|pairs| {
        let unique: BTreeMap<String, String> = pairs.into_iter().collect();
        unique
            .into_iter()
            .map(|(key, value)| EnvVar { key, value })
            .collect()
    })
}

fn deploy_request() -> impl Strategy<Value = DeployRequest> {
    (
        image(),
        of("[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"),
        1..=u16::MAX,
        env(),
        of(1..=u32::MAX),
        of(1..=u64::MAX),
        attachments(),
    )
        .prop_map(
            |(image, name, port, env, cpu_millis, memory_bytes, (volumes, devices, exclusive))| {
                DeployRequest {
                    image,
                    name,
                    port,
                    env,
                    cpu_millis,
                    memory_bytes,
                    volume_exclusive: exclusive && !volumes.is_empty(),
                    volumes,
                    devices,
                }
            },
        )
}

/// Volumes (distinct names, distinct non-nested paths) and devices (distinct DNS labels) as
/// the rules allow them, none about half the time.
fn attachments() -> impl Strategy<Value = (Vec<VolumeMount>, Vec<String>, bool)> {
    let volumes = vec(
        (of(MIN_VOLUME_SHARE..=u64::MAX), "[a-z0-9_.-]{1,20}"),
        0..=8,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (size_bytes, dir))| VolumeMount {
                name: format!("v{i}-x"),
                path: format!("/srv{i}/{}", dir.replace('.', "d")),
                size_bytes,
            })
            .collect::<Vec<_>>()
    });
    let devices = proptest::collection::btree_set("[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", 0..=8)
        .prop_map(|d| d.into_iter().collect::<Vec<_>>());
    (
        prop_oneof![Just(Vec::new()), volumes],
        prop_oneof![Just(Vec::new()), devices],
        any::<bool>(),
    )
}

fn volume_ref() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?/[a-z0-9][a-z0-9-]{0,31}"
}

fn sha256() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}"
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        deploy_request().prop_map(Request::Deploy),
        id().prop_map(|id| Request::Stop(StopRequest { id })),
        id().prop_map(|id| Request::Status(StatusRequest { id })),
        Just(Request::List(ListRequest {})),
        (id(), any::<bool>(), of(0..=100_000u32))
            .prop_map(|(id, follow, tail)| Request::Logs(LogsRequest { id, follow, tail })),
        Just(Request::Volumes(VolumesRequest {})),
        volume_ref().prop_map(|volume| Request::VolumeRemove(VolumeRemoveRequest { volume })),
        volume_ref().prop_map(|volume| Request::VolumeExport(VolumeExportRequest { volume })),
        (
            volume_ref(),
            1..=u64::MAX,
            sha256(),
            of(MIN_VOLUME_SHARE..=u64::MAX),
            any::<bool>()
        )
            .prop_map(|(volume, size_bytes, sha256, share_bytes, replace)| {
                Request::VolumeImport(VolumeImportRequest {
                    volume,
                    size_bytes,
                    sha256,
                    share_bytes,
                    replace,
                })
            }),
    ]
}

fn no_url() -> impl Strategy<Value = NoUrl> {
    prop_oneof![
        Just(NoUrl::NoGateway),
        Just(NoUrl::Pending),
        Just(NoUrl::TunnelStopped),
    ]
}

fn state() -> impl Strategy<Value = DeploymentState> {
    prop_oneof![
        Just(DeploymentState::Created),
        Just(DeploymentState::Running),
        Just(DeploymentState::Paused),
        Just(DeploymentState::Restarting),
        Just(DeploymentState::Removing),
        Just(DeploymentState::Exited),
        Just(DeploymentState::Dead),
        Just(DeploymentState::Unknown),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::NotTrusted),
        Just(ErrorCode::BadSignature),
        Just(ErrorCode::Replayed),
        Just(ErrorCode::Stale),
        Just(ErrorCode::BadRequest),
        Just(ErrorCode::LimitExceeded),
        Just(ErrorCode::NotFound),
        Just(ErrorCode::ImageNotFound),
        Just(ErrorCode::ImagePlatform),
        Just(ErrorCode::Runtime),
        Just(ErrorCode::Internal),
        Just(ErrorCode::NotGranted),
        Just(ErrorCode::InUse),
        Just(ErrorCode::Unknown),
    ]
}

fn stage() -> impl Strategy<Value = DeployStage> {
    prop_oneof![
        Just(DeployStage::Pulling),
        Just(DeployStage::Starting),
        Just(DeployStage::Waiting),
        Just(DeployStage::Registering),
    ]
}

fn finite() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite", |f| f.is_finite())
}

fn envelope() -> impl Strategy<Value = SignedEnvelope> {
    (
        prop_oneof![Just(peer(&key(1))), Just(peer(&key(2)))],
        any::<[u8; 16]>(),
        any::<u64>(),
        vec(any::<u8>(), 0..300),
        vec(any::<u8>(), 64),
    )
        .prop_map(
            |(provider, nonce, timestamp, payload, signature)| SignedEnvelope {
                provider,
                nonce: Nonce::from_bytes(nonce),
                timestamp,
                payload,
                signature: signature.try_into().expect("64 bytes"),
            },
        )
}

fn status() -> impl Strategy<Value = StatusResponse> {
    let times = (
        any::<u64>(),
        of(any::<u64>()),
        of(any::<u64>()),
        any::<u32>(),
    );
    let usage = (of(finite()), of(any::<u64>()), of(any::<u64>()));
    let extra = (
        vec(usage_of_volume(), 0..3),
        vec(text(10), 0..3),
        opt_text(60),
    );
    (
        id(),
        text(20),
        text(30),
        text(30),
        state(),
        times,
        (usage, extra),
    )
        .prop_map(
            |(id, name, image, url, state, times, (usage, extra))| StatusResponse {
                id,
                name,
                image,
                url,
                state,
                created_at: times.0,
                started_at: times.1,
                uptime_secs: times.2,
                restarts: times.3,
                cpu_percent: usage.0,
                memory_bytes: usage.1,
                memory_limit: usage.2,
                volumes: extra.0,
                devices: extra.1,
                stopped_reason: extra.2,
            },
        )
}

fn usage_of_volume() -> impl Strategy<Value = VolumeUsage> {
    (text(20), of(any::<u64>()), any::<u64>()).prop_map(|(volume, used_bytes, share_bytes)| {
        VolumeUsage {
            volume,
            used_bytes,
            share_bytes,
        }
    })
}

fn summary() -> impl Strategy<Value = DeploymentSummary> {
    (
        id(),
        text(20),
        text(30),
        text(30),
        state(),
        any::<u64>(),
        opt_text(40),
    )
        .prop_map(
            |(id, name, image, url, state, created_at, stopped_reason)| DeploymentSummary {
                id,
                name,
                image,
                url,
                state,
                created_at,
                stopped_reason,
            },
        )
}

fn volume_info() -> impl Strategy<Value = VolumeInfo> {
    (
        text(20),
        of(any::<u64>()),
        any::<u64>(),
        vec(text(20), 0..3),
        of(any::<u64>()),
    )
        .prop_map(
            |(volume, used_bytes, share_bytes, in_use_by, created_at)| VolumeInfo {
                volume,
                used_bytes,
                share_bytes,
                in_use_by,
                created_at,
            },
        )
}

fn message() -> impl Strategy<Value = ControlPlaneMessage> {
    prop_oneof![
        envelope().prop_map(ControlPlaneMessage::Signed),
        (
            stage(),
            text(40),
            opt_text(20),
            of(any::<u64>()),
            of(any::<u64>())
        )
            .prop_map(|(stage, message, layer, current, total)| {
                ControlPlaneMessage::DeployProgress(DeployProgress {
                    stage,
                    message,
                    layer,
                    current,
                    total,
                })
            }),
        (
            id(),
            text(20),
            of(text(30)),
            text(30),
            text(30),
            state(),
            of(no_url())
        )
            .prop_map(|(id, name, url, peer, image, status, no_url)| {
                ControlPlaneMessage::DeployResponse(DeployResponse {
                    id,
                    name,
                    url,
                    peer,
                    image,
                    status,
                    no_url,
                })
            }),
        (id(), any::<bool>()).prop_map(|(id, removed)| ControlPlaneMessage::StopResponse(
            StopResponse { id, removed }
        )),
        status().prop_map(ControlPlaneMessage::StatusResponse),
        vec(summary(), 0..4).prop_map(|deployments| ControlPlaneMessage::ListResponse(
            ListResponse { deployments }
        )),
        (
            prop_oneof![Just(LogStream::Stdout), Just(LogStream::Stderr)],
            text(80),
            opt_text(30)
        )
            .prop_map(|(stream, line, timestamp)| ControlPlaneMessage::LogEntry(
                LogEntry {
                    stream,
                    line,
                    timestamp
                }
            )),
        Just(ControlPlaneMessage::LogsEnd(LogsEnd {})),
        vec(volume_info(), 0..4)
            .prop_map(|volumes| ControlPlaneMessage::VolumesResponse(VolumesResponse { volumes })),
        text(30).prop_map(|volume| ControlPlaneMessage::VolumeRemoved(VolumeRemoved { volume })),
        vec(any::<u8>(), 0..600).prop_map(|b| ControlPlaneMessage::VolumeData(b.into())),
        (any::<u64>(), text(70)).prop_map(|(bytes, sha256)| ControlPlaneMessage::VolumeEnd(
            VolumeEnd { bytes, sha256 }
        )),
        (error_code(), text(60)).prop_map(|(code, message)| ControlPlaneMessage::Error(
            ErrorResponse { code, message }
        )),
    ]
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn encode(msg: &ControlPlaneMessage) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_control_plane(msg, &mut buf).expect("generated messages fit a frame");
    buf.to_vec()
}

fn encode_req(req: &Request) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_request(req, &mut buf).expect("generated requests are valid");
    buf.to_vec()
}

type Decoder<T> = fn(&mut BytesMut) -> Result<Option<T>, ControlPlaneDecodeError>;

/// Every strict prefix asks for more without consuming; the rest completes the frame.
fn assert_split_everywhere<T>(
    decode: Decoder<T>,
    bytes: &[u8],
    expected: &T,
) -> Result<(), TestCaseError>
where
    T: PartialEq + std::fmt::Debug + Clone,
{
    for at in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..at]);
        prop_assert_eq!(decode(&mut buf), Ok(None), "prefix of {} bytes", at);
        prop_assert_eq!(&buf[..], &bytes[..at], "Ok(None) consumed bytes");
        buf.extend_from_slice(&bytes[at..]);
        prop_assert_eq!(
            decode(&mut buf),
            Ok(Some(expected.clone())),
            "split at {}",
            at
        );
        prop_assert!(buf.is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn messages_round_trip(msg in message()) {
        let bytes = encode(&msg);
        let mut buf = BytesMut::from(&bytes[..]);
        prop_assert_eq!(decode_control_plane(&mut buf), Ok(Some(msg)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn requests_round_trip(req in request()) {
        let bytes = encode_req(&req);
        prop_assert_eq!(bytes[0], req.message_type().to_u8());
        let mut buf = BytesMut::from(&bytes[..]);
        prop_assert_eq!(decode_request(&mut buf), Ok(Some(req)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn messages_split_at_every_byte(msg in message()) {
        assert_split_everywhere(decode_control_plane, &encode(&msg), &msg)?;
    }

    #[test]
    fn requests_split_at_every_byte(req in request()) {
        assert_split_everywhere(decode_request, &encode_req(&req), &req)?;
    }

    #[test]
    fn concatenated_frames_decode_in_order(msgs in vec(message(), 1..5), cut in any::<prop::sample::Index>()) {
        let mut bytes = Vec::new();
        for msg in &msgs {
            bytes.extend_from_slice(&encode(msg));
        }
        let last = encode(&msgs[0]);
        let partial = &last[..cut.index(last.len())];
        bytes.extend_from_slice(partial);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut got = Vec::new();
        while let Some(msg) = decode_control_plane(&mut buf).expect("valid frames") {
            got.push(msg);
        }
        prop_assert_eq!(got, msgs);
        prop_assert_eq!(&buf[..], partial);
    }

    #[test]
    fn oversized_lengths_are_refused_from_the_prefix(
        ty in prop::sample::select(MessageType::ALL.to_vec()),
        len in (MAX_CONTROL_PLANE_FRAME as u32 + 1)..=u32::MAX,
    ) {
        let prefix = [&[ty.to_u8()][..], &len.to_be_bytes()].concat();
        let max = if ty == MessageType::VolumeData { MAX_VOLUME_DATA } else { MAX_CONTROL_PLANE_FRAME };
        let too_large = ControlPlaneDecodeError::TooLarge {
            len: len as usize,
            max,
        };
        let decoder: Decoder<()> = if ty.is_request() {
            |b| decode_request(b).map(|r| r.map(drop))
        } else {
            |b| decode_control_plane(b).map(|m| m.map(drop))
        };
        prop_assert_eq!(decoder(&mut BytesMut::from(&prefix[..])), Err(too_large));
    }

    #[test]
    fn unknown_types_are_refused_on_the_first_byte(byte in any::<u8>(), rest in vec(any::<u8>(), 0..8)) {
        prop_assume!(MessageType::from_u8(byte).is_none());
        let bytes = [&[byte][..], &rest].concat();
        let unknown = Some(ControlPlaneDecodeError::UnknownType(byte));
        prop_assert_eq!(decode_control_plane(&mut BytesMut::from(&bytes[..])).err(), unknown.clone());
        prop_assert_eq!(decode_request(&mut BytesMut::from(&bytes[..])).err(), unknown);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        check_control_plane(&bytes);
    }

    #[test]
    fn json_bodies_of_any_type_never_panic(ty in any::<u8>(), json in text(200)) {
        let mut bytes = vec![ty];
        bytes.extend_from_slice(&(json.len() as u32).to_be_bytes());
        bytes.extend_from_slice(json.as_bytes());
        check_control_plane(&bytes);
    }

    #[test]
    fn signed_requests_verify_and_every_flipped_bit_is_refused(
        req in request(),
        nonce in any::<[u8; 16]>(),
        skew in -300i64..=300,
        bit in any::<prop::sample::Index>(),
    ) {
        let (client, provider) = (key(1), peer(&key(2)));
        let env = SignedEnvelope::sign(&client, provider, &req, Nonce::from_bytes(nonce), NOW)
            .expect("sign");
        let now = NOW.saturating_add_signed(skew);
        let verified = env.verify(&peer(&client), &provider, now, &mut ReplayGuard::default());
        prop_assert_eq!(verified, Ok(req));

        let frame = encode(&ControlPlaneMessage::Signed(env));
        let bit = bit.index(frame.len() * 8);
        let mut flipped = frame.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let accepted = match decode_control_plane(&mut BytesMut::from(&flipped[..])) {
            Ok(Some(ControlPlaneMessage::Signed(env))) => env
                .verify(&peer(&client), &provider, now, &mut ReplayGuard::default())
                .is_ok(),
            _ => false,
        };
        prop_assert!(!accepted, "flipping bit {} still verified", bit);
    }
}
