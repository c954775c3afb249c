//! The admin API's OpenAPI document, as a live gateway serves it: it validates
//! (`python3 -m openapi_spec_validator`), it lists exactly the operations below, and the
//! gateway's real answers validate against the schemas it gives for them
//! (`tests/scripts/validate_openapi.py`, JSON Schema 2020-12).

use std::path::Path;
use std::process::Command;

use peercompute_tests::admin::AdminClient;
use peercompute_tests::{Alpn, GatewayOptions, Published, https_client, publish};
use serde_json::{Value, json};

/// Every operation of the admin listener: (path template, methods).
const OPERATIONS: &[(&str, &[&str])] = &[
    ("/api/v1/certificates", &["get"]),
    ("/api/v1/cluster", &["get"]),
    ("/api/v1/events", &["get"]),
    ("/api/v1/fleets", &["get"]),
    ("/api/v1/fleets/{fleet_id}/robots", &["get"]),
    ("/api/v1/names/{name}", &["delete"]),
    ("/api/v1/names/{name}/hold", &["delete"]),
    ("/api/v1/openapi.json", &["get"]),
    ("/api/v1/providers", &["get"]),
    ("/api/v1/providers/{peer_id}/disconnect", &["post"]),
    ("/api/v1/routes", &["get"]),
    ("/api/v1/traffic", &["get"]),
    ("/api/v1/whoami", &["get"]),
    ("/healthz", &["get"]),
    ("/metrics", &["get"]),
    ("/readyz", &["get"]),
];

fn python(args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}: run scripts/prerequisites"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("No module named") {
        panic!(
            "{text}\nrun scripts/prerequisites (installs openapi-spec-validator and jsonschema)"
        );
    }
    (out.status.success(), text)
}

#[tokio::test]
async fn the_document_validates_lists_every_operation_and_matches_the_answers() {
    let Published {
        gw,
        provider,
        backend: _backend,
    } = publish(GatewayOptions::default(), "app").await;
    let visitor = https_client(&gw, &["app"], Alpn::H1);
    for _ in 0..3 {
        visitor.get(gw.url("app", "/")).send().await.expect("visit");
    }
    let admin = AdminClient::new(gw.admin);
    let doc = admin.get_json("/api/v1/openapi.json").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let doc_path = dir.path().join("openapi.json");
    std::fs::write(&doc_path, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");

    // 1. A valid OpenAPI 3.1 document.
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let (ok, out) = python(&[
        "-m",
        "openapi_spec_validator",
        doc_path.to_str().expect("utf-8"),
    ]);
    assert!(ok, "openapi_spec_validator: {out}");

    // 2. Exactly the operations the gateway serves.
    let listed: Vec<(String, Vec<String>)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(p, item)| {
            let mut methods: Vec<String> = item
                .as_object()
                .expect("path item")
                .keys()
                .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                .cloned()
                .collect();
            methods.sort();
            (p.clone(), methods)
        })
        .collect();
    let want: Vec<(String, Vec<String>)> = OPERATIONS
        .iter()
        .map(|(p, m)| ((*p).to_owned(), m.iter().map(|s| (*s).to_owned()).collect()))
        .collect();
    assert_eq!(listed, want);

    // 3. Real answers match their schemas.
    let peer = provider.identity.peer_id().to_string();
    let unknown = peercompute_tests::TestProvider::identity()
        .peer_id()
        .to_string();
    let mut answers = Vec::new();
    for path in [
        "/api/v1/providers",
        "/api/v1/routes",
        "/api/v1/certificates",
        "/api/v1/traffic",
        "/api/v1/whoami",
        "/api/v1/fleets",
        "/api/v1/cluster",
    ] {
        answers.push(json!({"path": path, "method": "get", "status": 200,
            "body": admin.get_json(path).await}));
    }
    let mut record = |path: &str, method: &str, (status, body): (http::StatusCode, Value)| {
        answers
            .push(json!({"path": path, "method": method, "status": status.as_u16(), "body": body}));
    };
    let robots = admin
        .send(http::Method::GET, "/api/v1/fleets/nope/robots")
        .await;
    let status = robots.status();
    let body: Value = serde_json::from_str(&robots.text().await.expect("body")).expect("json");
    record("/api/v1/fleets/{fleet_id}/robots", "get", (status, body));
    let names = "/api/v1/names/{name}";
    record(names, "delete", admin.delete("/api/v1/names/nobody").await);
    record(names, "delete", admin.delete("/api/v1/names/app").await);
    let hold = "/api/v1/names/{name}/hold";
    record(hold, "delete", admin.delete("/api/v1/names/app/hold").await);
    record(hold, "delete", admin.delete("/api/v1/names/app/hold").await);
    let disconnect = "/api/v1/providers/{peer_id}/disconnect";
    record(
        disconnect,
        "post",
        admin
            .post(
                &format!("/api/v1/providers/{unknown}/disconnect"),
                &json!({}),
            )
            .await,
    );
    record(
        disconnect,
        "post",
        admin
            .post("/api/v1/providers/x/disconnect", &json!({}))
            .await,
    );
    record(
        disconnect,
        "post",
        admin
            .post(
                &format!("/api/v1/providers/{peer}/disconnect"),
                &json!({"reason": "test"}),
            )
            .await,
    );
    // The events so far (connect, register, release, disconnect), each against `Event`.
    let snapshot = admin
        .events(None)
        .await
        .until(5, |m| m.event == "snapshot")
        .await
        .json();
    let snapshot = snapshot.as_array().expect("array");
    let kinds: Vec<&str> = snapshot.iter().filter_map(|e| e["type"].as_str()).collect();
    for kind in ["provider_connected", "name_registered", "name_released"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let events: Vec<Value> = snapshot
        .iter()
        .map(|e| json!({"schema": "Event", "body": e}))
        .collect();
    let statuses: Vec<u64> = answers
        .iter()
        .filter_map(|a| a["status"].as_u64())
        .collect();
    assert_eq!(
        statuses,
        [
            200, 200, 200, 200, 200, 200, 200, 404, 404, 200, 200, 404, 404, 400, 202
        ]
    );
    answers.extend(events);
    let answers_path = dir.path().join("answers.json");
    std::fs::write(&answers_path, serde_json::to_vec(&answers).expect("json")).expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/validate_openapi.py");
    let (ok, out) = python(&[
        script.to_str().expect("utf-8"),
        doc_path.to_str().expect("utf-8"),
        answers_path.to_str().expect("utf-8"),
    ]);
    println!("{out}");
    assert!(ok, "answers do not match the document:\n{out}");

    // The check can fail: a wrong body is caught.
    let wrong = json!([{"path": "/api/v1/whoami", "method": "get", "status": 200,
        "body": {"role": 5}},
        {"schema": "Event", "body": {"seq": 1, "at_unix_ms": 1, "type": "provider_connected"}}]);
    std::fs::write(&answers_path, wrong.to_string()).expect("write");
    let (ok, out) = python(&[
        script.to_str().expect("utf-8"),
        doc_path.to_str().expect("utf-8"),
        answers_path.to_str().expect("utf-8"),
    ]);
    assert!(!ok && out.contains("tokens_required"), "{out}");
    assert!(
        !out.contains("components/schemas/Event: ok"),
        "an event without its fields: {out}"
    );
}
