//! Tests of signed requests: what verifies, and every way of altering, re-targeting, replaying
//! or forging a request that must not.

use bytes::{BufMut, BytesMut};
use ed25519_dalek::Verifier as _;

use super::*;
use crate::control_plane::{DEFAULT_MAX_SKEW_SECS, DeployRequest, EnvVar, StopRequest};

const NOW: u64 = 1_700_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn peer_of_public(public: [u8; 32]) -> PeerId {
    let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(&public)
        .expect("the test key decompresses");
    libp2p_identity::PublicKey::from(key).to_peer_id()
}

fn peer(key: &SigningKey) -> PeerId {
    peer_of_public(key.verifying_key().to_bytes())
}

fn deploy() -> Request {
    let mut req = DeployRequest::new("nginx:1.27", 80);
    req.name = Some("blog".into());
    req.env = vec![EnvVar {
        key: "TOKEN".into(),
        value: "hunter2".into(),
    }];
    Request::Deploy(req)
}

struct Setup {
    client: SigningKey,
    provider: PeerId,
    env: SignedEnvelope,
}

fn setup() -> Setup {
    let client = key(1);
    let provider = peer(&key(2));
    let env = SignedEnvelope::sign(
        &client,
        provider,
        &deploy(),
        Nonce::from_bytes([9; 16]),
        NOW,
    )
    .expect("sign");
    Setup {
        client,
        provider,
        env,
    }
}

fn verify(s: &Setup, env: &SignedEnvelope) -> Result<Request, VerifyError> {
    env.verify(
        &peer(&s.client),
        &s.provider,
        NOW,
        &mut ReplayGuard::default(),
    )
}

#[test]
fn valid_request_is_accepted() {
    let s = setup();
    assert_eq!(verify(&s, &s.env), Ok(deploy()));
    assert_eq!(s.env.payload_type(), Some(MessageType::DeployRequest));
}

#[test]
fn tampered_fields_are_refused() {
    let s = setup();
    let signer = peer(&s.client);
    let mut cases: Vec<(&str, SignedEnvelope)> = Vec::new();
    let mut e = s.env.clone();
    let at = e.payload.len() - 3; // inside the JSON: `…}]` → still decodes if unsigned
    e.payload[at] ^= 0x01;
    cases.push(("payload byte", e));
    let mut e = s.env.clone();
    e.payload.push(b' ');
    cases.push(("payload extended", e));
    let mut e = s.env.clone();
    e.nonce = Nonce::from_bytes([8; 16]);
    cases.push(("nonce", e));
    let mut e = s.env.clone();
    e.timestamp += 1;
    cases.push(("timestamp", e));
    let mut e = s.env.clone();
    e.signature[10] ^= 0x40;
    cases.push(("signature", e));
    for (what, env) in cases {
        assert_eq!(
            verify(&s, &env),
            Err(VerifyError::BadSignature(signer)),
            "tampered {what}"
        );
    }
}

#[test]
fn retargeted_request_is_refused() {
    let s = setup();
    let other = peer(&key(3));
    // Sent as is to another provider: not addressed to it.
    let err = s
        .env
        .verify(&peer(&s.client), &other, NOW, &mut ReplayGuard::default())
        .expect_err("other provider");
    assert!(matches!(err, VerifyError::WrongProvider { .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::BadRequest);
    // Re-addressed to the other provider: the signature no longer holds.
    let mut e = s.env.clone();
    e.provider = other;
    let err = e
        .verify(&peer(&s.client), &other, NOW, &mut ReplayGuard::default())
        .expect_err("re-addressed");
    assert_eq!(err, VerifyError::BadSignature(peer(&s.client)));
}

#[test]
fn wrong_key_is_refused() {
    let s = setup();
    let impostor = peer(&key(4));
    let err = s
        .env
        .verify(&impostor, &s.provider, NOW, &mut ReplayGuard::default())
        .expect_err("wrong key");
    assert_eq!(err, VerifyError::BadSignature(impostor));
    assert_eq!(err.code(), ErrorCode::BadSignature);
}

#[test]
fn signer_without_ed25519_key_is_refused() {
    let s = setup();
    let mut sha256_id = vec![0x12, 0x20];
    sha256_id.extend_from_slice(&[7; 32]);
    let hashed = PeerId::from_bytes(&sha256_id).expect("sha256 multihash peer id");
    let garbage = PeerId::from_bytes(&[0x00, 0x04, 1, 2, 3, 4]).expect("identity multihash");
    for signer in [hashed, garbage] {
        let err = s
            .env
            .verify(&signer, &s.provider, NOW, &mut ReplayGuard::default())
            .expect_err("no key");
        assert_eq!(err, VerifyError::NotEd25519(signer));
    }
}

/// The group order L of Ed25519, little endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

#[test]
fn non_canonical_s_is_refused() {
    let s = setup();
    // s + L is the same scalar mod L: a malleated signature a lax verifier accepts.
    let mut e = s.env.clone();
    let mut carry = 0u16;
    for (i, l) in L.iter().enumerate() {
        let sum = u16::from(e.signature[32 + i]) + u16::from(*l) + carry;
        e.signature[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "s + L still fits 32 bytes");
    assert_ne!(e.signature, s.env.signature);
    assert_eq!(
        verify(&s, &e),
        Err(VerifyError::BadSignature(peer(&s.client)))
    );
}

#[test]
fn weak_public_key_is_refused() {
    // The identity point (small order) as public key, and the signature R = identity, s = 0:
    // [s]B = R + [k]A holds for every message, so a plain `verify` accepts it.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = peer_of_public(identity);
    let provider = peer(&key(2));
    let mut signature = [0u8; 64];
    signature[0] = 1;
    let payload = {
        let mut buf = BytesMut::new();
        encode_request(&deploy(), &mut buf).expect("encode");
        buf.to_vec()
    };
    let env = SignedEnvelope {
        provider,
        nonce: Nonce::from_bytes([1; 16]),
        timestamp: NOW,
        payload,
        signature,
    };
    let message = signing_message(&env.provider, &env.nonce, env.timestamp, &env.payload);
    let weak_key = VerifyingKey::from_bytes(&identity).expect("decompresses");
    assert!(weak_key.is_weak());
    assert!(
        weak_key
            .verify(&message, &Signature::from_bytes(&signature))
            .is_ok(),
        "the lax check accepts the forgery, so this test exercises verify_strict"
    );
    let err = env
        .verify(&weak, &provider, NOW, &mut ReplayGuard::default())
        .expect_err("weak key");
    assert_eq!(err, VerifyError::BadSignature(weak));
}

#[test]
fn replays_are_refused_also_after_a_restart() {
    let s = setup();
    let signer = peer(&s.client);
    let mut guard = ReplayGuard::default();
    assert!(s.env.verify(&signer, &s.provider, NOW, &mut guard).is_ok());
    let err = s
        .env
        .verify(&signer, &s.provider, NOW + 1, &mut guard)
        .expect_err("replay");
    assert_eq!(err, VerifyError::Replay(ReplayError::Replayed(s.env.nonce)));
    assert_eq!(err.code(), ErrorCode::Replayed);

    let saved = serde_json::to_vec(&guard).expect("persist");
    let mut restarted: ReplayGuard = serde_json::from_slice(&saved).expect("load");
    let err = s
        .env
        .verify(&signer, &s.provider, NOW + 2, &mut restarted)
        .expect_err("replay after restart");
    assert_eq!(err.code(), ErrorCode::Replayed);
    // A fresh guard (state lost) would have accepted it: the persisted state is what refuses.
    assert!(
        s.env
            .verify(&signer, &s.provider, NOW + 2, &mut ReplayGuard::default())
            .is_ok()
    );
}

#[test]
fn bad_signatures_do_not_use_up_nonces() {
    let s = setup();
    let signer = peer(&s.client);
    let mut guard = ReplayGuard::default();
    let mut forged = s.env.clone();
    forged.signature[0] ^= 1;
    assert!(
        forged
            .verify(&signer, &s.provider, NOW, &mut guard)
            .is_err()
    );
    assert!(guard.is_empty());
    assert!(s.env.verify(&signer, &s.provider, NOW, &mut guard).is_ok());
}

#[test]
fn stale_and_future_timestamps_are_refused() {
    let s = setup();
    let signer = peer(&s.client);
    for (now, ok) in [
        (NOW + DEFAULT_MAX_SKEW_SECS, true),
        (NOW + DEFAULT_MAX_SKEW_SECS + 1, false),
        (NOW - DEFAULT_MAX_SKEW_SECS, true),
        (NOW - DEFAULT_MAX_SKEW_SECS - 1, false),
    ] {
        let got = s
            .env
            .verify(&signer, &s.provider, now, &mut ReplayGuard::default());
        match (ok, got) {
            (true, Ok(_)) => {}
            (false, Err(e)) => assert_eq!(e.code(), ErrorCode::Stale, "{e}"),
            (_, other) => panic!("at now = NOW{:+}: {other:?}", now as i64 - NOW as i64),
        }
    }
}

#[test]
fn signed_payload_must_be_one_valid_request() {
    let s = setup();
    let signer = peer(&s.client);
    let sign_raw = |payload: Vec<u8>| {
        let nonce = Nonce::random();
        let message = signing_message(&s.provider, &nonce, NOW, &payload);
        SignedEnvelope {
            provider: s.provider,
            nonce,
            timestamp: NOW,
            payload,
            signature: s.client.sign(&message).to_bytes(),
        }
    };
    let frame = |ty: u8, json: &[u8]| {
        let mut b = BytesMut::new();
        b.put_u8(ty);
        b.put_u32(json.len() as u32);
        b.put_slice(json);
        b.to_vec()
    };
    let valid = frame(0x11, br#"{"id":"d-1"}"#);
    let mut trailing = valid.clone();
    trailing.push(0x11);
    let cases: Vec<(Vec<u8>, VerifyError)> = vec![
        (Vec::new(), VerifyError::PayloadSize),
        (
            frame(0x2f, br#"{"code":"internal","message":"x"}"#),
            ControlPlaneDecodeError::NotARequest(MessageType::Error).into(),
        ),
        (
            valid[..7].to_vec(),
            ControlPlaneDecodeError::TruncatedPayload.into(),
        ),
        (trailing, ControlPlaneDecodeError::TrailingPayload(1).into()),
        (
            frame(0x11, br#"{"id":"../x"}"#),
            VerifyError::Payload(ControlPlaneDecodeError::Invalid {
                ty: MessageType::StopRequest,
                source: crate::control_plane::InvalidMessage::DeploymentId {
                    id: "../x".into(),
                    reason: "only letters, digits, `_`, `.` and `-` are allowed",
                },
            }),
        ),
    ];
    for (payload, expected) in cases {
        let env = sign_raw(payload);
        let got = env.verify(&signer, &s.provider, NOW, &mut ReplayGuard::default());
        assert_eq!(got, Err(expected));
    }
    let env = sign_raw(valid);
    assert_eq!(
        env.verify(&signer, &s.provider, NOW, &mut ReplayGuard::default()),
        Ok(Request::Stop(StopRequest { id: "d-1".into() }))
    );
}

#[test]
fn signing_message_layout_is_pinned() {
    let provider = peer(&key(2));
    let nonce = Nonce::from_bytes([0xab; 16]);
    let payload = [0x13, 0, 0, 0, 2, b'{', b'}'];
    let msg = signing_message(&provider, &nonce, 0x0102_0304_0506_0708, &payload);
    let id = provider.to_bytes();
    let mut expected = Vec::new();
    expected.extend_from_slice(&[0, 0, 0, 36]);
    expected.extend_from_slice(b"peercompute/control/1 signed request");
    expected.extend_from_slice(&[0, 0, 0, 1, 0x13]);
    expected.extend_from_slice(&(id.len() as u32).to_be_bytes());
    expected.extend_from_slice(&id);
    expected.extend_from_slice(&[0, 0, 0, 16]);
    expected.extend_from_slice(&[0xab; 16]);
    expected.extend_from_slice(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    expected.extend_from_slice(&[0, 0, 0, 7]);
    expected.extend_from_slice(&payload);
    assert_eq!(msg, expected);
    assert_eq!(
        id.len(),
        38,
        "an Ed25519 peer id is a 38-byte identity multihash"
    );
}

#[test]
fn golden_signature() {
    // Ed25519 is deterministic: a change of the signed encoding changes this signature.
    let provider = peer(&key(2));
    let req = Request::Stop(StopRequest { id: "blog".into() });
    let env = SignedEnvelope::sign(&key(1), provider, &req, Nonce::from_bytes([0; 16]), NOW)
        .expect("sign");
    assert_eq!(hex::encode(env.signature), GOLDEN_SIGNATURE);
}

const GOLDEN_SIGNATURE: &str = "4f074c0aa8e1ef48c653735d30da1a9a15c381d430a7211c81edc46b1384b4fda16db12140eb8e894aada0d290cca9910a13612675ff65837e33ccb1bd3e4309";

#[test]
fn wire_form_is_strict() {
    let s = setup();
    let json = serde_json::to_string(&s.env).expect("json");
    let back: SignedEnvelope = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, s.env);
    let value: serde_json::Value = serde_json::from_str(&json).expect("value");
    let with = |field: &str, v: serde_json::Value| {
        let mut value = value.clone();
        value[field] = v;
        serde_json::from_value::<SignedEnvelope>(value)
    };
    assert!(
        with("nonce", "ab".repeat(16).into()).is_ok(),
        "positive control"
    );
    assert!(
        with("nonce", "AB".repeat(16).into()).is_err(),
        "uppercase nonce"
    );
    assert!(with("nonce", "00".into()).is_err(), "short nonce");
    assert!(with("provider", "not-a-peer".into()).is_err());
    assert!(with("signature", BASE64.encode([0u8; 63]).into()).is_err());
    assert!(with("payload", "!!!".into()).is_err());
    let huge = "A".repeat(MAX_SIGNED_PAYLOAD / 3 * 4 + 8);
    assert!(with("payload", huge.into()).is_err(), "oversized payload");
    assert!(with("signer", "x".into()).is_err(), "unknown field");
}

#[test]
fn debug_hides_the_payload() {
    let s = setup();
    let dbg = format!("{:?}", s.env);
    assert!(!dbg.contains("hunter2") && !dbg.contains(&BASE64.encode(&s.env.payload)));
    assert!(dbg.contains("bytes"), "{dbg}");
    let Request::Deploy(req) = deploy() else {
        unreachable!("deploy() builds a deploy request")
    };
    assert!(!format!("{req:?}").contains("hunter2"));
}

#[test]
fn random_nonces_differ() {
    assert_ne!(Nonce::random(), Nonce::random());
    let n = Nonce::random();
    assert_eq!(n.to_string().parse::<Nonce>(), Ok(n));
}
