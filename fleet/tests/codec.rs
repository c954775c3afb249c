//! The entry codec, the exchange frames and the join token text, by table: every op round
//! trips; no single flipped byte passes as an entry; non-canonical, oversized, short and
//! wrongly versioned bytes are refused with the error that names them (each next to a
//! positive control, so the refusal is for the reason tested); frames decode only whole and
//! refuse an oversized length from the header alone; damaged tokens are refused.

mod support;

#[path = "../fuzz/src/lib.rs"]
pub mod checks;

use std::collections::BTreeSet;

use checks::{EntryEnd, OP_NAMES, check_entry, op_name};
use peercompute_fleet::{
    DecodeError, Entry, EntryError, EntryHash, FleetMessage, HealthCheck, JoinToken,
    MAX_ENTRY_BYTES, MAX_FLEET_FRAME, MAX_HEALTH_PATH, MAX_TEXT, MAX_TOKEN_LEN, Op, Release,
    SignedEntry, TokenError, WireError, body_len, decode_body, decode_frame, encode_message,
};
use peercompute_tunnel_proto::{DeployRequest, EnvVar};
use support::*;

/// A release entry with every optional field set, and the genesis.
fn samples() -> (World, SignedEntry, SignedEntry) {
    let mut w = World::new();
    let genesis = w.log.iter().next().expect("a genesis").clone();
    let ops = every_op(&mut w);
    let (fk, op) = ops
        .into_iter()
        .find(|(_, op)| matches!(op, Op::Release(_)))
        .expect("every_op has a release");
    let release = author(&w, &fk, op);
    (w, genesis, release)
}

#[test]
fn every_op_round_trips_through_sign_and_decode() {
    let mut w = World::new();
    let ops = every_op(&mut w);
    let names: BTreeSet<&str> = ops.iter().map(|(_, op)| op_name(op)).collect();
    assert_eq!(
        names,
        BTreeSet::from(OP_NAMES),
        "every_op covers every variant"
    );
    for (key, op) in ops {
        let signed = author(&w, &key, op.clone());
        let decoded = SignedEntry::decode(signed.bytes())
            .unwrap_or_else(|e| panic!("{} does not decode: {e}", op_name(&op)));
        assert_eq!(decoded, signed, "{}", op_name(&op));
        assert_eq!(decoded.entry().op, op);
        assert_eq!(decoded.hash(), signed.hash());
        assert_eq!(check_entry(signed.bytes()), EntryEnd::Decoded(op_name(&op)));
    }
}

/// One release, one spelling: a `ReleaseV2` whose attachments are empty is the same release
/// as a `Release` and is refused as not canonical (next to its positive control, the same
/// body as op 7, signed the same way).
#[test]
fn a_release_v2_without_attachments_is_not_canonical() {
    let (w, _, release) = samples();
    let fk = w.fleet_key.clone();
    let plain = author(&w, &fk, support::release("production", 5, "v5"));
    let body = &plain.bytes()[1..plain.bytes().len() - 64];
    assert_eq!(SignedEntry::decode(&sign_raw(&fk, body)), Ok(plain.clone()));
    assert_eq!(
        SignedEntry::decode(&sign_raw(&fk, &as_empty_release_v2(&plain))),
        Err(DecodeError::NotCanonical)
    );
    // `samples()`'s release has every optional field but no attachments: op 7 as well.
    assert_eq!(release.bytes()[1 + op_offset(release.entry())], 7);
    let with = author(&w, &fk, release_with_attachments("production", 6, "v6"));
    assert_eq!(with.bytes()[1 + op_offset(with.entry())], 12);
    assert_eq!(SignedEntry::decode(with.bytes()), Ok(with.clone()));
}

/// The attachments follow the wire rules in a fleet too (`volume_exclusive` without volumes,
/// a device path, a volume named like a path).
#[test]
fn a_release_with_bad_attachments_is_refused() {
    let w = World::new();
    let fk = w.fleet_key.clone();
    let Op::Release(good) = release_with_attachments("production", 2, "v2") else {
        unreachable!()
    };
    let bad_specs: [fn(&mut DeployRequest); 3] = [
        |s| s.volumes.clear(),
        |s| s.devices = vec!["/dev/kvm".into()],
        |s| s.volumes[0].name = "../etc".into(),
    ];
    for bad in bad_specs {
        let mut r = good.clone();
        bad(&mut r.spec);
        let entry = Entry {
            fleet: w.log.fleet(),
            parents: w.log.heads(),
            clock: w.log.next_clock(),
            author: member(&fk),
            at: NOW,
            op: Op::Release(r.clone()),
        };
        assert!(
            matches!(SignedEntry::sign(entry, &fk), Err(EntryError::Spec(_))),
            "{:?}",
            r.spec
        );
    }
}

#[test]
fn no_single_flipped_byte_passes_as_an_entry() {
    let (_, genesis, release) = samples();
    for original in [genesis, release] {
        let name = op_name(&original.entry().op);
        let mut kinds: BTreeSet<&str> = BTreeSet::new();
        for i in 0..original.bytes().len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut flipped = original.bytes().to_vec();
                flipped[i] ^= mask;
                match check_entry(&flipped) {
                    EntryEnd::Refused(kind) => kinds.insert(kind),
                    EntryEnd::Decoded(op) => {
                        let e = SignedEntry::decode(&flipped).expect("it decoded");
                        assert_ne!(e.hash(), original.hash(), "byte {i} of the {name}");
                        panic!("byte {i} ^ {mask:#04x} of the {name} decodes as a {op}");
                    }
                };
            }
        }
        // The flips reach every check: the version, the body's form and the signature.
        for kind in ["version", "malformed", "bad_signature"] {
            assert!(
                kinds.contains(kind),
                "{name}: no flip refused as {kind}: {kinds:?}"
            );
        }
    }
}

/// The body (postcard bytes) of a signed entry.
fn body(signed: &SignedEntry) -> Vec<u8> {
    let bytes = signed.bytes();
    bytes[1..bytes.len() - 64].to_vec()
}

#[test]
fn non_canonical_bodies_are_refused_even_when_signed() {
    let (w, genesis, _) = samples();
    let fk = &w.fleet_key;
    // Positive control: the canonical body signed by hand is the encoder's entry.
    let canonical = body(&genesis);
    assert_eq!(sign_raw(fk, &canonical), genesis.bytes());
    assert_eq!(
        SignedEntry::decode(&sign_raw(fk, &canonical)),
        Ok(genesis.clone())
    );

    // fleet (32 raw bytes) | parents count: 0x00 → the overlong 0x80 0x00, which postcard reads.
    let mut overlong = canonical.clone();
    assert_eq!(overlong[32], 0x00, "the parents count");
    overlong.splice(32..33, [0x80, 0x00]);
    let read: Entry = postcard::from_bytes(&overlong).expect("postcard reads overlong varints");
    assert_eq!(&read, genesis.entry());
    assert_eq!(
        SignedEntry::decode(&sign_raw(fk, &overlong)),
        Err(DecodeError::NotCanonical)
    );

    // The time (a 5-byte varint after fleet, parents, clock and author) made 6 bytes long.
    let mut late = canonical.clone();
    let at = 32 + 1 + 1 + 32 + 4;
    assert_eq!(late[at] & 0x80, 0, "the last byte of the time");
    late[at] |= 0x80;
    late.insert(at + 1, 0x00);
    assert_eq!(
        postcard::from_bytes::<Entry>(&late).as_ref(),
        Ok(genesis.entry())
    );
    assert_eq!(
        SignedEntry::decode(&sign_raw(fk, &late)),
        Err(DecodeError::NotCanonical)
    );

    let mut trailing = canonical;
    trailing.push(0x00);
    assert_eq!(
        SignedEntry::decode(&sign_raw(fk, &trailing)),
        Err(DecodeError::Malformed("1 bytes after the entry".into()))
    );
}

#[test]
fn entries_that_break_a_rule_or_are_signed_by_another_key_are_refused() {
    let (w, genesis, _) = samples();
    let mut with_parent = genesis.entry().clone();
    with_parent.parents = vec![EntryHash([7; 32])];
    let bytes = postcard::to_allocvec(&with_parent).expect("serializes");
    assert_eq!(
        SignedEntry::decode(&sign_raw(&w.fleet_key, &bytes)),
        Err(DecodeError::Invalid(EntryError::Genesis))
    );
    // Signed by another key than its author's.
    let forged = sign_raw(&key(9), &body(&genesis));
    assert_eq!(
        SignedEntry::decode(&forged),
        Err(DecodeError::BadSignature(genesis.entry().author))
    );
}

#[test]
fn sizes_and_versions_are_checked_before_decoding() {
    let (_, genesis, _) = samples();
    let over = MAX_ENTRY_BYTES + 1;
    // A whole entry padded past the limit, and bytes with a wrong version: too large first.
    let mut padded = genesis.bytes().to_vec();
    padded.resize(over, 0);
    assert_eq!(
        SignedEntry::decode(&padded),
        Err(DecodeError::TooLarge(over))
    );
    assert_eq!(
        SignedEntry::decode(&vec![2; over]),
        Err(DecodeError::TooLarge(over))
    );
    // At the limit the size is fine and the next check speaks.
    assert_eq!(
        SignedEntry::decode(&vec![2; MAX_ENTRY_BYTES]),
        Err(DecodeError::Version(2))
    );
    assert_eq!(
        SignedEntry::decode(&[1; 65]),
        Err(DecodeError::TooShort(65))
    );
    assert_eq!(SignedEntry::decode(&[]), Err(DecodeError::TooShort(0)));
    for version in [0, 2, 0xff] {
        let mut bytes = genesis.bytes().to_vec();
        bytes[0] = version;
        assert_eq!(
            SignedEntry::decode(&bytes),
            Err(DecodeError::Version(version))
        );
    }
}

#[test]
fn the_largest_release_fits_an_entry() {
    let w = World::new();
    let long = |n: usize| "x".repeat(n);
    // 64 variables of 32 KiB in all: each `key=value\0` counts key + value + 2 bytes.
    let value = (32 * 1024) / 64 - 2 - 8;
    // The longest image reference: a 255-byte name, a 128-byte tag and a digest.
    let image = format!("{}:{}@sha256:{}", long(255), long(128), "0".repeat(64));
    let mut spec = DeployRequest::new(image, 65535);
    spec.name = Some(long(63));
    spec.env = (0..64)
        .map(|i| EnvVar {
            key: format!("KEY{i:05}"),
            value: long(value),
        })
        .collect();
    spec.cpu_millis = Some(u32::MAX);
    spec.memory_bytes = Some(u64::MAX);
    let op = Op::Release(Release {
        group: long(63),
        seq: u64::MAX,
        version: long(MAX_TEXT),
        spec,
        health: HealthCheck {
            path: Some(format!("/{}", long(MAX_HEALTH_PATH - 1))),
            timeout_secs: 3600,
        },
    });
    let signed = author(&w, &w.fleet_key, op);
    assert!(
        signed.bytes().len() <= MAX_ENTRY_BYTES,
        "{}",
        signed.bytes().len()
    );
    assert_eq!(SignedEntry::decode(signed.bytes()), Ok(signed));
}

/// One message of every kind, carrying the sample entries and a status.
fn messages() -> Vec<FleetMessage> {
    let (w, genesis, release) = samples();
    every_message(w.log.fleet(), &[&genesis, &release])
}

#[test]
fn frames_round_trip_and_decode_only_whole() {
    for message in messages() {
        let frame = encode_message(&message).expect("fits a frame");
        let len = frame.len();
        assert_eq!(body_len(frame[..4].try_into().expect("4")), Ok(len - 4));
        assert_eq!(decode_body(&frame[4..]), Ok(message.clone()));
        for cut in 0..len {
            assert_eq!(
                decode_frame(&frame[..cut]),
                Ok(None),
                "{message:?} cut at {cut}"
            );
        }
        let mut two = frame.clone();
        two.extend_from_slice(&frame[..5]);
        assert_eq!(decode_frame(&two), Ok(Some((message.clone(), len))));
        assert_eq!(decode_frame(&two[len..]), Ok(None));
    }
    // The entries a frame carries are the entries sent.
    let (_, genesis, release) = samples();
    let frame = encode_message(&messages()[0]).expect("fits");
    let Ok(Some((FleetMessage::Push { entries, .. }, _))) = decode_frame(&frame) else {
        panic!("a push");
    };
    let decoded: Vec<SignedEntry> = entries
        .iter()
        .map(|b| SignedEntry::decode(b).expect("an entry"))
        .collect();
    assert_eq!(decoded, vec![genesis, release]);
}

#[test]
fn an_oversized_length_is_refused_from_the_header_alone() {
    let max = u32::try_from(MAX_FLEET_FRAME).expect("fits");
    assert_eq!(body_len(max.to_be_bytes()), Ok(MAX_FLEET_FRAME));
    for len in [max + 1, u32::MAX] {
        let header = len.to_be_bytes();
        assert_eq!(body_len(header), Err(WireError::TooLarge(len as usize)));
        // Nothing but the header is buffered, and the decoder refuses rather than wait.
        assert_eq!(
            decode_frame(&header),
            Err(WireError::TooLarge(len as usize))
        );
    }
    assert_eq!(decode_frame(&max.to_be_bytes()), Ok(None));
    let big = FleetMessage::Push {
        fleet: World::new().log.fleet(),
        entries: vec![vec![0; MAX_FLEET_FRAME / 2]; 2],
    };
    assert!(matches!(encode_message(&big), Err(WireError::TooLarge(_))));
}

#[test]
fn bodies_with_trailing_bytes_or_unknown_kinds_are_refused() {
    let message = FleetMessage::StatusRequest {
        fleet: World::new().log.fleet(),
    };
    let frame = encode_message(&message).expect("fits");
    let mut trailing = frame[4..].to_vec();
    assert_eq!(decode_body(&trailing), Ok(message));
    trailing.push(0);
    assert_eq!(
        decode_body(&trailing),
        Err(WireError::Malformed("1 bytes after the message".into()))
    );
    assert!(matches!(decode_body(&[8]), Err(WireError::Malformed(_))));
    assert!(matches!(decode_body(&[]), Err(WireError::Malformed(_))));
}

#[test]
fn a_join_token_round_trips_through_its_text() {
    let mut w = World::new();
    let mut token = w.invite(&["production"], 2, NOW + 3600);
    token.bootstrap = vec!["12D3KooWExample@/ip4/192.0.2.1/udp/4001/quic-v1".into()];
    let text = token.to_text();
    assert!(text.starts_with("pcjoin1."), "{text}");
    let parsed = JoinToken::parse(&format!("  {text}\n")).expect("a whole token");
    assert_eq!(parsed.token, token);
    assert_eq!(parsed.entry.bytes(), &token.invite[..]);
    assert_eq!(parsed.fleet(), w.log.fleet());
    assert_eq!(parsed.invite.groups, vec!["production".to_string()]);
    assert!(!format!("{token:?}").contains(&format!("{:?}", token.secret)));
}

#[test]
fn damaged_join_tokens_are_refused() {
    let mut w = World::new();
    let token = w.invite(&["production"], 2, NOW + 3600);
    let text = token.to_text();
    let damaged = |t: &str| JoinToken::parse(t).map(|p| p.token);
    assert_eq!(damaged(&text[8..]), Err(TokenError::Prefix));
    assert_eq!(damaged(""), Err(TokenError::Prefix));
    assert!(matches!(
        damaged(&text[..text.len() - 3]),
        Err(TokenError::Damaged(_))
    ));
    assert!(matches!(
        damaged(&format!("{text}!")),
        Err(TokenError::Damaged(_))
    ));
    let long = format!("pcjoin1.{}", "A".repeat(MAX_TOKEN_LEN));
    assert_eq!(
        damaged(&long),
        Err(TokenError::Damaged("it is too long".into()))
    );
    // Every character of the body replaced by another base64 character is refused.
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for i in 8..text.len() {
        let c = text.as_bytes()[i] as char;
        let other = alphabet.chars().cycle().skip_while(|&a| a != c).nth(1);
        let mut t = text.clone();
        t.replace_range(i..=i, &other.expect("base64").to_string());
        assert!(damaged(&t).is_err(), "character {i} changed: {t}");
    }
    // A secret that is not the invite key's, and an entry that is not an invite.
    let forged = JoinToken {
        secret: [43; 32],
        ..token.clone()
    };
    assert_eq!(damaged(&forged.to_text()), Err(TokenError::Forged));
    let genesis = w.log.iter().next().expect("a genesis").bytes().to_vec();
    let not_invite = JoinToken {
        invite: genesis,
        ..token.clone()
    };
    assert_eq!(
        damaged(&not_invite.to_text()),
        Err(TokenError::Damaged("its entry is not an invite".into()))
    );
    let mut flipped = token;
    let last = flipped.invite.len() - 1;
    flipped.invite[last] ^= 1;
    assert!(matches!(
        damaged(&flipped.to_text()),
        Err(TokenError::Entry(DecodeError::BadSignature(_)))
    ));
}
