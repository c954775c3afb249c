//! Fleet releases' container pieces against the real engine and a throw-away registry
//! (Debian's `docker-registry` on a loopback port; `busybox-static` for the images): a tag
//! resolves to the registry's digest, a pinned image is pulled and verified, a digest the
//! repository does not hold is refused before anything could start, and the health gate
//! passes on 2xx and reports a 404 with the container's log lines.
//!
//! The fixture (busybox image with `/entry.sh`, unique names, cleanup guard) is the engine
//! tests' own, shared by path so both binaries build the same image.

#[allow(dead_code)]
#[path = "engine/common.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bollard::query_parameters::RemoveImageOptions;
use peercompute_runtime::testsupport::{LocalRegistry, unique_name};
use peercompute_runtime::{
    ContainerError, HealthCheck, HealthError, ImageError, PinnedImage, ProbeFailure, PullProgress,
};

use crate::common::{Fixture, READY_TIMEOUT, engine, http_get, test_image, within};

/// A registry with one image pushed as `<repository>:v1`.
struct Published {
    registry: LocalRegistry,
    repository: String,
    /// The local tag the image was built under.
    local: String,
    /// `<repository>:v1`.
    tagged: String,
    /// What `resolve_digest` made of `tagged`.
    pinned: PinnedImage,
}

/// Starts a registry, builds a busybox image with a layer of its own (so removing it
/// locally forces a real download), pushes it as `<registry>/peercompute/<name>:v1` and
/// resolves that tag to its digest.
async fn publish(fx: &Fixture, name: &str) -> Published {
    let registry = LocalRegistry::start()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let repository = format!("{}/peercompute/{}", registry.host(), unique_name(name));
    let local = build(fx, name).await;
    let tagged = format!("{repository}:v1");
    fx.cleanup.image(&tagged);
    registry
        .push(&fx.runtime, &local, &repository, "v1")
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let pinned = fx
        .runtime
        .resolve_digest(&tagged)
        .await
        .unwrap_or_else(|err| panic!("resolve: {err}"));
    fx.cleanup.image(&pinned.to_string());
    Published {
        registry,
        repository,
        local,
        tagged,
        pinned,
    }
}

/// Loads a busybox image whose layer no other image shares; returns its local tag.
async fn build(fx: &Fixture, name: &str) -> String {
    let local = format!("{}:1", unique_name(&format!("pc-test-{name}")));
    fx.cleanup.image(&local);
    test_image(&local)
        .file("/unique", unique_name("layer"), 0o644)
        .load(&fx.runtime)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    local
}

/// The engine's `RepoDigests` and id of a local image.
async fn repo_digests(image: &str) -> (Vec<String>, String) {
    let inspect = engine()
        .inspect_image(image)
        .await
        .unwrap_or_else(|err| panic!("inspect {image}: {err}"));
    (
        inspect.repo_digests.unwrap_or_default(),
        inspect.id.unwrap_or_default(),
    )
}

async fn remove_image(image: &str) {
    let options = RemoveImageOptions {
        force: true,
        ..Default::default()
    };
    engine()
        .remove_image(image, Some(options), None)
        .await
        .unwrap_or_else(|err| panic!("remove {image}: {err}"));
}

#[tokio::test]
async fn a_pinned_image_is_pulled_verified_and_runs() {
    let fx = Fixture::new("pin").await;
    within(async {
        let published = publish(&fx, "pinned").await;
        let (tagged, pinned) = (&published.tagged, &published.pinned);
        assert_eq!(pinned.repository(), published.repository);
        // The digest the push gave the image, as the engine records it.
        let (digests, pushed_id) = repo_digests(tagged).await;
        assert_eq!(digests, [pinned.to_string()]);
        // Already pinned: returned as it is.
        let again = fx
            .runtime
            .resolve_digest(&pinned.to_string())
            .await
            .expect("a pin resolves to itself");
        assert_eq!(&again, pinned);

        // Gone from the host, so the pin must come from the registry.
        remove_image(tagged).await;
        remove_image(&published.local).await;
        let mut events: Vec<PullProgress> = Vec::new();
        let info = fx
            .runtime
            .ensure_pinned(pinned, |p| events.push(p))
            .await
            .unwrap_or_else(|err| panic!("pull by digest: {err}"));
        assert!(info.pulled);
        assert_eq!(info.id, pushed_id, "the same content as pushed");
        assert!(
            events
                .iter()
                .any(|e| e.layer.is_some() && e.status == "Pull complete"),
            "{events:#?}"
        );
        let (digests, _) = repo_digests(&pinned.to_string()).await;
        assert!(digests.contains(&pinned.to_string()), "{digests:?}");

        // Present now: used without pulling.
        let local = fx
            .runtime
            .ensure_pinned(pinned, |_| panic!("no pull expected"))
            .await
            .expect("local now");
        assert!(!local.pulled);
        assert_eq!(local.id, pushed_id);

        // It runs under its pinned reference.
        let mut spec = fx.spec("serve");
        spec.image = pinned.to_string();
        let started = fx.start_ready(&spec).await;
        assert_eq!(http_get(started.addr, "/").await.0, 200);
    })
    .await;
}

#[tokio::test]
async fn a_digest_the_repository_does_not_hold_is_refused() {
    let fx = Fixture::new("wrongpin").await;
    within(async {
        let published = publish(&fx, "pinned").await;
        // Another image, pushed to another repository of the same registry.
        let other_local = build(&fx, "other").await;
        let other_repository = format!(
            "{}/peercompute/{}",
            published.registry.host(),
            unique_name("other")
        );
        fx.cleanup.image(&format!("{other_repository}:v1"));
        published
            .registry
            .push(&fx.runtime, &other_local, &other_repository, "v1")
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let other = fx
            .runtime
            .resolve_digest(&format!("{other_repository}:v1"))
            .await
            .unwrap_or_else(|err| panic!("resolve: {err}"));
        let (_, other_id) = repo_digests(&other_local).await;

        // The other image's registry digest, and its content digest (image id), under the
        // first repository's name: neither may yield an image, and the second must not be
        // answered by the other image that is on this host.
        let zeros = format!("sha256:{}", "0".repeat(64));
        for digest in [other.digest(), other_id.as_str(), zeros.as_str()] {
            let wrong = PinnedImage::new(&published.repository, digest).expect("well-formed");
            let begun = Instant::now();
            let err = fx
                .runtime
                .ensure_pinned(&wrong, |_| {})
                .await
                .expect_err("the repository does not hold it");
            assert!(
                begun.elapsed() < Duration::from_secs(15),
                "{:?}",
                begun.elapsed()
            );
            assert!(
                matches!(
                    err,
                    ImageError::NotFound { .. } | ImageError::DigestMismatch { .. }
                ),
                "{err:?}"
            );
            let message = err.to_string();
            assert!(message.contains(&wrong.to_string()), "{message}");
            // Nothing was fetched under the pin, so nothing can start from it.
            let mut spec = fx.spec("serve");
            spec.image = wrong.to_string();
            match fx.runtime.start(&spec).await {
                Err(ContainerError::ImageMissing { image }) => assert_eq!(image, spec.image),
                Err(other) => panic!("unexpected start error: {other}"),
                Ok(started) => {
                    fx.cleanup.container(&started.id);
                    panic!("a container started from {wrong}");
                }
            }
        }
    })
    .await;
}

#[tokio::test]
async fn resolving_names_what_is_wrong_and_falls_back_to_the_local_copy() {
    let fx = Fixture::new("resolve").await;
    within(async {
        let published = publish(&fx, "resolved").await;

        for missing in [
            format!("{}:nosuchtag", published.repository),
            format!(
                "{}/peercompute/{}:v1",
                published.registry.host(),
                unique_name("never")
            ),
        ] {
            let err = fx
                .runtime
                .resolve_digest(&missing)
                .await
                .expect_err("not in the registry");
            assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.contains(&missing), "{message}");
            assert!(message.contains("was not found at 127.0.0.1:"), "{message}");
        }

        let err = fx
            .runtime
            .resolve_digest("127.0.0.1:1/peercompute/absent:1")
            .await
            .expect_err("nobody there");
        assert!(matches!(err, ImageError::Unresolvable { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("cannot resolve 127.0.0.1:1/peercompute/absent:1 to a digest"),
            "{message}"
        );
        assert!(message.contains("connection refused"), "{message}");
        assert!(message.contains("not on this host"), "{message}");

        for bad in ["App:V1", "-v /:/host", "app:"] {
            let err = fx.runtime.resolve_digest(bad).await.expect_err(bad);
            assert!(matches!(err, ImageError::InvalidReference(_)), "{err:?}");
        }
        let err = fx
            .runtime
            .resolve_digest("app@sha256:abc")
            .await
            .expect_err("short digest");
        assert!(matches!(err, ImageError::InvalidDigest(_)), "{err:?}");

        // The registry goes away: the local copy, pushed there, still knows the digest.
        let addr = published.registry.addr();
        drop(published.registry);
        wait_refused(addr).await;
        let fallback = fx
            .runtime
            .resolve_digest(&published.tagged)
            .await
            .unwrap_or_else(|err| panic!("fallback to the local copy: {err}"));
        assert_eq!(fallback, published.pinned);
        // A local image never pushed there has no digest to offer.
        let err = fx
            .runtime
            .resolve_digest(&published.local)
            .await
            .expect_err("docker.io is unreachable or lacks it");
        assert!(
            matches!(
                err,
                ImageError::Unresolvable { .. } | ImageError::NotFound { .. }
            ),
            "{err:?}"
        );
    })
    .await;
}

/// Waits (bounded) until nothing accepts connections on `addr` any more.
async fn wait_refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "{addr} still accepts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_health_gate_wants_2xx_and_reports_a_404_with_the_logs() {
    let fx = Fixture::new("health").await;
    within(async {
        let image = format!("{}:1", unique_name("pc-test-healthz"));
        fx.cleanup.image(&image);
        test_image(&image)
            .file("/www/healthz", "ok\n", 0o644)
            .load(&fx.runtime)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let mut spec = fx.spec("serve");
        spec.image = image;
        // Not waited for: the health gate itself copes with a server still starting.
        let started = fx.start(&spec).await;

        let healthz = HealthCheck {
            path: Some("/healthz".to_owned()),
            settle: Duration::ZERO,
        };
        let report = fx
            .runtime
            .wait_healthy(&started.id, started.addr, &healthz, READY_TIMEOUT)
            .await
            .unwrap_or_else(|err| panic!("not healthy: {err}"));
        assert_eq!(report.status, Some(200));
        assert!(report.probes >= 1);

        let port = HealthCheck {
            path: None,
            settle: Duration::from_millis(500),
        };
        let report = fx
            .runtime
            .wait_healthy(&started.id, started.addr, &port, READY_TIMEOUT)
            .await
            .unwrap_or_else(|err| panic!("port not healthy: {err}"));
        assert!(report.elapsed >= port.settle, "{report:?}");
        assert!(report.probes >= 2, "{report:?}");
        assert_eq!(report.status, None);

        let missing = HealthCheck {
            path: Some("/nosuch".to_owned()),
            settle: Duration::ZERO,
        };
        let timeout = Duration::from_secs(2);
        let begun = Instant::now();
        let err = fx
            .runtime
            .wait_healthy(&started.id, started.addr, &missing, timeout)
            .await
            .expect_err("404");
        let waited = begun.elapsed();
        assert!(
            waited >= timeout && waited < timeout + Duration::from_secs(3),
            "{waited:?}"
        );
        assert!(matches!(err, HealthError::Timeout(_)), "{err:?}");
        assert_eq!(err.last_failure(), Some(&ProbeFailure::Status(404)));
        // busybox httpd -vv logs each request: the 404s the probes got are in the output.
        assert!(
            err.logs().iter().any(|l| l.ends_with("url:/nosuch")),
            "{:?}",
            err.logs()
        );
        let message = err.to_string();
        assert!(message.contains("GET /nosuch answering 2xx"), "{message}");
        assert!(message.contains("it answered HTTP 404"), "{message}");
        assert!(message.contains("response:404"), "{message}");

        // The health gate of a stopped container ends at once, with its output.
        fx.runtime
            .stop(&started.id)
            .await
            .unwrap_or_else(|err| panic!("stop: {err}"));
        let err = fx
            .runtime
            .wait_healthy(&started.id, started.addr, &healthz, timeout)
            .await
            .expect_err("gone");
        assert!(
            matches!(
                err,
                HealthError::Container(ContainerError::NotFound { .. }) | HealthError::Exited(_)
            ),
            "{err:?}"
        );
    })
    .await;
}
