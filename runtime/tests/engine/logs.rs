//! logs: the last lines on demand, and new lines as they are printed.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use peercompute_runtime::{ContainerError, LogSource};

use crate::common::{Fixture, http_get, wait_for_line_in, within};

#[tokio::test]
async fn tail_gives_the_last_lines_with_timestamps() {
    let fx = Fixture::new("tail").await;
    within(async {
        let started = fx.start(&fx.spec("silent")).await;
        fx.wait_for_line(&started.id, "line 30").await;
        let lines: Vec<_> = fx
            .runtime
            .logs(&started.id, false, Some(3))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|line| line.expect("a log line"))
            .collect();
        let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["line 28", "line 29", "line 30"]);
        for line in &lines {
            assert_eq!(line.source, LogSource::Stdout);
            let stamp = line.timestamp.as_deref().expect("timestamped");
            assert!(stamp.ends_with('Z') && stamp.contains('T'), "{stamp}");
        }
        let all = fx.runtime.logs(&started.id, false, None).count().await;
        assert_eq!(all, 5 + 30, "five boot lines and thirty more");
    })
    .await;
}

#[tokio::test]
async fn follow_delivers_a_new_line_within_a_second() {
    let fx = Fixture::new("follow").await;
    within(async {
        let started = fx.start_ready(&fx.spec("serve")).await;
        // The request is sent when the stream is first polled: ask for the whole history so
        // the warm-up line arrives either way; once it has, the stream is live.
        let mut follow = fx.runtime.logs(&started.id, true, None);
        http_get(started.addr, "/warmup").await;
        wait_for_line_in(&mut follow, "url:/warmup", Duration::from_secs(5)).await;
        for round in 0..3 {
            let path = format!("/probe-{round}");
            let sent = Instant::now();
            assert_eq!(http_get(started.addr, &path).await.0, 404);
            let line =
                wait_for_line_in(&mut follow, &format!("url:{path}"), Duration::from_secs(5)).await;
            let delay = sent.elapsed();
            assert!(
                delay < Duration::from_secs(1),
                "{line} arrived after {delay:?}"
            );
        }
        // httpd logs to stderr.
        let stderr = fx
            .runtime
            .logs(&started.id, false, Some(1))
            .next()
            .await
            .expect("a line")
            .expect("readable");
        assert_eq!(stderr.source, LogSource::Stderr);
    })
    .await;
}

#[tokio::test]
async fn logs_of_a_missing_container_say_so() {
    let fx = Fixture::new("nologs").await;
    within(async {
        let first = fx
            .runtime
            .logs("peercompute-never-existed", false, None)
            .next()
            .await
            .expect("one error item");
        assert!(
            matches!(first, Err(ContainerError::NotFound { .. })),
            "{first:?}"
        );
    })
    .await;
}
