//! Table tests of the control-plane codec: round trips of every message, the frame rules, and
//! the hostile-options table (a deploy request smuggling Docker options is refused by
//! decoding). Signing has its own tests (`signing_tests.rs`); property tests and the fuzz
//! corpus replay live in `tests/` of the crate.

use bytes::{BufMut, BytesMut};

use super::*;

pub(super) fn frame(ty: u8, json: &str) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u8(ty);
    b.put_u32(json.len() as u32);
    b.put_slice(json.as_bytes());
    b
}

fn decode_deploy_json(json: &str) -> Result<Option<Request>, ControlPlaneDecodeError> {
    decode_request(&mut frame(0x10, json))
}

fn responses() -> Vec<ControlPlaneMessage> {
    vec![
        ControlPlaneMessage::DeployProgress(DeployProgress {
            stage: DeployStage::Pulling,
            message: "pulling nginx:1.27".into(),
            layer: Some("sha256:abc".into()),
            current: Some(10),
            total: Some(u64::MAX),
        }),
        ControlPlaneMessage::DeployResponse(DeployResponse {
            id: "d-1".into(),
            name: "blog".into(),
            url: Some("https://blog.apps.example.com".into()),
            peer: "12D3KooWxyz".into(),
            image: "nginx:1.27".into(),
            status: DeploymentState::Running,
            no_url: None,
        }),
        ControlPlaneMessage::DeployResponse(DeployResponse {
            id: "d-2".into(),
            name: "offline".into(),
            url: None,
            peer: "12D3KooWxyz".into(),
            image: "nginx:1.27".into(),
            status: DeploymentState::Running,
            no_url: Some(NoUrl::NoGateway),
        }),
        ControlPlaneMessage::StopResponse(StopResponse {
            id: "d-1".into(),
            removed: true,
        }),
        ControlPlaneMessage::StatusResponse(StatusResponse {
            id: "d-1".into(),
            name: "blog".into(),
            image: "nginx:1.27".into(),
            url: "https://blog.apps.example.com".into(),
            state: DeploymentState::Restarting,
            created_at: 1_700_000_000,
            started_at: Some(1_700_000_001),
            uptime_secs: None,
            restarts: 2,
            cpu_percent: Some(0.1 + 0.2),
            memory_bytes: Some(1 << 20),
            memory_limit: Some(1 << 28),
            volumes: Vec::new(),
            devices: Vec::new(),
            stopped_reason: None,
        }),
        ControlPlaneMessage::StatusResponse(StatusResponse {
            id: "d-2".into(),
            name: "notes".into(),
            image: "ghcr.io/acme/notes:1.4".into(),
            url: "https://notes.apps.example.com".into(),
            state: DeploymentState::Exited,
            created_at: 1_700_000_000,
            started_at: None,
            uptime_secs: None,
            restarts: 0,
            cpu_percent: None,
            memory_bytes: None,
            memory_limit: None,
            volumes: vec![VolumeUsage {
                volume: "notes/data".into(),
                used_bytes: Some(2_300_000_000),
                share_bytes: 2 << 30,
            }],
            devices: vec!["arm".into()],
            stopped_reason: Some(
                "stopped by the provider: volume notes/data is over its share".into(),
            ),
        }),
        ControlPlaneMessage::ListResponse(ListResponse {
            deployments: vec![DeploymentSummary {
                id: "d-1".into(),
                name: "blog".into(),
                image: "nginx:1.27".into(),
                url: "https://blog.apps.example.com".into(),
                state: DeploymentState::Exited,
                created_at: 1,
                stopped_reason: Some("over its share".into()),
            }],
        }),
        ControlPlaneMessage::VolumesResponse(VolumesResponse {
            volumes: vec![VolumeInfo {
                volume: "blog/data".into(),
                used_bytes: None,
                share_bytes: 1 << 30,
                in_use_by: vec!["blog (running)".into()],
                created_at: Some(1_700_000_000),
            }],
        }),
        ControlPlaneMessage::VolumeRemoved(VolumeRemoved {
            volume: "blog/data".into(),
        }),
        ControlPlaneMessage::VolumeData(bytes::Bytes::from_static(b"data/\0\xff")),
        ControlPlaneMessage::VolumeData(bytes::Bytes::from(vec![7; MAX_VOLUME_DATA])),
        ControlPlaneMessage::VolumeData(bytes::Bytes::new()),
        ControlPlaneMessage::VolumeEnd(VolumeEnd {
            bytes: 10240,
            sha256: "ab".repeat(32),
        }),
        ControlPlaneMessage::LogEntry(LogEntry {
            stream: LogStream::Stderr,
            line: "listening on :80 ✓ \u{0}\n".into(),
            timestamp: Some("2026-11-21T15:00:00.123456789Z".into()),
        }),
        ControlPlaneMessage::LogsEnd(LogsEnd {}),
        ControlPlaneMessage::Error(ErrorResponse {
            code: ErrorCode::LimitExceeded,
            message: "asked 2000m CPU, 500m available".into(),
        }),
    ]
}

fn requests() -> Vec<Request> {
    let mut deploy = DeployRequest::new("ghcr.io/o/app:v1", 8080);
    deploy.name = Some("my-app".into());
    deploy.env = vec![EnvVar {
        key: "A".into(),
        value: "x=y".into(),
    }];
    deploy.cpu_millis = Some(500);
    deploy.memory_bytes = Some(256 << 20);
    vec![
        Request::Deploy(DeployRequest::new("nginx", 80)),
        Request::Deploy(deploy),
        Request::Stop(StopRequest { id: "d-1".into() }),
        Request::Status(StatusRequest { id: "blog".into() }),
        Request::List(ListRequest {}),
        Request::Logs(LogsRequest {
            id: "d-1".into(),
            follow: true,
            tail: Some(100),
        }),
        Request::Deploy(with_attachments()),
        Request::Volumes(VolumesRequest {}),
        Request::VolumeRemove(VolumeRemoveRequest {
            volume: "blog/data".into(),
        }),
        Request::VolumeExport(VolumeExportRequest {
            volume: "blog/data".into(),
        }),
        Request::VolumeImport(VolumeImportRequest {
            volume: "blog/data".into(),
            size_bytes: 10240,
            sha256: "0f".repeat(32),
            share_bytes: Some(2 << 30),
            replace: true,
        }),
    ]
}

pub(super) fn with_attachments() -> DeployRequest {
    DeployRequest {
        name: Some("notes".into()),
        volumes: vec![VolumeMount {
            name: "data".into(),
            path: "/var/lib/notes".into(),
            size_bytes: Some(2 << 30),
        }],
        devices: vec!["arm".into(), "cam".into()],
        volume_exclusive: true,
        ..DeployRequest::new("ghcr.io/acme/notes:1.4", 8080)
    }
}

#[test]
fn every_message_round_trips() {
    for msg in responses() {
        let mut buf = BytesMut::new();
        encode_control_plane(&msg, &mut buf).expect("encode");
        assert_eq!(decode_control_plane(&mut buf), Ok(Some(msg)));
        assert!(buf.is_empty());
    }
    for req in requests() {
        let mut buf = BytesMut::new();
        encode_request(&req, &mut buf).expect("encode");
        assert_eq!(buf[0], req.message_type().to_u8());
        assert_eq!(decode_request(&mut buf), Ok(Some(req)));
        assert!(buf.is_empty());
    }
}

#[test]
fn golden_frame() {
    let mut buf = BytesMut::new();
    let req = Request::Stop(StopRequest { id: "d-1".into() });
    encode_request(&req, &mut buf).expect("encode");
    assert_eq!(&buf[..], b"\x11\x00\x00\x00\x0c{\"id\":\"d-1\"}");
    let mut buf = BytesMut::new();
    encode_control_plane(&ControlPlaneMessage::LogsEnd(LogsEnd {}), &mut buf).expect("encode");
    assert_eq!(&buf[..], b"\x26\x00\x00\x00\x02{}");
}

#[test]
fn type_bytes_are_stable_and_distinct() {
    let all = MessageType::ALL;
    for (i, a) in all.iter().enumerate() {
        assert_eq!(MessageType::from_u8(a.to_u8()), Some(*a));
        assert!(all[i + 1..].iter().all(|b| b.to_u8() != a.to_u8()));
    }
    assert_eq!(MessageType::from_u8(0x00), None);
    assert_eq!(MessageType::Signed.to_u8(), 0x01);
    assert_eq!(MessageType::DeployRequest.to_u8(), 0x10);
    assert_eq!(MessageType::Error.to_u8(), 0x2f);
}

#[test]
fn frame_rules() {
    use ControlPlaneDecodeError as E;
    let too_large = MAX_CONTROL_PLANE_FRAME as u32 + 1;
    let cases: Vec<(Vec<u8>, Result<bool, E>)> = vec![
        // (bytes, Ok(whether a message comes out) or the error)
        (vec![], Ok(false)),
        (vec![0x26], Ok(false)),
        (vec![0x26, 0, 0, 0, 2, b'{'], Ok(false)),
        (vec![0x26, 0, 0, 0, 2, b'{', b'}'], Ok(true)),
        (vec![0x7f], Err(E::UnknownType(0x7f))),
        (vec![0x00], Err(E::UnknownType(0x00))),
        (
            vec![0x10],
            Err(E::UnsignedRequest(MessageType::DeployRequest)),
        ),
        (
            vec![0x14, 0, 0],
            Err(E::UnsignedRequest(MessageType::LogsRequest)),
        ),
        (
            [&[0x01][..], &too_large.to_be_bytes()].concat(),
            Err(E::TooLarge {
                len: MAX_CONTROL_PLANE_FRAME + 1,
                max: MAX_CONTROL_PLANE_FRAME,
            }),
        ),
        (
            vec![0x26, 0xff, 0xff, 0xff, 0xff],
            Err(E::TooLarge {
                len: 0xffff_ffff,
                max: MAX_CONTROL_PLANE_FRAME,
            }),
        ),
    ];
    for (bytes, expected) in cases {
        let mut buf = BytesMut::from(&bytes[..]);
        let got = decode_control_plane(&mut buf).map(|m| m.is_some());
        assert_eq!(got, expected, "{bytes:02x?}");
        if got == Ok(false) {
            assert_eq!(&buf[..], &bytes[..], "Ok(None) consumes nothing");
        }
    }
    // On the request decoder, answers are misplaced.
    assert_eq!(
        decode_request(&mut BytesMut::from(&[0x21][..])),
        Err(E::NotARequest(MessageType::DeployResponse))
    );
    assert_eq!(
        decode_request(&mut BytesMut::from(&[0x01][..])),
        Err(E::NotARequest(MessageType::Signed))
    );
}

#[test]
fn json_bodies_are_strict() {
    let bad = [
        (0x26, r#"{"extra":1}"#),
        (0x26, "[1]"),
        (0x26, "{} x"),
        (0x22, r#"{"id":"a","removed":true,"removed":false}"#),
        (0x22, r#"{"id":"a"}"#),
        (0x25, r#"{"stream":"stdin","line":"x","timestamp":null}"#),
        (0x2f, r#"{"code":7,"message":"x"}"#),
        (
            0x23,
            r#"{"id":"a","name":"b","image":"c","url":"d","state":"running","created_at":1,"restarts":0,"cpu_percent":1e999}"#,
        ),
        (0x26, "{\"\u{0}\":1}"),
        (0x26, "\u{feff}{}"),
    ];
    for (ty, json) in bad {
        let got = decode_control_plane(&mut frame(ty, json));
        assert!(
            matches!(got, Err(ControlPlaneDecodeError::Json { .. })),
            "{json}: {got:?}"
        );
    }
    // Unknown enum values from a newer provider stay readable.
    let got = decode_control_plane(&mut frame(0x2f, r#"{"code":"quota_gone","message":"x"}"#));
    let Ok(Some(ControlPlaneMessage::Error(e))) = got else {
        panic!("{got:?}")
    };
    assert_eq!(e.code, ErrorCode::Unknown);
    let json = r#"{"id":"a","name":"b","url":"u","peer":"p","image":"i","status":"hibernating"}"#;
    let got = decode_control_plane(&mut frame(0x21, json));
    assert!(
        matches!(got, Ok(Some(ControlPlaneMessage::DeployResponse(ref r))) if r.status == DeploymentState::Unknown),
        "{got:?}"
    );
    let json = r#"{"id":"a","name":"b","url":null,"peer":"p","image":"i","status":"running","no_url":"asleep"}"#;
    let got = decode_control_plane(&mut frame(0x21, json));
    assert!(
        matches!(got, Ok(Some(ControlPlaneMessage::DeployResponse(ref r))) if r.url.is_none() && r.no_url == Some(NoUrl::Unknown)),
        "{got:?}"
    );
}

/// A deployment without a URL says `"url":null` and why; one with a URL carries no reason, so
/// its bytes are what they were before `no_url` existed.
#[test]
fn deploy_response_without_a_url_says_why() {
    let mut response = DeployResponse {
        id: "a".into(),
        name: "b".into(),
        url: None,
        peer: "p".into(),
        image: "i".into(),
        status: DeploymentState::Running,
        no_url: Some(NoUrl::Pending),
    };
    assert_eq!(
        serde_json::to_string(&response).expect("json"),
        r#"{"id":"a","name":"b","url":null,"peer":"p","image":"i","status":"running","no_url":"pending"}"#
    );
    response.url = Some("https://b.apps.example.com".into());
    response.no_url = None;
    assert_eq!(
        serde_json::to_string(&response).expect("json"),
        r#"{"id":"a","name":"b","url":"https://b.apps.example.com","peer":"p","image":"i","status":"running"}"#
    );
}

#[test]
fn encode_refuses_invalid_and_oversized_messages() {
    let mut buf = BytesMut::new();
    let bad = Request::Deploy(DeployRequest::new("nginx", 0));
    assert!(matches!(
        encode_request(&bad, &mut buf),
        Err(ControlPlaneEncodeError::Invalid {
            source: InvalidMessage::PortZero,
            ..
        })
    ));
    let nan = responses()
        .into_iter()
        .find_map(|m| match m {
            ControlPlaneMessage::StatusResponse(mut s) => {
                s.cpu_percent = Some(f64::NAN);
                Some(ControlPlaneMessage::StatusResponse(s))
            }
            _ => None,
        })
        .expect("a status response");
    assert!(encode_control_plane(&nan, &mut buf).is_err());
    let huge = ControlPlaneMessage::LogEntry(LogEntry {
        stream: LogStream::Stdout,
        line: "x".repeat(MAX_CONTROL_PLANE_FRAME),
        timestamp: None,
    });
    assert!(matches!(
        encode_control_plane(&huge, &mut buf),
        Err(ControlPlaneEncodeError::TooLarge { .. })
    ));
    assert!(buf.is_empty(), "a refused message writes nothing");
}

/// A minimal valid deploy request as JSON, with `extra` spliced in before the closing brace.
fn deploy_json(extra: &str) -> String {
    format!(r#"{{"image":"nginx:1.27","port":80{extra}}}"#)
}

#[test]
fn hostile_options_are_refused() {
    // Positive control: the minimal request decodes.
    assert_eq!(
        decode_deploy_json(&deploy_json("")),
        Ok(Some(Request::Deploy(DeployRequest::new("nginx:1.27", 80))))
    );
    let many_env: String = (0..65)
        .map(|i| format!(r#"{{"key":"K{i}","value":"v"}}"#))
        .collect::<Vec<_>>()
        .join(",");
    let big_env = format!(r#"{{"key":"BIG","value":"{}"}}"#, "x".repeat(MAX_ENV_BYTES));
    let unknown_field = [
        r#","privileged":true"#,
        r#","cap_add":["SYS_ADMIN"]"#,
        r#","CapAdd":["ALL"]"#,
        r#","binds":["/:/host"]"#,
        r#","binds":["/var/run/docker.sock:/var/run/docker.sock"]"#,
        r#","mounts":[{"type":"bind","source":"/","target":"/host"}]"#,
        r#","volumes":{"/data":{}}"#,
        r#","volumes":[{"name":"data","path":"/data","type":"bind"}]"#,
        r#","volumes":[{"name":"data","path":"/data","source":"/"}]"#,
        r#","volumes":["/:/host"]"#,
        r#","network_mode":"host""#,
        r#","pid_mode":"host""#,
        r#","ipc_mode":"host""#,
        r#","userns_mode":"host""#,
        r#","sysctls":{"net.ipv4.ip_forward":"1"}"#,
        r#","workdir":"/proc/self/fd/7""#,
        r#","working_dir":"/proc/self/fd/7""#,
        r#","security_opt":["seccomp=unconfined","apparmor=unconfined"]"#,
        r#","user":"0:0""#,
        r#","entrypoint":["/bin/sh"]"#,
        r#","host_config":{"Privileged":true}"#,
        r#","env":[{"key":"A","value":"b","privileged":true}]"#,
        r#","port":81"#,
    ];
    // serde also reads a struct from an array of its fields in order; that form cannot carry
    // more than the fields either.
    let as_array = r#"["nginx:1.27",null,80,[],null,null,true]"#;
    assert!(matches!(
        decode_deploy_json(as_array),
        Err(ControlPlaneDecodeError::Json { .. })
    ));
    for extra in unknown_field {
        let got = decode_deploy_json(&deploy_json(extra));
        assert!(
            matches!(
                got,
                Err(ControlPlaneDecodeError::Json {
                    ty: MessageType::DeployRequest,
                    ..
                })
            ),
            "{extra}: {got:?}"
        );
    }
    let invalid = [
        (format!(r#","env":[{many_env}]"#), "TooManyEnv"),
        (format!(r#","env":[{big_env}]"#), "EnvTooLarge"),
        (
            r#","env":[{"key":"LD_PRELOAD=x","value":""}]"#.to_owned(),
            "EnvKeyChar",
        ),
        (r#","name":"../etc""#.to_owned(), "Name"),
        (r#","name":"UPPER""#.to_owned(), "Name"),
        (r#","cpu_millis":0"#.to_owned(), "Zero"),
        (r#","devices":["/dev/kvm"]"#.to_owned(), "DevicePath"),
        (
            r#","volumes":[{"name":"../etc","path":"/data"}]"#.to_owned(),
            "VolumeName",
        ),
        (
            r#","volumes":[{"name":"/var/run/docker.sock","path":"/var/run/docker.sock"}]"#
                .to_owned(),
            "VolumeName",
        ),
        (
            r#","volumes":[{"name":"data","path":"/proc"}]"#.to_owned(),
            "MountPath",
        ),
        (
            r#","volume_exclusive":true"#.to_owned(),
            "ExclusiveWithoutVolumes",
        ),
    ];
    for (extra, variant) in invalid {
        let got = decode_deploy_json(&deploy_json(&extra));
        let Err(ControlPlaneDecodeError::Invalid { source, .. }) = &got else {
            panic!("{extra}: {got:?}")
        };
        assert!(
            format!("{source:?}").starts_with(variant),
            "{extra}: {source:?}"
        );
    }
    for json in [
        r#"{"image":"--privileged","port":80}"#,
        r#"{"image":"nginx","port":0}"#,
    ] {
        assert!(
            matches!(
                decode_deploy_json(json),
                Err(ControlPlaneDecodeError::Invalid { .. })
            ),
            "{json}"
        );
    }
    assert!(matches!(
        decode_deploy_json(r#"{"image":"nginx","port":65536}"#),
        Err(ControlPlaneDecodeError::Json { .. })
    ));
    assert!(matches!(
        decode_deploy_json(r#"{"image":"nginx","port":-1}"#),
        Err(ControlPlaneDecodeError::Json { .. })
    ));
}

#[test]
fn error_messages_name_the_problem() {
    let got = decode_deploy_json(&deploy_json(r#","privileged":true"#));
    let msg = got.expect_err("refused").to_string();
    assert!(msg.contains("unknown field `privileged`"), "{msg}");
    let got = decode_deploy_json(r#"{"image":"nginx","port":80,"env":[{"key":"A=B","value":""}]}"#);
    let msg = got.expect_err("refused").to_string();
    assert!(
        msg.contains("A=B") && msg.contains("DeployRequest"),
        "{msg}"
    );
}
