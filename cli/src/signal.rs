//! The daemons' shutdown trigger.

use std::future::Future;

/// A future that resolves on SIGTERM or SIGINT (Ctrl-C), whichever comes first.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// daemon passes it to its `run` before a slow start-up (Docker, the first tunnel), and a
/// SIGTERM during that start-up must still mean a clean stop, not the default action (death
/// by signal). Call it inside the Tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            // No signal driver (not on Unix, or out of file descriptors): Ctrl-C only.
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{Signal, raise};

    #[tokio::test]
    async fn sigterm_before_the_first_poll_is_not_lost() {
        let stop = shutdown_signal();
        // Delivered before anyone awaits the future: with a lazily installed handler the
        // default action would end this test process.
        raise(Signal::SIGTERM).expect("raise SIGTERM");
        tokio::time::timeout(std::time::Duration::from_secs(5), stop)
            .await
            .expect("the SIGTERM sent before the first poll resolves the future");
    }
}
