//! Property tests of both codecs: round trips of every message with arbitrary field values,
//! decoding split at every byte and fed byte by byte, concatenated frames, oversized length
//! prefixes refused from the prefix alone, the route-name rule against a reference model, and
//! arbitrary or mutated bytes never panicking (with the fuzz targets' checks, included below).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use bytes::BytesMut;
use peercompute_tunnel_proto::{
    ControlMessage, DecodeError, EncodeError, GoAwayCode, MAX_CONTROL_FRAME, MAX_STREAM_HEADER,
    NameError, RefuseCode, StreamHeader, StreamKind, decode_control, decode_stream_header,
    encode_control, validate_name,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

#[path = "../fuzz/src/lib.rs"]
pub mod checks;

use checks::{End, Report, check_control_frames, check_stream_headers};

// ---------------------------------------------------------------------------------------------
// Strategies

/// Valid route names: `[a-z0-9-]{1,63}`, not starting or ending with `-`.
fn route_name() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
}

/// Any Unicode text (control characters, astral planes, ...) of at most `max` characters.
fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

/// Unvalidated names (`u8` length): at most 63 characters, so at most 252 bytes.
fn short_text() -> impl Strategy<Value = String> {
    text(63)
}

fn refuse_code() -> impl Strategy<Value = RefuseCode> {
    prop_oneof![
        Just(RefuseCode::NameOwned),
        Just(RefuseCode::InvalidName),
        Just(RefuseCode::TooManyNames),
        Just(RefuseCode::TryLater),
        // `Other` only for values without a named variant: `Other(1)` is sent as 1 and read
        // back as `NameOwned` (see `unknown_code_values_keep_their_wire_value`).
        any::<u8>().prop_filter_map("named code", |v| {
            (!matches!(v, 1..=3 | 5)).then_some(RefuseCode::Other(v))
        }),
    ]
}

fn go_away_code() -> impl Strategy<Value = GoAwayCode> {
    prop_oneof![
        Just(GoAwayCode::Shutdown),
        Just(GoAwayCode::UnsupportedVersion),
        Just(GoAwayCode::NotAllowed),
        Just(GoAwayCode::ProtocolError),
        Just(GoAwayCode::Replaced),
        any::<u16>().prop_filter_map("named code", |v| {
            (!(1..=5).contains(&v)).then_some(GoAwayCode::Other(v))
        }),
    ]
}

fn control_message() -> impl Strategy<Value = ControlMessage> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), text(40)).prop_map(|(min_version, max_version, agent)| {
            ControlMessage::Hello {
                min_version,
                max_version,
                agent,
            }
        }),
        (any::<u16>(), text(60), vec(text(40), 0..8)).prop_map(
            |(version, gateway_id, p2p_addrs)| ControlMessage::Welcome {
                version,
                gateway_id,
                p2p_addrs,
            }
        ),
        route_name().prop_map(|name| ControlMessage::Register { name }),
        (short_text(), text(80)).prop_map(|(name, url)| ControlMessage::Registered { name, url }),
        (short_text(), refuse_code(), text(80))
            .prop_map(|(name, code, reason)| ControlMessage::Refused { name, code, reason }),
        short_text().prop_map(|name| ControlMessage::Unregister { name }),
        any::<u64>().prop_map(|nonce| ControlMessage::Ping { nonce }),
        any::<u64>().prop_map(|nonce| ControlMessage::Pong { nonce }),
        (go_away_code(), text(80))
            .prop_map(|(code, message)| ControlMessage::GoAway { code, message }),
        (
            route_name(),
            any::<[u8; 32]>(),
            text(60).prop_filter("a group is not empty", |g| !g.is_empty())
        )
            .prop_map(|(name, fleet, group)| ControlMessage::RegisterFleet {
                name,
                fleet,
                group
            }),
    ]
}

/// A client address as a gateway sees it: IPv4 or IPv6 (including IPv4-mapped), any port.
/// IPv6 flow info and scope id are not carried (see `ipv6_scope_id_and_flow_info_are_not_sent`).
fn client_addr() -> impl Strategy<Value = SocketAddr> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        any::<[u8; 4]>().prop_map(|b| IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped())),
    ];
    (ip, any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn stream_header() -> impl Strategy<Value = StreamHeader> {
    (route_name(), client_addr()).prop_map(|(route, client)| StreamHeader {
        kind: StreamKind::Http,
        route,
        client,
    })
}

/// Strings that are sometimes route names and often nearly so.
fn name_candidate() -> impl Strategy<Value = String> {
    prop_oneof![
        route_name(),
        "[a-z0-9-]{0,70}",
        "[a-z0-9][a-z0-9-]{58,64}[a-z0-9]",
        "[a-zA-Z0-9._é-]{0,70}",
        "(é){30,40}",
        text(70),
    ]
}

/// The route-name rule, written independently of `validate_name`.
fn is_route_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn encode(msg: &ControlMessage) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_control(msg, &mut buf).expect("generated messages fit a frame");
    buf.to_vec()
}

fn encode_header(header: &StreamHeader) -> Vec<u8> {
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf)
        .expect("generated headers are valid");
    buf.to_vec()
}

/// `type | u32 length | body`, built by hand.
fn control_frame(ty: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("test bodies are small");
    let mut out = vec![ty];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// `version 1 | u16 length | body`, built by hand.
fn stream_frame(body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("test bodies are small");
    let mut out = vec![1];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

type Decoder<T> = fn(&mut BytesMut) -> Result<Option<T>, DecodeError>;

/// Every strict prefix decodes to `Ok(None)` without consuming; the rest completes it.
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

/// Bytes arriving one at a time into one buffer: `Ok(None)` until the last one.
fn assert_byte_by_byte<T>(
    decode: Decoder<T>,
    bytes: &[u8],
    expected: &T,
) -> Result<(), TestCaseError>
where
    T: PartialEq + std::fmt::Debug + Clone,
{
    let mut buf = BytesMut::new();
    let (last, init) = bytes.split_last().expect("an encoding is never empty");
    for &b in init {
        buf.extend_from_slice(&[b]);
        prop_assert_eq!(decode(&mut buf), Ok(None), "after {} bytes", buf.len());
    }
    buf.extend_from_slice(&[*last]);
    prop_assert_eq!(decode(&mut buf), Ok(Some(expected.clone())));
    prop_assert!(buf.is_empty());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Control frames

proptest! {
    #[test]
    fn control_round_trip(msg in control_message()) {
        let bytes = encode(&msg);
        let declared = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        prop_assert_eq!(usize::try_from(declared).ok(), Some(bytes.len() - 5), "length prefix");
        let mut buf = BytesMut::from(&bytes[..]);
        prop_assert_eq!(decode_control(&mut buf), Ok(Some(msg)));
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
    }

    #[test]
    fn control_encode_appends(msg in control_message(), before in vec(any::<u8>(), 0..16)) {
        let mut buf = BytesMut::from(&before[..]);
        encode_control(&msg, &mut buf).expect("generated messages fit a frame");
        prop_assert_eq!(&buf[..before.len()], &before[..], "existing bytes kept");
        prop_assert_eq!(&buf[before.len()..], &encode(&msg)[..]);
    }

    #[test]
    fn control_split_at_every_byte(msg in control_message()) {
        assert_split_everywhere(decode_control, &encode(&msg), &msg)?;
    }

    #[test]
    fn control_fed_byte_by_byte(msg in control_message()) {
        assert_byte_by_byte(decode_control, &encode(&msg), &msg)?;
    }

    #[test]
    fn control_concatenated_frames_decode_in_order(
        msgs in vec(control_message(), 1..6),
        partial in proptest::option::of((control_message(), any::<Index>())),
    ) {
        let mut buf = BytesMut::new();
        for msg in &msgs {
            encode_control(msg, &mut buf).expect("generated messages fit a frame");
        }
        // Optionally a strict prefix of one more frame, still in flight.
        let tail = match partial {
            Some((msg, cut)) => {
                let bytes = encode(&msg);
                let cut = cut.index(bytes.len());
                bytes[..cut].to_vec()
            }
            None => Vec::new(),
        };
        buf.extend_from_slice(&tail);
        for msg in msgs {
            prop_assert_eq!(decode_control(&mut buf), Ok(Some(msg)));
        }
        prop_assert_eq!(decode_control(&mut buf), Ok(None));
        prop_assert_eq!(&buf[..], &tail[..]);
    }

    #[test]
    fn control_oversized_length_refused_from_prefix(
        ty in 1u8..=9,
        len in (MAX_CONTROL_FRAME as u32 + 1)..=u32::MAX,
    ) {
        let mut buf = BytesMut::from(&[ty][..]);
        buf.extend_from_slice(&len.to_be_bytes());
        let len = usize::try_from(len).expect("usize holds u32");
        prop_assert_eq!(
            decode_control(&mut buf),
            Err(DecodeError::TooLarge { len, max: MAX_CONTROL_FRAME })
        );
    }

    #[test]
    fn control_unknown_type_refused_from_first_byte(
        ty in any::<u8>().prop_filter("known type", |t| !(1..=11).contains(t)),
        rest in vec(any::<u8>(), 0..16),
    ) {
        for n in 0..=rest.len() {
            let mut buf = BytesMut::from(&[ty][..]);
            buf.extend_from_slice(&rest[..n]);
            prop_assert_eq!(decode_control(&mut buf), Err(DecodeError::UnknownType(ty)));
        }
    }

    #[test]
    fn control_arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        check_control_frames(&bytes);
    }

    /// Complete frames of a known type with arbitrary bodies: decoded (canonically) or
    /// refused, never "need more", and the frame is consumed either way.
    #[test]
    fn control_arbitrary_bodies(ty in 1u8..=9, body in vec(any::<u8>(), 0..64)) {
        let frame = control_frame(ty, &body);
        let mut buf = BytesMut::from(&frame[..]);
        match decode_control(&mut buf) {
            Ok(Some(msg)) => prop_assert_eq!(encode(&msg), frame),
            Ok(None) => prop_assert!(false, "a complete frame asked for more bytes"),
            Err(_) => {}
        }
        prop_assert!(buf.is_empty());
    }

    /// A valid body with extra bytes inside the frame is refused, not silently truncated.
    #[test]
    fn control_trailing_bytes_in_body_refused(
        msg in control_message(),
        extra in vec(any::<u8>(), 1..16),
    ) {
        let bytes = encode(&msg);
        let mut body = bytes[5..].to_vec();
        body.extend_from_slice(&extra);
        let mut buf = BytesMut::from(&control_frame(bytes[0], &body)[..]);
        prop_assert_eq!(decode_control(&mut buf), Err(DecodeError::Trailing(extra.len())));
    }

    /// Valid frames with one byte changed: whatever the decoder makes of them holds the fuzz
    /// targets' properties.
    #[test]
    fn control_mutated_frames(
        msgs in vec(control_message(), 1..3),
        at in any::<Index>(),
        value in any::<u8>(),
    ) {
        let original: Vec<u8> = msgs.iter().flat_map(encode).collect();
        let mut bytes = original.clone();
        let at = at.index(bytes.len());
        bytes[at] = value;
        let report = check_control_frames(&bytes);
        if bytes == original {
            prop_assert_eq!(report, Report { decoded: msgs.len(), end: End::NeedMore(0) });
        }
    }
}

/// The decoder accepts exactly `MAX_CONTROL_FRAME`, and the encoder produces no more.
#[test]
fn control_frame_size_limit_boundary() {
    // Hello body: min (2) + max (2) + agent length (2) + agent.
    let at_limit = ControlMessage::Hello {
        min_version: 1,
        max_version: 1,
        agent: "x".repeat(MAX_CONTROL_FRAME - 6),
    };
    let bytes = encode(&at_limit);
    assert_eq!(bytes.len(), 5 + MAX_CONTROL_FRAME);
    let mut over_prefix = BytesMut::from(&bytes[..5]);
    over_prefix[4] += 1;
    assert_eq!(
        decode_control(&mut over_prefix),
        Err(DecodeError::TooLarge {
            len: MAX_CONTROL_FRAME + 1,
            max: MAX_CONTROL_FRAME
        })
    );
    let mut prefix_only = BytesMut::from(&bytes[..5]);
    assert_eq!(
        decode_control(&mut prefix_only),
        Ok(None),
        "a full-size frame is waited for"
    );
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(decode_control(&mut buf), Ok(Some(at_limit)));

    let over = ControlMessage::Hello {
        min_version: 1,
        max_version: 1,
        agent: "x".repeat(MAX_CONTROL_FRAME - 5),
    };
    let mut dst = BytesMut::from(&b"kept"[..]);
    assert_eq!(
        encode_control(&over, &mut dst),
        Err(EncodeError::TooLarge {
            len: MAX_CONTROL_FRAME + 1,
            max: MAX_CONTROL_FRAME
        })
    );
    assert_eq!(&dst[..], b"kept", "a refused encode leaves dst as it was");
}

#[test]
fn control_fields_longer_than_their_prefix_are_refused() {
    let long_name = ControlMessage::Unregister {
        name: "n".repeat(256),
    };
    assert_eq!(
        encode_control(&long_name, &mut BytesMut::new()),
        Err(EncodeError::FieldTooLong {
            field: "name",
            len: 256,
            max: 255
        })
    );
    let long_agent = ControlMessage::Hello {
        min_version: 1,
        max_version: 1,
        agent: "a".repeat(65_536),
    };
    assert_eq!(
        encode_control(&long_agent, &mut BytesMut::new()),
        Err(EncodeError::FieldTooLong {
            field: "agent",
            len: 65_536,
            max: 65_535
        })
    );
}

proptest! {
    /// A code without a named variant survives the wire as the same number.
    #[test]
    fn unknown_code_values_keep_their_wire_value(refuse in any::<u8>(), go_away in any::<u16>()) {
        let refused = ControlMessage::Refused {
            name: "a".into(),
            code: RefuseCode::Other(refuse),
            reason: String::new(),
        };
        let bytes = encode(&refused);
        prop_assert_eq!(bytes[7], refuse, "code byte follows the 1-byte name");
        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = decode_control(&mut buf).expect("valid").expect("complete");
        prop_assert_eq!(encode(&decoded), bytes);

        let code = GoAwayCode::from_u16(go_away);
        prop_assert_eq!(code.to_u16(), go_away);
        prop_assert_eq!(GoAwayCode::Other(go_away).to_u16(), go_away);
    }
}

// ---------------------------------------------------------------------------------------------
// Route names

proptest! {
    #[test]
    fn route_name_rule(name in name_candidate()) {
        let valid = is_route_name(&name);
        let verdict = validate_name(&name);
        prop_assert_eq!(verdict.is_ok(), valid, "{:?}: {:?}", name, verdict);
        if let Err(NameError::TooLong(n)) = verdict {
            prop_assert!(n > 63, "{:?} reported as too long with length {}", name, n);
        }

        // Register and StreamHeader refuse invalid names on encode, leaving dst untouched...
        let mut dst = BytesMut::new();
        let register = ControlMessage::Register { name: name.clone() };
        let header = StreamHeader {
            kind: StreamKind::Http,
            route: name.clone(),
            client: SocketAddr::from(([127, 0, 0, 1], 80)),
        };
        match &verdict {
            Ok(()) => {
                prop_assert!(encode_control(&register, &mut dst).is_ok());
                prop_assert!(header.encode(&mut dst).is_ok());
            }
            Err(e) => {
                prop_assert_eq!(encode_control(&register, &mut dst), Err(EncodeError::Name(e.clone())));
                prop_assert_eq!(header.encode(&mut dst), Err(EncodeError::Name(e.clone())));
                prop_assert!(dst.is_empty());
            }
        }

        // ...and on decode, from frames built by hand.
        if let Ok(len) = u8::try_from(name.len()) {
            let mut body = vec![len];
            body.extend_from_slice(name.as_bytes());
            let mut buf = BytesMut::from(&control_frame(3, &body)[..]);
            let expected = verdict.clone().map(|()| Some(register)).map_err(DecodeError::Name);
            prop_assert_eq!(decode_control(&mut buf), expected);

            let mut body = vec![1, len];
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(&[4, 127, 0, 0, 1, 0, 80]);
            let mut buf = BytesMut::from(&stream_frame(&body)[..]);
            let expected = verdict.map(|()| Some(header)).map_err(DecodeError::Name);
            prop_assert_eq!(decode_stream_header(&mut buf), expected);
        }
    }
}

#[test]
fn too_long_reports_the_length_that_was_checked() {
    // 32 two-byte characters: 64 bytes. Reporting "32 ... at most 63" would contradict itself.
    let name = "é".repeat(32);
    assert_eq!(validate_name(&name), Err(NameError::TooLong(64)));
    assert_eq!(validate_name(&"a".repeat(64)), Err(NameError::TooLong(64)));
}

// ---------------------------------------------------------------------------------------------
// Stream headers

proptest! {
    #[test]
    fn stream_header_round_trip(header in stream_header()) {
        let bytes = encode_header(&header);
        let declared = u16::from_be_bytes([bytes[1], bytes[2]]);
        prop_assert_eq!(usize::from(declared), bytes.len() - 3, "length prefix");
        let family = bytes[5 + header.route.len()];
        prop_assert_eq!(family, if header.client.is_ipv4() { 4 } else { 6 });
        let mut buf = BytesMut::from(&bytes[..]);
        prop_assert_eq!(decode_stream_header(&mut buf), Ok(Some(header)));
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
    }

    #[test]
    fn stream_header_leaves_the_payload(header in stream_header(), payload in vec(any::<u8>(), 0..64)) {
        let mut buf = BytesMut::from(&encode_header(&header)[..]);
        buf.extend_from_slice(&payload);
        prop_assert_eq!(decode_stream_header(&mut buf), Ok(Some(header)));
        prop_assert_eq!(&buf[..], &payload[..]);
    }

    #[test]
    fn stream_header_split_at_every_byte(header in stream_header()) {
        assert_split_everywhere(decode_stream_header, &encode_header(&header), &header)?;
    }

    #[test]
    fn stream_header_fed_byte_by_byte(header in stream_header()) {
        assert_byte_by_byte(decode_stream_header, &encode_header(&header), &header)?;
    }

    #[test]
    fn stream_headers_concatenated_decode_in_order(headers in vec(stream_header(), 1..5)) {
        let mut buf = BytesMut::new();
        for header in &headers {
            header.encode(&mut buf).expect("generated headers are valid");
        }
        for header in headers {
            prop_assert_eq!(decode_stream_header(&mut buf), Ok(Some(header)));
        }
        prop_assert_eq!(decode_stream_header(&mut buf), Ok(None));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn stream_header_oversized_length_refused_from_prefix(len in (MAX_STREAM_HEADER as u16 + 1)..=u16::MAX) {
        let mut buf = BytesMut::from(&[1][..]);
        buf.extend_from_slice(&len.to_be_bytes());
        prop_assert_eq!(
            decode_stream_header(&mut buf),
            Err(DecodeError::TooLarge { len: usize::from(len), max: MAX_STREAM_HEADER })
        );
    }

    #[test]
    fn stream_header_unknown_version_refused_from_first_byte(
        version in any::<u8>().prop_filter("version 1", |v| *v != 1),
        rest in vec(any::<u8>(), 0..16),
    ) {
        for n in 0..=rest.len() {
            let mut buf = BytesMut::from(&[version][..]);
            buf.extend_from_slice(&rest[..n]);
            prop_assert_eq!(decode_stream_header(&mut buf), Err(DecodeError::UnknownVersion(version)));
        }
    }

    #[test]
    fn stream_header_arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        check_stream_headers(&bytes);
    }

    #[test]
    fn stream_header_arbitrary_bodies(body in vec(any::<u8>(), 0..96)) {
        let frame = stream_frame(&body);
        let mut buf = BytesMut::from(&frame[..]);
        match decode_stream_header(&mut buf) {
            Ok(Some(header)) => prop_assert_eq!(encode_header(&header), frame),
            Ok(None) => prop_assert!(false, "a complete header asked for more bytes"),
            Err(_) => {}
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn stream_header_trailing_bytes_in_body_refused(
        header in stream_header(),
        extra in vec(any::<u8>(), 1..16),
    ) {
        let mut body = encode_header(&header)[3..].to_vec();
        body.extend_from_slice(&extra);
        let mut buf = BytesMut::from(&stream_frame(&body)[..]);
        prop_assert_eq!(decode_stream_header(&mut buf), Err(DecodeError::Trailing(extra.len())));
    }

    #[test]
    fn stream_header_mutated(
        header in stream_header(),
        at in any::<Index>(),
        value in any::<u8>(),
    ) {
        let original = encode_header(&header);
        let mut bytes = original.clone();
        let at = at.index(bytes.len());
        bytes[at] = value;
        let report = check_stream_headers(&bytes);
        if bytes == original {
            prop_assert_eq!(report, Report { decoded: 1, end: End::NeedMore(0) });
        }
    }
}

#[test]
fn stream_header_size_limit_boundary() {
    let at_limit = u16::try_from(MAX_STREAM_HEADER).expect("the limit fits the u16 prefix");
    let mut buf = BytesMut::from(&[1][..]);
    buf.extend_from_slice(&at_limit.to_be_bytes());
    assert_eq!(
        decode_stream_header(&mut buf),
        Ok(None),
        "a {MAX_STREAM_HEADER}-byte header is waited for"
    );
    let mut buf = BytesMut::from(&[1][..]);
    buf.extend_from_slice(&(at_limit + 1).to_be_bytes());
    assert_eq!(
        decode_stream_header(&mut buf),
        Err(DecodeError::TooLarge {
            len: MAX_STREAM_HEADER + 1,
            max: MAX_STREAM_HEADER
        })
    );
}

#[test]
fn ipv6_scope_id_and_flow_info_are_not_sent() {
    let header = StreamHeader {
        kind: StreamKind::Http,
        route: "a".into(),
        client: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 8080, 7, 3)),
    };
    let mut buf = BytesMut::from(&encode_header(&header)[..]);
    let decoded = decode_stream_header(&mut buf)
        .expect("valid")
        .expect("complete");
    assert_eq!(
        decoded.client,
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 8080, 0, 0))
    );
}
