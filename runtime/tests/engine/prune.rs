//! remove_image against the real engine: an image a container uses (running or stopped) is
//! refused and stays, images_in_use names it; once the container is gone the image is removed,
//! and removing it again says it is absent. The engine names its data root (where images
//! take disk), which a robot measures for its status.

use peercompute_runtime::testsupport::unique_name;
use peercompute_runtime::{RemoveImageError, Removed};

use crate::common::{Fixture, test_image, within};

#[tokio::test]
async fn an_image_is_removed_only_when_no_container_uses_it() {
    let mut fx = Fixture::new("prune").await;
    // A layer of its own: the fixture's image is byte-identical to other tests', and removing
    // one of several tags of an image only untags it, whoever runs it.
    let image = format!("{}:1", unique_name("pc-test-prune-own"));
    fx.cleanup.image(&image);
    test_image(&image)
        .file("/unique", unique_name("layer"), 0o644)
        .load(&fx.runtime)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    fx.image = image;
    within(async {
        let id = fx
            .runtime
            .image_id(&fx.image)
            .await
            .expect("inspect")
            .expect("the test image is loaded");
        let started = fx.start(&fx.spec("serve")).await;
        let used = fx.runtime.images_in_use().await.expect("list");
        assert!(used.uses(&fx.image, Some(&id)), "{used:?}");

        let err = fx
            .runtime
            .remove_image(&fx.image)
            .await
            .expect_err("a running container uses it");
        assert!(matches!(err, RemoveImageError::InUse { .. }), "{err:?}");
        assert!(err.to_string().contains(&fx.image), "{err}");
        assert_eq!(
            fx.runtime.image_id(&fx.image).await.expect("inspect"),
            Some(id.clone()),
            "the image stays"
        );

        fx.runtime.stop(&started.id).await.expect("stop");
        let used = fx.runtime.images_in_use().await.expect("list");
        assert!(!used.uses(&fx.image, Some(&id)), "{used:?}");
        assert_eq!(
            fx.runtime.remove_image(&fx.image).await.expect("remove"),
            Removed::Removed
        );
        assert_eq!(fx.runtime.image_id(&fx.image).await.expect("inspect"), None);
        assert_eq!(
            fx.runtime.remove_image(&fx.image).await.expect("again"),
            Removed::Absent
        );
    })
    .await;
}

#[tokio::test]
async fn the_engine_names_its_data_root() {
    let fx = Fixture::new("data-root").await;
    within(async {
        let root = fx
            .runtime
            .data_root()
            .await
            .expect("info")
            .expect("the engine names its data root");
        assert!(root.is_absolute(), "{}", root.display());
    })
    .await;
}
