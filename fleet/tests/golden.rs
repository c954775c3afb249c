//! Golden byte vectors of the fleet log: the exact wire bytes of a genesis, a release and a
//! `Pull` frame, written field by field from the format in `codec.rs` and `wire.rs` (postcard
//! 1.x: integers as LEB128 varints, strings and sequences as `varint length | items`, fixed
//! arrays as their bytes, `Option` as `00` or `01 | value`, enum variants by their index as a
//! varint) and checked in both directions. The keys, signatures and hashes were computed apart
//! from this crate (Python's `cryptography` Ed25519 and `hashlib`). A change here is a
//! change of the log's format: every entry's hash, and so every existing fleet, breaks.
//!
//! Entry: `version: u8 = 1 | Entry | Ed25519 signature (64 bytes) over
//! "peercompute-fleet/1 entry\0" | Entry`; its hash is the SHA-256 of all of it. Entry fields
//! in order: fleet (32) | parents (count | 32 each) | clock | author (32) | at | op. Op
//! variants: Genesis 0, Invite 1, Join 2, Enroll 3, SetGroups 4, Grant 5, Ungrant 6,
//! Release 7, Rollback 8, EStop 9, Resume 10, Revoke 11, ReleaseV2 12 (a release with volumes,
//! devices or `volume_exclusive`: its spec continues with those three fields), EStopV2 13 (an
//! e-stop of everything: `groups | reason | everything`; an e-stop without it keeps the bytes
//! of 9, which `estop` below pins).
//!
//! Frame: `length: u32 BE | FleetMessage`; variants Push 0, Ack 1, Pull 2, Entries 3,
//! StatusRequest 4, Status 5, Error 6, Statuses 7.

mod support;

use peercompute_fleet::{
    Entry, EntryHash, FleetId, FleetMessage, HealthCheck, MemberKey, Op, Release, SignedEntry,
    decode_frame, encode_message,
};
use peercompute_tunnel_proto::{DeployRequest, EnvVar, VolumeMount};
use sha2::{Digest, Sha256};
use support::{NOW, digest, key, member};

/// The Ed25519 public key of the secret `[1; 32]`: the fleet key.
const FLEET_KEY: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
/// The Ed25519 public key of the secret `[2; 32]`: a developer.
const DEV_KEY: &str = "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394";

const GENESIS: &str = concat!(
    "01",                                                               // version 1
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c", // fleet: FLEET_KEY
    "00",                                                               // parents: none
    "00",                                                               // clock: 0
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c", // author: FLEET_KEY
    "80cae2d006",      // at: 1_780_000_000 (0x6a18_a500) in 7-bit groups, low first
    "00",              // op: Genesis
    "06 6c656b697769", // name: "lekiwi"
    // signature
    "8cc63a6bea22b0549cd06c3367590a8356ba3c093564a49c5d92f91a6b17996a",
    "1dc066e94507d80748cfc4062eee04d5e4d6393e591e8d2f49f67d819213f00d",
);
const GENESIS_HASH: &str = "9e635564479d0a726b6fe7a1c70ecbbe15e0a699de77bdb93f938cbaa4c99fa3";

const RELEASE: &str = concat!(
    "01",                                                                  // version 1
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",    // fleet: FLEET_KEY
    "01 9e635564479d0a726b6fe7a1c70ecbbe15e0a699de77bdb93f938cbaa4c99fa3", // parents: [genesis]
    "01",                                                                  // clock: 1
    "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394",    // author: DEV_KEY
    "bccae2d006",                                                          // at: 1_780_000_060
    "07",                                                                  // op: Release
    "0a 70726f64756374696f6e",                                             // group: "production"
    "01",                                                                  // seq: 1
    "02 7631",                                                             // version: "v1"
    // spec.image: 90 bytes, "127.0.0.1:5000/app@sha256:" and "01" 32 times
    "5a 3132372e302e302e313a353030302f617070407368613235363a",
    "30313031303130313031303130313031303130313031303130313031303130313031303130313031",
    "303130313031303130313031303130313031303130313031",
    "01 03 617070",               // spec.name: Some("app")
    "903f",                       // spec.port: 8080 (0x1f90)
    "01 04 4d4f4445 04 66617374", // spec.env: [MODE=fast]
    "01 f403",                    // spec.cpu_millis: Some(500)
    "00",                         // spec.memory_bytes: None
    "01 08 2f6865616c74687a",     // health.path: Some("/healthz")
    "1e",                         // health.timeout_secs: 30
    // signature
    "d162700cce152e5a21e00e40e99c08db7dce9f059b1deaf2b513b7b1769daf2b",
    "0605ac8a30d4a5d04fa17ffb32e7a226542bc66eced7add414f95f13d6b5c303",
);
const RELEASE_HASH: &str = "2b03908e96d314819b1a615257ac9f44ebcdf8936676a092be612f5673ab9de8";

const RELEASE_V2: &str = concat!(
    "01",                                                                  // version 1
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",    // fleet: FLEET_KEY
    "01 9e635564479d0a726b6fe7a1c70ecbbe15e0a699de77bdb93f938cbaa4c99fa3", // parents: [genesis]
    "01",                                                                  // clock: 1
    "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394",    // author: DEV_KEY
    "f8cae2d006",                                                          // at: 1_780_000_120
    "0c",                                                                  // op: ReleaseV2
    "0a 70726f64756374696f6e",                                             // group: "production"
    "02",                                                                  // seq: 2
    "02 7632",                                                             // version: "v2"
    // spec.image: as in RELEASE
    "5a 3132372e302e302e313a353030302f617070407368613235363a",
    "30313031303130313031303130313031303130313031303130313031303130313031303130313031",
    "303130313031303130313031303130313031303130313031",
    "01 03 617070", // spec.name: Some("app")
    "903f",         // spec.port: 8080
    "00",           // spec.env: []
    "00",           // spec.cpu_millis: None
    "00",           // spec.memory_bytes: None
    // spec.volumes: [{name: "data", path: "/var/lib/app", size_bytes: Some(2 GiB = 2^31)}]
    "01 04 64617461 0c 2f7661722f6c69622f617070 01 8080808008",
    "01 03 61726d", // spec.devices: ["arm"]
    "01",           // spec.volume_exclusive: true
    "00",           // health.path: None
    "1e",           // health.timeout_secs: 30
    // signature
    "2269cecd819962045948c11a06a3487566131a6dfbe69df21e586939efba79e0",
    "dcd3a42cf0875c551f87e76dd6f86505caa40293f906812f973cd18b49fe4d01",
);
const RELEASE_V2_HASH: &str = "86b9a2c72f69132ed0d240fc1042ec2d0340b9ea92bdb46cd6ed2ce7707ff547";

/// An e-stop of one group, as every e-stop was written before `everything` existed.
const ESTOP: &str = concat!(
    "01",                                                                  // version 1
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",    // fleet: FLEET_KEY
    "01 9e635564479d0a726b6fe7a1c70ecbbe15e0a699de77bdb93f938cbaa4c99fa3", // parents: [genesis]
    "01",                                                                  // clock: 1
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",    // author: FLEET_KEY
    "b4cbe2d006",                                                          // at: 1_780_000_180
    "09",                                                                  // op: EStop
    "01 0a 70726f64756374696f6e",                                          // groups: ["production"]
    "0e 61726d2068697420612077616c6c", // reason: "arm hit a wall"
    // signature
    "09ff25b0c010d4aec2bf6b9207db8c3ef1158bf589bc5a529999b03f2ff87b5a",
    "ee0ffd0f6ca12df4d845384de05e0f35f5aa44ff0faa5de6f98753be799a380c",
);
const ESTOP_HASH: &str = "0949113bb7fd4e2c57fbbcc60c7fe30de538fe216953e3d6682ab29cc2b9a042";

const ESTOP_V2: &str = concat!(
    "01",                                                                  // version 1
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",    // fleet: FLEET_KEY
    "01 9e635564479d0a726b6fe7a1c70ecbbe15e0a699de77bdb93f938cbaa4c99fa3", // parents: [genesis]
    "01",                                                                  // clock: 1
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",    // author: FLEET_KEY
    "f0cbe2d006",                                                          // at: 1_780_000_240
    "0d",                                                                  // op: EStopV2
    "00",                                                                  // groups: []
    "0a 66697265206472696c6c",                                             // reason: "fire drill"
    "01",                                                                  // everything: true
    // signature
    "de40f1b43ab7ee3923a9807fbd97af8ef316d99d269e981f4b0356df6bacad3a",
    "1d9db2530be669887518d20e53a79c54d0d03e25df3e1304a58e99cb1b07a30f",
);
const ESTOP_V2_HASH: &str = "9dee3a71d5114cc88bcea750dcc4a6b0b238033c8206619dce9ba33bc8730efa";

const PULL: &str = concat!(
    "00000042",                                                            // length: 66
    "02",                                                                  // Pull
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",    // fleet: FLEET_KEY
    "01 9e635564479d0a726b6fe7a1c70ecbbe15e0a699de77bdb93f938cbaa4c99fa3", // heads: [genesis]
);

/// Hex with spaces between fields for reading; the spaces are not bytes.
fn bytes_of(spaced_hex: &str) -> Vec<u8> {
    let hex: String = spaced_hex.split_whitespace().collect();
    hex::decode(&hex).expect("golden vector is valid hex")
}

fn key_bytes(hex: &str) -> [u8; 32] {
    bytes_of(hex).try_into().expect("32 bytes")
}

/// Signs `entry` with `signer`, compares the bytes with the vector, decodes the vector, and
/// checks the hash against both the pinned one and SHA-256 computed here.
fn check_entry(entry: Entry, signer: u8, spaced_hex: &str, hash: &str) -> SignedEntry {
    let expected = bytes_of(spaced_hex);
    let signed = SignedEntry::sign(entry.clone(), &key(signer)).expect("a valid entry");
    assert_eq!(
        hex::encode(signed.bytes()),
        hex::encode(&expected),
        "encoding of {entry:?}"
    );
    let decoded = SignedEntry::decode(&expected).expect("the golden vector decodes");
    assert_eq!(decoded.entry(), &entry);
    assert_eq!(decoded.hash().to_string(), hash);
    assert_eq!(hex::encode(Sha256::digest(&expected)), hash);
    decoded
}

fn genesis_entry() -> Entry {
    Entry {
        fleet: FleetId(key_bytes(FLEET_KEY)),
        parents: vec![],
        clock: 0,
        author: MemberKey(key_bytes(FLEET_KEY)),
        at: NOW,
        op: Op::Genesis {
            name: "lekiwi".into(),
        },
    }
}

#[test]
fn the_fixed_keys_are_the_ones_written_here() {
    assert_eq!(hex::encode(member(&key(1)).0), FLEET_KEY);
    assert_eq!(hex::encode(member(&key(2)).0), DEV_KEY);
}

#[test]
fn genesis() {
    check_entry(genesis_entry(), 1, GENESIS, GENESIS_HASH);
}

#[test]
fn release() {
    let mut spec = DeployRequest::new(digest(1), 8080);
    spec.name = Some("app".into());
    spec.env = vec![EnvVar {
        key: "MODE".into(),
        value: "fast".into(),
    }];
    spec.cpu_millis = Some(500);
    let entry = Entry {
        fleet: FleetId(key_bytes(FLEET_KEY)),
        parents: vec![GENESIS_HASH.parse().expect("a hash")],
        clock: 1,
        author: MemberKey(key_bytes(DEV_KEY)),
        at: NOW + 60,
        op: Op::Release(Release {
            group: "production".into(),
            seq: 1,
            version: "v1".into(),
            spec,
            health: HealthCheck {
                path: Some("/healthz".into()),
                timeout_secs: 30,
            },
        }),
    };
    check_entry(entry, 2, RELEASE, RELEASE_HASH);
}

#[test]
fn release_v2() {
    let mut spec = DeployRequest::new(digest(1), 8080);
    spec.name = Some("app".into());
    spec.volumes = vec![VolumeMount {
        name: "data".into(),
        path: "/var/lib/app".into(),
        size_bytes: Some(2 << 30),
    }];
    spec.devices = vec!["arm".into()];
    spec.volume_exclusive = true;
    let entry = Entry {
        fleet: FleetId(key_bytes(FLEET_KEY)),
        parents: vec![GENESIS_HASH.parse().expect("a hash")],
        clock: 1,
        author: MemberKey(key_bytes(DEV_KEY)),
        at: NOW + 120,
        op: Op::Release(Release {
            group: "production".into(),
            seq: 2,
            version: "v2".into(),
            spec,
            health: HealthCheck {
                path: None,
                timeout_secs: 30,
            },
        }),
    };
    check_entry(entry, 2, RELEASE_V2, RELEASE_V2_HASH);
}

fn on_genesis(at: u64, op: Op) -> Entry {
    Entry {
        fleet: FleetId(key_bytes(FLEET_KEY)),
        parents: vec![GENESIS_HASH.parse().expect("a hash")],
        clock: 1,
        author: MemberKey(key_bytes(FLEET_KEY)),
        at,
        op,
    }
}

#[test]
fn estop() {
    let op = Op::estop(vec!["production".into()], "arm hit a wall");
    check_entry(on_genesis(NOW + 180, op), 1, ESTOP, ESTOP_HASH);
}

#[test]
fn estop_v2() {
    let op = Op::estop_everything("fire drill");
    check_entry(on_genesis(NOW + 240, op), 1, ESTOP_V2, ESTOP_V2_HASH);
}

/// An `EStopV2` that does not stop everything has a canonical form elsewhere (variant 9):
/// refused, so one stop has one encoding and one hash.
#[test]
fn an_estop_v2_without_everything_is_not_canonical() {
    let wire = bytes_of(ESTOP_V2);
    let mut body = wire[1..wire.len() - 64].to_vec();
    let flag = body.len() - 1;
    assert_eq!(body[flag], 1);
    body[flag] = 0;
    let r = SignedEntry::decode(&support::sign_raw(&key(1), &body));
    assert_eq!(r, Err(peercompute_fleet::DecodeError::NotCanonical));
    // Positive control: the same bytes with the flag set, signed the same way, decode.
    body[flag] = 1;
    SignedEntry::decode(&support::sign_raw(&key(1), &body)).expect("canonical");
}

#[test]
fn pull_frame() {
    let message = FleetMessage::Pull {
        fleet: FleetId(key_bytes(FLEET_KEY)),
        heads: vec![EntryHash(key_bytes(GENESIS_HASH))],
    };
    let expected = bytes_of(PULL);
    let frame = encode_message(&message).expect("fits a frame");
    assert_eq!(hex::encode(&frame), hex::encode(&expected));
    assert_eq!(decode_frame(&expected), Ok(Some((message, expected.len()))));
}
