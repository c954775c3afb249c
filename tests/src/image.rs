//! A web image for deploy tests, built `FROM scratch` with Debian's static busybox — no
//! registry needed. `busybox httpd -vv` logs every request to stderr, which is what the logs
//! tests wait for; `/cgi-bin/status` prints the container's own `/proc/self/status`. For the
//! volume tests: `/cgi-bin/append` appends one line to `/data/log` and answers the line
//! count, `/cgi-bin/log` answers `/data/log`, and `/cgi-bin/fill?N` writes N MiB to
//! `/data/fill`. With `LOG_MIB=N` in its environment the container also prints N MiB of log
//! lines to its stdout at start, then `log spam done` (the container-log bound test).

use peercompute_runtime::DockerRuntime;
use peercompute_runtime::testsupport::{Cleanup, ScratchImage, busybox, unique_name};

/// Port the test image listens on.
pub const TEST_PORT: u16 = 8080;

const ENTRY: &str = r#"#!/bin/busybox sh
echo "container starting"
if [ -n "$LOG_MIB" ]; then
    # In the background: the web server answers while the logs pour out.
    (busybox yes "chatty log line, padded to look like a real one: 0123456789abcdefghijklmnopqrstuvwxyz" |
        busybox head -c "$((LOG_MIB * 1048576))"; echo; echo "log spam done") &
fi
if [ -n "$CRASH_ONCE" ] && [ ! -e /tmp/crashed ]; then
    # Serve for a moment, then die: the restart policy brings it back on a new host port.
    busybox httpd -f -vv -p 8080 -h /www &
    sleep "$CRASH_ONCE"
    busybox mkdir -p /tmp && echo > /tmp/crashed
    echo "crashing on purpose"
    exit 1
fi
exec busybox httpd -f -vv -p 8080 -h /www
"#;

const STATUS_CGI: &str = "#!/bin/busybox sh\necho 'Content-Type: text/plain'\necho\nexec busybox cat /proc/self/status\n";

const APPEND_CGI: &str = r#"#!/bin/busybox sh
echo 'Content-Type: text/plain'
echo
echo "request at $(busybox date +%s.%N) by $$" >> /data/log
busybox wc -l < /data/log
"#;

const LOG_CGI: &str = r#"#!/bin/busybox sh
echo 'Content-Type: text/plain'
echo
busybox cat /data/log 2>/dev/null
"#;

const FILL_CGI: &str = r#"#!/bin/busybox sh
echo 'Content-Type: text/plain'
echo
busybox dd if=/dev/urandom of=/data/fill bs=1048576 count="$QUERY_STRING" 2>/dev/null
busybox sync
echo filled
"#;

/// A loaded test image, removed (with its containers) when dropped.
#[derive(Debug)]
pub struct TestImage {
    pub tag: String,
    pub cleanup: Cleanup,
}

impl TestImage {
    pub async fn load() -> Self {
        let runtime = DockerRuntime::connect()
            .await
            .unwrap_or_else(|e| panic!("these tests need a Docker engine: {e}"));
        let tag = format!("{}:1", unique_name("pc-e2e-web"));
        let cleanup = Cleanup::new();
        cleanup.image(&tag);
        let busybox = busybox().unwrap_or_else(|e| panic!("{e}"));
        ScratchImage::new(&tag)
            .file("/bin/busybox", busybox, 0o755)
            .file("/entry.sh", ENTRY, 0o755)
            .file("/www/index.html", "hello from the container\n", 0o644)
            .file("/www/cgi-bin/status", STATUS_CGI, 0o755)
            .file("/www/cgi-bin/append", APPEND_CGI, 0o755)
            .file("/www/cgi-bin/log", LOG_CGI, 0o755)
            .file("/www/cgi-bin/fill", FILL_CGI, 0o755)
            .cmd(["/entry.sh"])
            .env("PATH", "/bin")
            .expose(TEST_PORT)
            .load(&runtime)
            .await
            .unwrap_or_else(|e| panic!("loading the test image failed: {e}"));
        Self { tag, cleanup }
    }
}
