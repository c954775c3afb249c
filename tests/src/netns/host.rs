//! [`Host`]: one place a program can run — a namespace the world created, or the root
//! namespace for a root site — and the three ways to run something there: a child process
//! ([`Host::command`]), a closure on a thread inside the namespace ([`Host::enter`], enough to
//! create sockets: a socket stays in the namespace it was created in), and a future on its own
//! runtime there ([`Host::spawn_thread`], for in-process libp2p nodes).

use std::ffi::OsStr;
use std::fs::File;
use std::future::Future;
use std::net::Ipv4Addr;
use std::thread::JoinHandle;

use nix::sched::CloneFlags;
use tokio::sync::oneshot;

use super::sh;

/// A host of a world: its name, its namespace and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub(super) name: String,
    pub(super) netns: Option<String>,
    pub(super) ip: Ipv4Addr,
}

impl Host {
    /// The host's address: public for public hosts and routers (their WAN side), private on a
    /// site's LAN.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The name the test gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace's name, `None` for the root namespace.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// `program` run inside the host's namespace (`ip netns exec <ns> program`, or plainly in
    /// the root namespace); killed when dropped. Add arguments, pipes, env as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> tokio::process::Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = tokio::process::Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(program);
                cmd
            }
            None => tokio::process::Command::new(program),
        };
        cmd.kill_on_drop(true);
        cmd
    }

    /// Runs `program args…` in the namespace to completion and returns its stdout; panics
    /// with its stderr if it fails. For `ip route`, `nft list ruleset` and the like.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        match &self.netns {
            Some(ns) => sh::run("ip", &[&["netns", "exec", ns, program], args].concat()),
            None => sh::run(program, args),
        }
    }

    /// Runs `f` on a thread that entered the host's namespace and returns its result. Sockets
    /// created by `f` belong to the namespace for life and may be used from any thread:
    /// `let s = host.enter(|| std::net::UdpSocket::bind("0.0.0.0:0"))?`.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let Some(ns) = &self.netns else {
            return f();
        };
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name(format!("netns-{}", self.name))
                .spawn_scoped(scope, || {
                    enter_netns(ns);
                    f()
                })
                .expect("spawning a thread")
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs `f()` on a current-thread tokio runtime in an OS thread inside the host's
    /// namespace (threads it spawns inherit the namespace). Dropping the handle cancels the
    /// future; [`NsThread::join`] awaits its output.
    pub fn spawn_thread<F, Fut>(&self, f: F) -> NsThread<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let netns = self.netns.clone();
        let (out_tx, out_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || {
                if let Some(ns) = &netns {
                    enter_netns(ns);
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building a current-thread runtime");
                let out = runtime.block_on(async move {
                    tokio::select! {
                        out = f() => Some(out),
                        _ = stop_rx => None,
                    }
                });
                if let Some(out) = out {
                    let _ = out_tx.send(out);
                }
            })
            .expect("spawning a thread");
        NsThread {
            out: out_rx,
            _stop: stop_tx,
            thread: Some(thread),
        }
    }
}

/// A future running on its own thread inside a namespace; see [`Host::spawn_thread`].
#[derive(Debug)]
pub struct NsThread<T> {
    out: oneshot::Receiver<T>,
    _stop: oneshot::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl<T> NsThread<T> {
    /// The future's output; re-raises its panic. Wrap it in a timeout.
    pub async fn join(mut self) -> T {
        match (&mut self.out).await {
            Ok(out) => out,
            Err(_) => {
                let thread = self.thread.take().expect("joined once");
                // The sender is gone, so the thread is finishing: this join is short.
                match thread.join() {
                    Err(panic) => std::panic::resume_unwind(panic),
                    Ok(()) => unreachable!("the thread sends its output unless stopped"),
                }
            }
        }
    }
}

/// Writes `(key, value)` sysctls (`net.ipv4.ip_forward`) of namespace `ns`: `/proc/sys/net`
/// shows the namespace of the thread that opens it.
pub(super) fn sysctl(ns: &str, settings: &[(&str, &str)]) {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            enter_netns(ns);
            for (key, value) in settings {
                let path = format!("/proc/sys/{}", key.replace('.', "/"));
                std::fs::write(&path, value)
                    .unwrap_or_else(|e| panic!("netns world: {ns}: write {path}: {e}"));
            }
        });
    });
}

/// Moves the calling thread into the named network namespace.
fn enter_netns(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("netns world: open {path}: {e}"));
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("netns world: setns into {ns}: {e}"));
}
