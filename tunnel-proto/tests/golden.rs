//! Golden byte vectors: the exact wire bytes of a few messages, written by hand from the format
//! in the crate docs (not copied from the encoder's output), checked in both directions. A
//! change here is a wire-format change and breaks every deployed peer.
//!
//! Control frame: `type: u8 | length: u32 BE | body`. Body fields in the order of the message
//! diagram; integers big-endian; strings `u16 length | UTF-8`, route names `u8 length | UTF-8`;
//! lists `u16 count | items`. Type bytes (from `control.rs`): Hello 0x01, Welcome 0x02,
//! Register 0x03, Registered 0x04, Refused 0x05, Unregister 0x06, Ping 0x07, Pong 0x08,
//! GoAway 0x09, RegisterGranted 0x0A (protocol version 2), RegisterFleet 0x0B (protocol version 3). Refused's code is a u8 (NameOwned 1, InvalidName 2, TooManyNames 3, TryLater 5);
//! GoAway's a u16 (Shutdown 1, UnsupportedVersion 2, NotAllowed 3, ProtocolError 4, Replaced 5).
//!
//! Stream header: `version: u8 | length: u16 BE | kind: u8 | route: u8 len + bytes |
//! family: u8 | ip | port: u16 BE`; version 1, kind Http 1, family 4 or 6.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::BytesMut;
use peercompute_tunnel_proto::{
    ControlMessage, GoAwayCode, NameGrant, RefuseCode, StreamHeader, StreamKind, decode_control,
    decode_stream_header, encode_control,
};

/// Hex with spaces between fields for reading; the spaces are not bytes.
fn bytes_of(spaced_hex: &str) -> Vec<u8> {
    let hex: String = spaced_hex.split_whitespace().collect();
    hex::decode(&hex).expect("golden vector is valid hex")
}

fn check_control(msg: ControlMessage, spaced_hex: &str) {
    let expected = bytes_of(spaced_hex);

    let mut encoded = BytesMut::new();
    encode_control(&msg, &mut encoded).expect("golden message encodes");
    assert_eq!(
        hex::encode(&encoded),
        hex::encode(&expected),
        "encoding of {msg:?}"
    );

    let mut src = BytesMut::from(&expected[..]);
    assert_eq!(
        decode_control(&mut src),
        Ok(Some(msg)),
        "decoding {spaced_hex}"
    );
    assert!(src.is_empty(), "decoding {spaced_hex} left {src:?}");
}

fn check_stream(header: StreamHeader, spaced_hex: &str) {
    let expected = bytes_of(spaced_hex);

    let mut encoded = BytesMut::new();
    header.encode(&mut encoded).expect("golden header encodes");
    assert_eq!(
        hex::encode(&encoded),
        hex::encode(&expected),
        "encoding of {header:?}"
    );

    let mut src = BytesMut::from(&expected[..]);
    assert_eq!(
        decode_stream_header(&mut src),
        Ok(Some(header)),
        "decoding {spaced_hex}"
    );
    assert!(src.is_empty(), "decoding {spaced_hex} left {src:?}");
}

#[test]
fn hello() {
    // type 0x01, body 7 bytes: min 1, max 1, agent "a" (u16 len 1, 0x61).
    check_control(
        ControlMessage::Hello {
            min_version: 1,
            max_version: 1,
            agent: "a".into(),
        },
        "01 00000007 0001 0001 0001 61",
    );
}

#[test]
fn welcome() {
    // type 0x02, body 15 bytes: version 1, gateway_id "gw", list of 2: "x", "yz".
    check_control(
        ControlMessage::Welcome {
            version: 1,
            gateway_id: "gw".into(),
            p2p_addrs: vec!["x".into(), "yz".into()],
        },
        "02 0000000f 0001 0002 6777 0002 0001 78 0002 797a",
    );
}

#[test]
fn register() {
    // type 0x03, body 5 bytes: name "blog" with a u8 length.
    check_control(
        ControlMessage::Register {
            name: "blog".into(),
        },
        "03 00000005 04 626c6f67",
    );
}

#[test]
fn registered() {
    // type 0x04, body 19 bytes: name "blog" (u8 len), url "https://b.io" (u16 len 12).
    check_control(
        ControlMessage::Registered {
            name: "blog".into(),
            url: "https://b.io".into(),
        },
        "04 00000013 04 626c6f67 000c 68747470733a2f2f622e696f",
    );
}

#[test]
fn refused() {
    // type 0x05, body 13 bytes: name "blog", code 1 (NameOwned), reason "taken".
    check_control(
        ControlMessage::Refused {
            name: "blog".into(),
            code: RefuseCode::NameOwned,
            reason: "taken".into(),
        },
        "05 0000000d 04 626c6f67 01 0005 74616b656e",
    );
    check_control(
        ControlMessage::Refused {
            name: "x".into(),
            code: RefuseCode::TooManyNames,
            reason: String::new(),
        },
        "05 00000005 01 78 03 0000",
    );
    // code 5 (TryLater), reason "full" (the value reachability.md reserves).
    check_control(
        ControlMessage::Refused {
            name: "x".into(),
            code: RefuseCode::TryLater,
            reason: "full".into(),
        },
        "05 00000009 01 78 05 0004 66756c6c",
    );
}

#[test]
fn unregister() {
    check_control(
        ControlMessage::Unregister {
            name: "blog".into(),
        },
        "06 00000005 04 626c6f67",
    );
}

#[test]
fn ping_and_pong() {
    // type 0x07 / 0x08, body: the nonce as u64 big-endian.
    check_control(
        ControlMessage::Ping { nonce: 1 },
        "07 00000008 0000000000000001",
    );
    check_control(
        ControlMessage::Pong {
            nonce: 0x0102_0304_0506_0708,
        },
        "08 00000008 0102030405060708",
    );
}

#[test]
fn go_away() {
    // type 0x09, body 7 bytes: code 1 (Shutdown) as u16, message "bye".
    check_control(
        ControlMessage::GoAway {
            code: GoAwayCode::Shutdown,
            message: "bye".into(),
        },
        "09 00000007 0001 0003 627965",
    );
    check_control(
        ControlMessage::GoAway {
            code: GoAwayCode::Replaced,
            message: String::new(),
        },
        "09 00000004 0005 0000",
    );
}

#[test]
fn non_ascii_strings_are_length_prefixed_in_bytes() {
    // "é" is two UTF-8 bytes (c3 a9): the length prefix counts bytes, not characters.
    check_control(
        ControlMessage::GoAway {
            code: GoAwayCode::Other(0x1234),
            message: "é".into(),
        },
        "09 00000006 1234 0002 c3a9",
    );
}

#[test]
fn stream_header_ipv4() {
    // version 1, body 13 bytes: kind 1 (Http), route "blog", family 4, 127.0.0.1, port 5000.
    check_stream(
        StreamHeader {
            kind: StreamKind::Http,
            route: "blog".into(),
            client: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000)),
        },
        "01 000d 01 04 626c6f67 04 7f000001 1388",
    );
}

#[test]
fn stream_header_ipv6() {
    // version 1, body 25 bytes: kind 1, route "blog", family 6, ::1, port 443.
    check_stream(
        StreamHeader {
            kind: StreamKind::Http,
            route: "blog".into(),
            client: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 443, 0, 0)),
        },
        "01 0019 01 04 626c6f67 06 00000000000000000000000000000001 01bb",
    );
}

#[test]
fn stream_header_ipv4_mapped_ipv6_stays_ipv6() {
    // ::ffff:10.0.0.1 is sent as family 6 and comes back as an IPv6 address, unchanged.
    check_stream(
        StreamHeader {
            kind: StreamKind::Http,
            route: "a".into(),
            client: SocketAddr::V6(SocketAddrV6::new(
                Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped(),
                65535,
                0,
                0,
            )),
        },
        "01 0016 01 01 61 06 00000000000000000000ffff0a000001 ffff",
    );
}

#[test]
fn register_granted() {
    // type 0x0A, body 180 bytes: name "blog" (u8 len), grant (u16 len 173): version 1 |
    // domain "apps.example.com" (u8 len 16) | name "blog" | owner peer id (u8 len 38: the
    // identity multihash of the Ed25519 key of seed [1; 32]) | grantee (seed [2; 32]) |
    // not_after 1_802_592_000 (u64) | Ed25519 signature (64 bytes, deterministic) over
    // `24 "peercompute-name-grant/1"` and the fields before it.
    let grant = NameGrant::from_text(
        "pcgrant1.ARBhcHBzLmV4YW1wbGUuY29tBGJsb2cmACQIARIgiojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1wmACQIARIggTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5QAAAAAa3FfAFZQfN2z50YobOIQB2KlX_IphuvS7Gn2Jb-gsVzGGbcNlTuNMclNwyPpls6XrpaBHW-if-KJonMhaT0to40viAc",
    )
    .expect("the golden grant parses");
    assert_eq!(grant.not_after, 1_802_592_000);
    check_control(
        ControlMessage::RegisterGranted {
            name: "blog".into(),
            grant: Box::new(grant),
        },
        "0a 000000b4 04 626c6f67 00ad \
         01 10 617070732e6578616d706c652e636f6d 04 626c6f67 \
         26 0024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c \
         26 0024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394 \
         000000006b715f00 \
         56507cddb3e746286ce2100762a55ff22986ebd2ec69f625bfa0b15cc619b70d\
         953b8d31c94dc323e996ce97ae96811d6fa27fe289a27321693d2da38d2f8807",
    );
}

#[test]
fn register_fleet() {
    // type 0x0B, body 47 bytes: name "web" (u8 len 3) | fleet key (32 raw bytes, here 0x11
    // each) | group "production" (u8 len 10).
    check_control(
        ControlMessage::RegisterFleet {
            name: "web".into(),
            fleet: [0x11; 32],
            group: "production".into(),
        },
        "0b 0000002f 03 776562 \
         1111111111111111111111111111111111111111111111111111111111111111 \
         0a 70726f64756374696f6e",
    );
}

#[test]
fn register_fleet_refuses_an_empty_group_both_ways() {
    let msg = ControlMessage::RegisterFleet {
        name: "web".into(),
        fleet: [0x11; 32],
        group: String::new(),
    };
    assert_eq!(
        encode_control(&msg, &mut BytesMut::new()),
        Err(peercompute_tunnel_proto::EncodeError::Empty("group"))
    );
    let mut src = BytesMut::from(
        &bytes_of(
            "0b 00000025 03 776562 \
             1111111111111111111111111111111111111111111111111111111111111111 00",
        )[..],
    );
    assert_eq!(
        decode_control(&mut src),
        Err(peercompute_tunnel_proto::DecodeError::Empty("group"))
    );
}
