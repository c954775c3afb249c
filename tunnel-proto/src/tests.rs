//! Table tests of the codecs. Property tests, golden vectors and the fuzz-corpus replay live
//! in `tests/` of this crate.

use bytes::BytesMut;

use super::*;

#[test]
fn version_negotiation() {
    assert_eq!(negotiate_version(1, 1), Some(1));
    assert_eq!(negotiate_version(1, 9), Some(MAX_VERSION));
    assert_eq!(negotiate_version(2, 9), Some(3));
    assert_eq!(
        negotiate_version(1, 1),
        Some(1),
        "a v1 provider still gets v1"
    );
    assert_eq!(negotiate_version(1, 2), Some(2), "a v2 provider gets v2");
    assert_eq!(negotiate_version(3, 9), Some(3));
    assert_eq!(negotiate_version(4, 9), None);
    assert_eq!(negotiate_version(0, 0), None);
}

#[test]
fn control_round_trip_each_type() {
    let msgs = [
        ControlMessage::Hello {
            min_version: 1,
            max_version: 1,
            agent: "peercomputed/0.1".into(),
        },
        ControlMessage::Register {
            name: "blog".into(),
        },
        ControlMessage::GoAway {
            code: GoAwayCode::Shutdown,
            message: "bye".into(),
        },
        ControlMessage::RegisterFleet {
            name: "web".into(),
            fleet: [3; FLEET_ID_LEN],
            group: "production".into(),
        },
    ];
    for msg in msgs {
        let mut buf = BytesMut::new();
        encode_control(&msg, &mut buf).expect("encode");
        assert_eq!(decode_control(&mut buf).expect("decode"), Some(msg));
        assert!(buf.is_empty());
    }
}

#[test]
fn oversize_refused_from_prefix() {
    let mut buf = BytesMut::from(&[0x01, 0xff, 0xff, 0xff, 0xff][..]);
    assert!(matches!(
        decode_control(&mut buf),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn unknown_type_refused_on_first_byte() {
    let mut buf = BytesMut::from(&[0x7f][..]);
    assert_eq!(
        decode_control(&mut buf),
        Err(DecodeError::UnknownType(0x7f))
    );
}

#[test]
fn register_rejects_bad_names() {
    for bad in ["", "UPPER", "-x", "x-", "a.b", &"a".repeat(64)] {
        assert!(validate_name(bad).is_err(), "{bad:?}");
    }
    for good in ["a", "blog", "my-app-2", &"a".repeat(63)] {
        assert!(validate_name(good).is_ok(), "{good:?}");
    }
}
