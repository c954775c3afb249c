//! Table tests of the volume and device additions to the control plane: the deploy request's
//! attachments on the wire, the raw `VolumeData` frames and the import decoder, the volume
//! requests' rules, the new error codes. (The attachment rules themselves are tested in
//! `attach.rs`, the messages' own rules in `volumes.rs`.)

use bytes::BytesMut;

use super::tests::{frame, with_attachments};
use super::*;

/// A deploy request with volumes and devices: the fields follow the old ones, in order; a
/// request without them keeps its old bytes (pinned by `golden_frame` and the corpus seeds).
#[test]
fn golden_deploy_with_attachments() {
    let mut buf = BytesMut::new();
    encode_request(&Request::Deploy(with_attachments()), &mut buf).expect("encode");
    let json = concat!(
        r#"{"image":"ghcr.io/acme/notes:1.4","name":"notes","port":8080,"env":[],"#,
        r#""cpu_millis":null,"memory_bytes":null,"#,
        r#""volumes":[{"name":"data","path":"/var/lib/notes","size_bytes":2147483648}],"#,
        r#""devices":["arm","cam"],"volume_exclusive":true}"#,
    );
    assert_eq!(buf[0], 0x10);
    assert_eq!(&buf[1..5], &(json.len() as u32).to_be_bytes());
    assert_eq!(std::str::from_utf8(&buf[5..]), Ok(json));
    let mut plain = BytesMut::new();
    encode_request(
        &Request::Deploy(DeployRequest::new("nginx", 80)),
        &mut plain,
    )
    .expect("encode");
    assert_eq!(
        std::str::from_utf8(&plain[5..]),
        Ok(
            r#"{"image":"nginx","name":null,"port":80,"env":[],"cpu_millis":null,"memory_bytes":null}"#
        )
    );
}

#[test]
fn volume_data_is_raw_and_bounded() {
    let mut buf = BytesMut::new();
    let data = ControlPlaneMessage::VolumeData(bytes::Bytes::from_static(b"tar"));
    encode_control_plane(&data, &mut buf).expect("encode");
    assert_eq!(&buf[..], b"\x29\x00\x00\x00\x03tar");
    let too_big = ControlPlaneMessage::VolumeData(bytes::Bytes::from(vec![0; MAX_VOLUME_DATA + 1]));
    assert!(matches!(
        encode_control_plane(&too_big, &mut BytesMut::new()),
        Err(ControlPlaneEncodeError::TooLarge {
            ty: MessageType::VolumeData,
            ..
        })
    ));
    // The length is refused from the prefix alone, before the body arrives.
    let mut over = BytesMut::from(&[0x29, 0, 1, 0, 1][..]);
    assert_eq!(
        decode_control_plane(&mut over.clone()),
        Err(ControlPlaneDecodeError::TooLarge {
            len: MAX_VOLUME_DATA + 1,
            max: MAX_VOLUME_DATA
        })
    );
    assert_eq!(
        decode_import_data(&mut over),
        Err(ControlPlaneDecodeError::TooLarge {
            len: MAX_VOLUME_DATA + 1,
            max: MAX_VOLUME_DATA
        })
    );
}

#[test]
fn import_data_accepts_only_volume_data() {
    let mut buf = BytesMut::new();
    for chunk in [&b"abc"[..], b"de"] {
        encode_control_plane(
            &ControlPlaneMessage::VolumeData(bytes::Bytes::copy_from_slice(chunk)),
            &mut buf,
        )
        .expect("encode");
    }
    let mut got = Vec::new();
    while let Some(chunk) = decode_import_data(&mut buf).expect("decodes") {
        got.push(chunk);
    }
    assert_eq!(got, [&b"abc"[..], b"de"]);
    // An empty frame carries nothing and is refused (a stream of them would keep an import
    // alive forever); the stream decoder, reading an export, still takes it.
    let empty = [0x29, 0, 0, 0, 0];
    assert_eq!(
        decode_import_data(&mut BytesMut::from(&empty[..])),
        Err(ControlPlaneDecodeError::EmptyVolumeData)
    );
    assert_eq!(
        decode_control_plane(&mut BytesMut::from(&empty[..])),
        Ok(Some(ControlPlaneMessage::VolumeData(bytes::Bytes::new())))
    );
    // Partial: nothing consumed.
    let mut partial = BytesMut::from(&[0x29, 0, 0, 0, 4, b'a'][..]);
    assert_eq!(decode_import_data(&mut partial), Ok(None));
    assert_eq!(partial.len(), 6);
    // Every other type is refused from its byte alone.
    for ty in MessageType::ALL {
        if ty != MessageType::VolumeData {
            assert_eq!(
                decode_import_data(&mut BytesMut::from(&[ty.to_u8()][..])),
                Err(ControlPlaneDecodeError::NotVolumeData(ty))
            );
        }
    }
    assert_eq!(
        decode_import_data(&mut frame(0x18, "{}")),
        Err(ControlPlaneDecodeError::NotVolumeData(
            MessageType::VolumeImportRequest
        ))
    );
    assert_eq!(
        decode_import_data(&mut BytesMut::from(&[0x7f][..])),
        Err(ControlPlaneDecodeError::UnknownType(0x7f))
    );
}

#[test]
fn volume_requests_are_validated_on_decode() {
    for (ty, json) in [
        (0x16, r#"{"volume":"../etc"}"#),
        (0x17, r#"{"volume":"blog"}"#),
        (0x17, r#"{"volume":"/var/lib/docker/volumes/x"}"#),
        (
            0x18,
            r#"{"volume":"blog/data","size_bytes":0,"sha256":"00"}"#,
        ),
    ] {
        let got = decode_request(&mut frame(ty, json));
        assert!(
            matches!(got, Err(ControlPlaneDecodeError::Invalid { .. })),
            "{json}: {got:?}"
        );
    }
    let got = decode_request(&mut frame(0x15, r#"{"all":true}"#));
    assert!(
        matches!(got, Err(ControlPlaneDecodeError::Json { .. })),
        "{got:?}"
    );
    // Volume requests travel signed only.
    assert_eq!(
        decode_control_plane(&mut frame(0x18, "{}")),
        Err(ControlPlaneDecodeError::UnsignedRequest(
            MessageType::VolumeImportRequest
        ))
    );
}

/// Old clients read the new error codes as `Unknown` (and so exit with the generic code).
#[test]
fn new_error_codes_spell_and_old_ones_read_unknown() {
    for (code, json) in [
        (ErrorCode::NotGranted, "\"not_granted\""),
        (ErrorCode::InUse, "\"in_use\""),
    ] {
        assert_eq!(serde_json::to_string(&code).expect("json"), json);
        assert_eq!(serde_json::from_str::<ErrorCode>(json).expect("json"), code);
    }
    assert_eq!(
        serde_json::from_str::<ErrorCode>("\"from_the_future\"").expect("json"),
        ErrorCode::Unknown
    );
}

/// `StatusResponse` and `DeploymentSummary` as peerctl before volumes read them (52fbcfc,
/// `deny_unknown_fields`): what an old client makes of a new provider's answers.
mod before_volumes {
    use serde::Deserialize;

    use super::DeploymentState;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(super) struct StatusResponse {
        pub id: String,
        pub name: String,
        pub image: String,
        pub url: String,
        pub state: DeploymentState,
        pub created_at: u64,
        #[serde(default)]
        pub started_at: Option<u64>,
        #[serde(default)]
        pub uptime_secs: Option<u64>,
        pub restarts: u32,
        #[serde(default)]
        pub cpu_percent: Option<f64>,
        #[serde(default)]
        pub memory_bytes: Option<u64>,
        #[serde(default)]
        pub memory_limit: Option<u64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub(super) struct DeploymentSummary {
        pub id: String,
        pub name: String,
        pub image: String,
        pub url: String,
        pub state: DeploymentState,
        pub created_at: u64,
    }
}

/// An old peerctl reads a new provider's `status` and `ls` answers while a deployment has no
/// volume, device or stop reason (the fields are then absent), and fails on them otherwise:
/// a deliberate, documented break ("upgrade peerctl before the providers"), pinned here so it
/// cannot grow unnoticed.
#[test]
fn old_clients_read_answers_without_the_new_fields_only() {
    let status = StatusResponse {
        id: "d-1".into(),
        name: "blog".into(),
        image: "nginx:1.27".into(),
        url: "https://blog.example.com".into(),
        state: DeploymentState::Running,
        created_at: 1,
        started_at: None,
        uptime_secs: None,
        restarts: 0,
        cpu_percent: Some(1.5),
        memory_bytes: None,
        memory_limit: None,
        volumes: Vec::new(),
        devices: Vec::new(),
        stopped_reason: None,
    };
    let plain = serde_json::to_string(&status).expect("json");
    assert!(serde_json::from_str::<before_volumes::StatusResponse>(&plain).is_ok());
    let with_device = StatusResponse {
        devices: vec!["arm".into()],
        ..status
    };
    let json = serde_json::to_string(&with_device).expect("json");
    let err = serde_json::from_str::<before_volumes::StatusResponse>(&json).expect_err("new");
    assert!(err.to_string().contains("unknown field `devices`"), "{err}");

    let summary = DeploymentSummary {
        id: "d-1".into(),
        name: "blog".into(),
        image: "nginx:1.27".into(),
        url: "https://blog.example.com".into(),
        state: DeploymentState::Exited,
        created_at: 1,
        stopped_reason: None,
    };
    let plain = serde_json::to_string(&summary).expect("json");
    assert!(serde_json::from_str::<before_volumes::DeploymentSummary>(&plain).is_ok());
    let stopped = DeploymentSummary {
        stopped_reason: Some("over its share".into()),
        ..summary
    };
    let json = serde_json::to_string(&stopped).expect("json");
    assert!(serde_json::from_str::<before_volumes::DeploymentSummary>(&json).is_err());
}
