//! Start, serve, status, list, stop: what a deploy and a `peerctl stop` do.

use std::net::Ipv4Addr;

use peercompute_runtime::{ContainerError, ContainerState, DockerRuntime, SandboxPolicy};

use crate::common::{Fixture, OWNER, engine, http_get, within};

#[tokio::test]
async fn started_container_serves_http_on_loopback() {
    let fx = Fixture::new("serve").await;
    within(async {
        let spec = fx.spec("serve");
        let started = fx.start_ready(&spec).await;
        assert_eq!(started.addr.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(started.addr.port(), 0);
        assert_eq!(started.name, spec.container_name());

        let (status, body) = http_get(started.addr, "/").await;
        assert_eq!(status, 200);
        assert_eq!(body, "hello from the sandbox\n");

        let status = fx.runtime.status(&started.id).await.expect("status");
        assert_eq!(status.state, ContainerState::Running);
        assert_eq!(status.image, fx.image);
        assert_eq!(status.restart_count, 0);
        assert_eq!(status.addr, Some(started.addr));
        assert!(status.started_at.is_some(), "{status:?}");
        assert_eq!(status.finished_at, None);
        let deployment = status.deployment.expect("managed labels");
        assert_eq!(deployment.deployment_id, spec.deployment_id);
        assert_eq!(deployment.owner, OWNER);
        assert_eq!(deployment.name, spec.name);
        let usage = status
            .usage
            .expect("a running container has a stats sample");
        let memory = usage.memory_bytes.expect("memory use is reported");
        assert!(memory > 0 && memory < spec.memory_bytes, "{usage:?}");
        assert_eq!(usage.memory_limit_bytes, Some(spec.memory_bytes));
        assert!(usage.cpu_total_nanos.is_some(), "{usage:?}");
    })
    .await;
}

#[tokio::test]
async fn list_managed_finds_the_container_by_label() {
    let fx = Fixture::new("list").await;
    within(async {
        let spec = fx.spec("serve");
        let started = fx.start_ready(&spec).await;
        let managed = fx.runtime.list_managed().await.expect("list");
        let found = managed
            .iter()
            .find(|c| c.id == started.id)
            .unwrap_or_else(|| panic!("{} not in {managed:#?}", started.id));
        assert_eq!(found.state, ContainerState::Running);
        assert_eq!(found.name, started.name);
        assert_eq!(found.image, fx.image);
        assert_eq!(found.addr, Some(started.addr));
        assert!(found.sandboxed, "on the sandbox network");
        let deployment = found.deployment.clone().expect("labels complete");
        assert_eq!(deployment.deployment_id, spec.deployment_id);
        assert_eq!(deployment.owner, OWNER);
        assert_eq!(deployment.name, spec.name);
        assert_eq!(
            found.labels.get("peercompute.managed").map(String::as_str),
            Some("true")
        );

        // A stopped one is still listed (the daemon must see dead deployments too).
        let body = bollard::query_parameters::StopContainerOptions {
            t: Some(0),
            ..Default::default()
        };
        engine()
            .stop_container(&started.id, Some(body))
            .await
            .expect("stop");
        let managed = fx.runtime.list_managed().await.expect("list");
        let found = managed
            .iter()
            .find(|c| c.id == started.id)
            .expect("still listed");
        assert_eq!(found.state, ContainerState::Exited);
        assert_eq!(found.addr, None);
    })
    .await;
}

#[tokio::test]
async fn stop_removes_the_container_and_is_idempotent() {
    let fx = Fixture::new("stop").await;
    within(async {
        let started = fx.start_ready(&fx.spec("serve")).await;
        let begun = std::time::Instant::now();
        fx.runtime.stop(&started.id).await.expect("stop");
        // busybox httpd exits on SIGTERM: no need to wait for the grace period.
        assert!(
            begun.elapsed() < fx.runtime.policy().stop_grace,
            "{:?}",
            begun.elapsed()
        );
        match engine().inspect_container(&started.id, None).await {
            Err(bollard::errors::Error::DockerResponseServerError { status_code, .. }) => {
                assert_eq!(status_code, 404)
            }
            other => panic!("the container should be gone: {other:?}"),
        }
        fx.runtime
            .stop(&started.id)
            .await
            .expect("stopping again is fine");
        fx.runtime
            .stop("peercompute-never-existed")
            .await
            .expect("stopping nothing is fine");
        assert!(matches!(
            fx.runtime.status(&started.id).await,
            Err(ContainerError::NotFound { .. })
        ));
        assert!(tokio::net::TcpStream::connect(started.addr).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn start_without_the_image_says_to_fetch_it() {
    let fx = Fixture::new("noimage").await;
    within(async {
        let mut spec = fx.spec("serve");
        spec.image = "peercompute-test-absent:never".to_owned();
        let err = fx.runtime.start(&spec).await.expect_err("no such image");
        assert!(
            matches!(err, ContainerError::ImageMissing { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("peercompute-test-absent:never"),
            "{err}"
        );
        // Nothing was left behind under the container's name.
        let leftover = engine()
            .inspect_container(&spec.container_name(), None)
            .await;
        assert!(leftover.is_err(), "{leftover:?}");
    })
    .await;
}

#[tokio::test]
async fn a_second_start_of_the_same_deployment_is_refused() {
    let fx = Fixture::new("twice").await;
    within(async {
        let spec = fx.spec("serve");
        fx.start(&spec).await;
        let err = fx.runtime.start(&spec).await.expect_err("name taken");
        assert!(matches!(err, ContainerError::NameInUse { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn connecting_to_no_engine_says_what_to_do() {
    let err =
        DockerRuntime::connect_to("unix:///nonexistent/docker.sock", SandboxPolicy::default())
            .await
            .expect_err("nothing listens there");
    let message = err.to_string();
    assert!(
        message.contains("no Docker engine answers at unix:///nonexistent/docker.sock: start it or set DOCKER_HOST"),
        "{message}"
    );
}
