//! Pull failures sorted from the engine's messages, pull arguments, and the message of a
//! digest mismatch.

use super::*;

#[test]
fn references_split_into_name_and_tag() {
    let cases = [
        ("nginx", ("nginx", Some("latest"))),
        ("nginx:1.27", ("nginx", Some("1.27"))),
        ("library/nginx:1.27", ("library/nginx", Some("1.27"))),
        ("localhost:5000/app", ("localhost:5000/app", Some("latest"))),
        ("localhost:5000/app:v2", ("localhost:5000/app", Some("v2"))),
        ("app@sha256:abc", ("app@sha256:abc", None)),
        (
            "ghcr.io/o/app:1@sha256:abc",
            ("ghcr.io/o/app:1@sha256:abc", None),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(split_reference(input), expected, "{input}");
    }
}

#[test]
fn a_digest_mismatch_says_what_was_found_and_what_to_do() {
    let expected = format!("sha256:{}", "a".repeat(64));
    let found = format!("sha256:{}", "b".repeat(64));
    let err = ImageError::DigestMismatch {
        image: format!("127.0.0.1:5000/app@{expected}"),
        expected: expected.clone(),
        found: vec![found.clone()],
    };
    assert_eq!(
        err.to_string(),
        format!(
            "image 127.0.0.1:5000/app@{expected} was fetched but the engine holds {found} for it, not the pinned {expected}: refusing to use it. Check what the registry serves for this repository (resolve the tag again) and pin the digest it reports"
        )
    );
    let none = ImageError::DigestMismatch {
        image: "app@x".into(),
        expected,
        found: vec![],
    };
    assert!(
        none.to_string()
            .contains("the engine holds no digest for it")
    );
}

#[test]
fn pull_failures_table() {
    let cases = [
        (
            r#"Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.0.0.53:53: no such host"#,
            PullFailure::Unreachable,
        ),
        (
            r#"Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused"#,
            PullFailure::Unreachable,
        ),
        (
            "pull access denied for nosuch, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
            PullFailure::NotFound,
        ),
        (
            "manifest for nginx:nosuch not found: manifest unknown: manifest unknown",
            PullFailure::NotFound,
        ),
        (
            "no matching manifest for linux/amd64 in the manifest list entries",
            PullFailure::NoVariant,
        ),
        (
            "write /var/lib/docker/tmp: no space left on device",
            PullFailure::Other,
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(classify_pull_failure(message), expected, "{message}");
    }
}
