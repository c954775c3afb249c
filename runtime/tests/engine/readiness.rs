//! wait_ready: ready means running and accepting connections; otherwise the error shows the
//! container's last log lines. A container restarted by its policy is found again.

use std::time::{Duration, Instant};

use peercompute_runtime::{ContainerError, ContainerState, READY_LOG_LINES, ReadyError};

use crate::common::{Fixture, READY_TIMEOUT, engine, http_get, within};

#[tokio::test]
async fn timeout_error_carries_the_last_log_lines() {
    let fx = Fixture::new("silent").await;
    within(async {
        let started = fx.start(&fx.spec("silent")).await;
        // The container prints 30 lines and then listens on nothing.
        fx.wait_for_line(&started.id, "line 30").await;
        let timeout = Duration::from_secs(2);
        let begun = Instant::now();
        let err = fx
            .runtime
            .wait_ready(&started.id, started.addr, timeout)
            .await
            .expect_err("nothing listens");
        let waited = begun.elapsed();
        assert!(
            waited >= timeout && waited < timeout + Duration::from_secs(3),
            "{waited:?}"
        );
        let ReadyError::Timeout {
            state, ref logs, ..
        } = err
        else {
            panic!("expected a timeout: {err}");
        };
        assert_eq!(state, ContainerState::Running);
        assert_eq!(logs.len(), READY_LOG_LINES);
        assert_eq!(logs.last().map(String::as_str), Some("line 30"));
        assert_eq!(logs.first().map(String::as_str), Some("line 11"));
        let message = err.to_string();
        assert!(message.contains("did not accept connections"), "{message}");
        assert!(message.contains("line 30"), "{message}");
        assert!(!message.contains("line 10\n"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn a_crashing_container_fails_fast_with_its_output() {
    let fx = Fixture::new("crash").await;
    within(async {
        let spec = fx.spec("crash");
        let begun = Instant::now();
        // It exits at once: either start already sees it down (and removes it), or
        // wait_ready does. Both must say why, with the container's output.
        let err: Box<dyn std::error::Error> = match fx.runtime.start(&spec).await {
            Err(err @ ContainerError::Exited { .. }) => {
                assert!(
                    engine()
                        .inspect_container(&spec.container_name(), None)
                        .await
                        .is_err(),
                    "start removes a container that died at once"
                );
                Box::new(err)
            }
            Err(other) => panic!("unexpected start error: {other}"),
            Ok(started) => {
                fx.cleanup.container(&started.id);
                let err = fx
                    .runtime
                    .wait_ready(&started.id, started.addr, Duration::from_secs(30))
                    .await
                    .expect_err("it exits");
                assert!(matches!(err, ReadyError::Exited { .. }), "{err:?}");
                Box::new(err)
            }
        };
        assert!(
            begun.elapsed() < Duration::from_secs(15),
            "{:?}",
            begun.elapsed()
        );
        let message = err.to_string();
        assert!(
            message.contains("| fatal: missing config file /etc/app.conf"),
            "{message}"
        );
        assert!(message.contains("exit code 3"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn a_restarted_container_is_found_at_its_new_port() {
    let fx = Fixture::new("restart").await;
    within(async {
        let started = fx.start(&fx.spec("crashonce")).await;
        // The restart policy brings it back; the engine picks a new ephemeral port.
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            let status = fx.runtime.status(&started.id).await.expect("status");
            if status.restart_count >= 1 && status.state == ContainerState::Running {
                break status;
            }
            assert!(Instant::now() < deadline, "not restarted: {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(status.restart_count, 1);
        let addr = fx
            .runtime
            .addr(&started.id)
            .await
            .expect("inspect")
            .expect("published while running");
        assert_eq!(status.addr, Some(addr));
        assert_ne!(addr, started.addr, "a restart publishes on a new port");
        fx.runtime
            .wait_ready(&started.id, addr, READY_TIMEOUT)
            .await
            .expect("serves after the restart");
        assert_eq!(http_get(addr, "/").await.0, 200);
    })
    .await;
}
