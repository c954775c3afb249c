//! ensure_image: local images are used as they are; a missing image or one built for
//! another platform is a clear error; a pull from a registry (a throw-away one on a loopback
//! port) reports progress and yields an image that runs.

use bollard::query_parameters::RemoveImageOptions;
use peercompute_runtime::testsupport::{LocalRegistry, ScratchImage, unique_name};
use peercompute_runtime::{ImageError, PullProgress};

use crate::common::{Fixture, engine, http_get, test_image, within};

#[tokio::test]
async fn a_local_image_is_used_without_pulling() {
    let fx = Fixture::new("local").await;
    within(async {
        let mut events = Vec::new();
        let info = fx
            .runtime
            .ensure_image(&fx.image, |p| events.push(p))
            .await
            .expect("present locally");
        assert!(!info.pulled);
        assert!(info.id.starts_with("sha256:"), "{info:?}");
        assert_eq!(&info.platform, fx.runtime.platform());
        assert!(events.is_empty(), "{events:?}");
    })
    .await;
}

#[tokio::test]
async fn an_image_for_another_architecture_is_refused() {
    let fx = Fixture::new("arch").await;
    within(async {
        let other = if fx.runtime.platform().architecture == "arm64" {
            "amd64"
        } else {
            "arm64"
        };
        let tag = format!("{}:1", unique_name("pc-test-foreign"));
        fx.cleanup.image(&tag);
        ScratchImage::new(&tag)
            .file("/hello", "not a program for this host", 0o755)
            .cmd(["/hello"])
            .architecture(other)
            .load(&fx.runtime)
            .await
            .expect("loads");
        let err = fx
            .runtime
            .ensure_image(&tag, |_| {})
            .await
            .expect_err("foreign");
        assert!(matches!(err, ImageError::WrongPlatform { .. }), "{err:?}");
        let message = err.to_string();
        let host = fx.runtime.platform();
        assert!(
            message.contains(&format!("built for linux/{other}")),
            "{message}"
        );
        assert!(
            message.contains(&format!("this host runs linux/{}", host.architecture)),
            "{message}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_missing_image_without_a_registry_is_a_clear_error() {
    let fx = Fixture::new("missing").await;
    within(async {
        // Docker Hub: unreachable from here, or "not found" where it is reachable.
        let image = format!("{}:1", unique_name("peercompute-test-absent"));
        let mut events = Vec::new();
        let err = fx
            .runtime
            .ensure_image(&image, |p| events.push(p))
            .await
            .expect_err("cannot exist");
        assert!(
            matches!(
                err,
                ImageError::RegistryUnreachable { .. } | ImageError::NotFound { .. }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(&image), "{err}");
        assert!(err.to_string().contains("docker.io"), "{err}");

        // A registry on a closed loopback port: unreachable, always.
        let image = "127.0.0.1:1/peercompute/absent:1";
        let err = fx
            .runtime
            .ensure_image(image, |_| {})
            .await
            .expect_err("nobody there");
        assert!(
            matches!(err, ImageError::RegistryUnreachable { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with(
                "cannot reach registry 127.0.0.1:1 to pull 127.0.0.1:1/peercompute/absent:1"
            ),
            "{message}"
        );
        assert!(message.contains("connection refused"), "{message}");

        let err = fx
            .runtime
            .ensure_image("-v /:/host", |_| {})
            .await
            .expect_err("not a reference");
        assert!(matches!(err, ImageError::InvalidReference(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn a_pull_from_a_registry_reports_progress_and_runs() {
    let fx = Fixture::new("pull").await;
    within(async {
        let registry = LocalRegistry::start()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        // An image whose layer no other test shares, so that removing it locally removes
        // the layer and the pull must download it.
        let local = format!("{}:1", unique_name("pc-test-topush"));
        fx.cleanup.image(&local);
        test_image(&local)
            .file("/unique", unique_name("layer"), 0o644)
            .load(&fx.runtime)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let repository = format!("{}/peercompute/{}", registry.host(), unique_name("pulled"));
        let image = format!("{repository}:1");
        fx.cleanup.image(&image);
        registry
            .push(&fx.runtime, &local, &repository, "1")
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        // Remove every local name of the image so its layer must come over the network.
        for name in [&image, &local] {
            let options = RemoveImageOptions {
                force: true,
                ..Default::default()
            };
            engine()
                .remove_image(name, Some(options), None)
                .await
                .expect("untag");
        }

        let mut events: Vec<PullProgress> = Vec::new();
        let info = fx
            .runtime
            .ensure_image(&image, |p| events.push(p))
            .await
            .unwrap_or_else(|err| panic!("pull failed: {err}"));
        assert!(info.pulled);
        assert_eq!(&info.platform, fx.runtime.platform());
        assert!(
            events
                .iter()
                .any(|e| e.layer.is_some() && e.status == "Pull complete"),
            "{events:#?}"
        );
        assert!(
            events.iter().any(|e| e.status == "Downloading"
                && e.total.is_some_and(|t| t > 0)
                && e.current.is_some()),
            "{events:#?}"
        );
        // Present now: a second call does not pull.
        let again = fx
            .runtime
            .ensure_image(&image, |_| {})
            .await
            .expect("local now");
        assert!(!again.pulled);

        // And it runs.
        let mut spec = fx.spec("serve");
        spec.image = image.clone();
        let started = fx.start_ready(&spec).await;
        assert_eq!(http_get(started.addr, "/").await.0, 200);

        // A tag the registry does not have.
        let missing = format!("{repository}:nosuchtag");
        let err = fx
            .runtime
            .ensure_image(&missing, |_| {})
            .await
            .expect_err("no such tag");
        assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains(&missing), "{err}");
    })
    .await;
}
