//! Shared fixture of the engine tests: a connected runtime, a busybox image loaded under a
//! unique tag, unique specs, a cleanup guard, and small clients (HTTP GET, log waits). The
//! image's `/entry.sh` picks its behaviour from the `MODE` environment variable, so one image
//! serves every test.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use peercompute_runtime::testsupport::{Cleanup, ScratchImage, busybox, unique_name};
use peercompute_runtime::{
    ContainerSpec, DockerRuntime, LABEL_HELPER, LogStream, StartedContainer, VolumeBinding,
    VolumeLabels, volume_name,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The port the test image's web server listens on inside the container.
pub(crate) const PORT: u16 = 8080;
/// The owner peer id put on test containers.
pub(crate) const OWNER: &str = "12D3KooWGzBsgmrnAYwPJ4pBaEacvYeWrPWR9d2rSdnh6NPEtbTL";
/// Upper bound for one test.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Upper bound for a container to become ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The entry script. Every mode prints five boot lines first.
const ENTRY: &str = r#"#!/bin/busybox sh
for i in 1 2 3 4 5; do echo "boot $i"; done
serve() {
    echo "serving on ${PORT:-8080}"
    exec busybox httpd -f -vv -p "${PORT:-8080}" -h /www
}
case "$MODE" in
status)
    while read -r line; do
        case "$line" in CapEff:*|CapBnd:*|NoNewPrivs:*|Seccomp:*) echo "self $line" ;; esac
    done < /proc/self/status
    while read -r line; do
        case "$line" in CapEff:*|NoNewPrivs:*|Seccomp:*) echo "pid1 $line" ;; esac
    done < /proc/1/status
    serve ;;
forkbomb)
    (
        i=0
        while [ "$i" -lt 600 ]; do sleep 600 & i=$((i + 1)); done
        echo "forked all $i"
    )
    echo "fork loop ended with status $?"
    n=0
    for d in /proc/[0-9]*; do n=$((n + 1)); done
    echo "processes=$n"
    read -r max < /sys/fs/cgroup/pids/pids.max || read -r max < /sys/fs/cgroup/pids.max
    echo "pids.max=$max"
    kill -9 -1
    echo "sleepers killed"
    serve ;;
memhog)
    busybox dd if=/dev/zero of=/dev/null bs=128M count=1
    echo "memhog exit=$?"
    if [ -r /sys/fs/cgroup/memory/memory.oom_control ]; then
        while read -r key value; do echo "oom $key=$value"; done < /sys/fs/cgroup/memory/memory.oom_control
    else
        while read -r key value; do echo "oom $key=$value"; done < /sys/fs/cgroup/memory.events
    fi
    serve ;;
silent)
    i=1
    while [ "$i" -le 30 ]; do echo "line $i"; i=$((i + 1)); done
    exec sleep 3600 ;;
crash)
    echo "fatal: missing config file /etc/app.conf" >&2
    exit 3 ;;
script)
    # The test's shell lines, run at every start (a halted container runs them again).
    eval "$SCRIPT"
    echo "script done"
    serve ;;
crashonce)
    if [ ! -e /crashed ]; then
        echo "first run: crashing in a second"
        sleep 1
        echo > /crashed
        exit 1
    fi
    serve ;;
*)
    serve ;;
esac
"#;

/// The test image (busybox, `/entry.sh`, a web root), to be loaded as `tag`.
pub(crate) fn test_image(tag: &str) -> ScratchImage {
    let busybox = busybox().unwrap_or_else(|err| panic!("{err}"));
    ScratchImage::new(tag)
        .file("/bin/busybox", busybox, 0o755)
        .file("/entry.sh", ENTRY, 0o755)
        .file("/www/index.html", "hello from the sandbox\n", 0o644)
        .cmd(["/entry.sh"])
        .env("PATH", "/bin")
        .expose(PORT)
        // One image id per test: the engine deletes an image whose last tag another test
        // removes even as a concurrent load tags the same id (seen once in CI: "no such image"
        // right after a load).
        .label("peercompute.test.tag", tag)
}

/// A connected runtime, a loaded test image and the guard that removes what the test made.
pub(crate) struct Fixture {
    pub(crate) runtime: DockerRuntime,
    pub(crate) image: String,
    pub(crate) cleanup: Cleanup,
}

impl Fixture {
    /// Connects and loads the busybox test image under a unique tag.
    pub(crate) async fn new(test: &str) -> Fixture {
        let runtime = DockerRuntime::connect()
            .await
            .unwrap_or_else(|err| panic!("these tests need a Docker engine: {err}"));
        let cleanup = Cleanup::new();
        let image = format!("{}:1", unique_name(&format!("pc-test-{test}")));
        cleanup.image(&image);
        test_image(&image)
            .load(&runtime)
            .await
            .unwrap_or_else(|err| panic!("loading the test image failed: {err}"));
        Fixture {
            runtime,
            image,
            cleanup,
        }
    }

    /// A spec of the test image in `mode`, with unique deployment id and name.
    pub(crate) fn spec(&self, mode: &str) -> ContainerSpec {
        let name = unique_name(&format!("t-{mode}"));
        ContainerSpec {
            deployment_id: name.clone(),
            owner: OWNER.to_owned(),
            provider: "12D3KooWProviderForTests".to_owned(),
            name,
            image: self.image.clone(),
            port: PORT,
            env: vec![("MODE".to_owned(), mode.to_owned())],
            cpu_millis: 500,
            memory_bytes: 64 << 20,
            attach: Default::default(),
        }
    }

    /// A spec whose container runs the shell lines `script` at each start, then serves.
    pub(crate) fn script_spec(&self, script: &str) -> ContainerSpec {
        let mut spec = self.spec("script");
        spec.env.push(("SCRIPT".to_owned(), script.to_owned()));
        spec
    }

    /// Creates a new volume `app`/`volume` in a scope and for a provider of its own (so
    /// parallel tests never share one), registered for removal; returns its engine name and
    /// labels.
    pub(crate) async fn volume(&self, app: &str, volume: &str) -> (String, VolumeLabels) {
        let labels = VolumeLabels {
            provider: unique_name("provider-test"),
            scope: unique_name("peer:test"),
            app: app.to_owned(),
            volume: volume.to_owned(),
        };
        let name = volume_name(&labels.provider, &labels.scope, app, volume);
        self.cleanup.volume(&name);
        // Helpers a failed test left would keep the volume in use.
        self.cleanup
            .containers_labelled(LABEL_HELPER, &labels.provider);
        let created = self
            .runtime
            .ensure_volume(&name, &labels)
            .await
            .unwrap_or_else(|err| panic!("creating volume {name} failed: {err}"));
        assert!(created, "volume {name} existed before the test");
        (name, labels)
    }

    /// Starts `spec` and registers the container for removal.
    pub(crate) async fn start(&self, spec: &ContainerSpec) -> StartedContainer {
        let started = self
            .runtime
            .start(spec)
            .await
            .unwrap_or_else(|err| panic!("start failed: {err}"));
        self.cleanup.container(&started.id);
        started
    }

    /// Starts `spec` and waits until it serves.
    pub(crate) async fn start_ready(&self, spec: &ContainerSpec) -> StartedContainer {
        let started = self.start(spec).await;
        self.runtime
            .wait_ready(&started.id, started.addr, READY_TIMEOUT)
            .await
            .unwrap_or_else(|err| panic!("not ready: {err}"));
        started
    }

    /// Follows the logs of `container` until a line contains `needle`; returns that line.
    pub(crate) async fn wait_for_line(&self, container: &str, needle: &str) -> String {
        let mut logs = self.runtime.logs(container, true, None);
        wait_for_line_in(&mut logs, needle, READY_TIMEOUT).await
    }
}

/// Reads `logs` until a line contains `needle`, for at most `timeout`.
pub(crate) async fn wait_for_line_in(
    logs: &mut LogStream,
    needle: &str,
    timeout: Duration,
) -> String {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(timeout, async {
        while let Some(line) = logs.next().await {
            let line = line.unwrap_or_else(|err| panic!("log stream failed: {err}"));
            if line.text.contains(needle) {
                return Some(line.text);
            }
            seen.push(line.text);
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        Ok(None) => panic!("logs ended without {needle:?}; saw {seen:#?}"),
        Err(_) => panic!("no {needle:?} in the logs within {timeout:?}; saw {seen:#?}"),
    }
}

/// `GET path` over HTTP/1.0; returns the status code and the body.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path} on {addr} timed out"))
        .unwrap_or_else(|err| panic!("GET {path} on {addr} failed: {err}"));
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Volume `volume` mounted at `target`.
pub(crate) fn mount(volume: &str, target: &str) -> VolumeBinding {
    VolumeBinding {
        volume: volume.to_owned(),
        target: target.to_owned(),
    }
}

/// Runs a test body with [`TEST_TIMEOUT`].
pub(crate) async fn within<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {TEST_TIMEOUT:?}"));
}

/// A second, plain engine client for checking what the runtime did.
pub(crate) fn engine() -> bollard::Docker {
    bollard::Docker::connect_with_defaults().expect("the engine was reachable a moment ago")
}
