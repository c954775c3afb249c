//! A seeded user-space UDP link emulator on loopback: packet loss, delay and jitter per
//! direction, for putting a lossy, long path between a provider and a gateway (this kernel
//! has no netem, so delay cannot come from `tc`).
//!
//! [`LossyLink::start`] binds `127.0.0.1:0` and forwards every datagram it receives to
//! `upstream` from one socket per client source (so the gateway sees one peer per provider
//! endpoint), and the answers back. Each direction has its own [`Shaper`], the pure core
//! (`now` and the random source passed in, table-tested): it drops a datagram with
//! probability `loss`, or gives its release time `now + delay ± U(jitter)`. Without
//! `reorder` a datagram is never released before the previous one (jitter as queueing, order
//! kept); with `reorder` each is released on its own, as netem does. One delivery task per
//! direction holds a bounded heap of datagrams waiting for their time (a full heap drops,
//! counted apart as `overflow`). [`LossyLink::set_shape`] changes the shape live;
//! [`LossyLink::stats`] counts per direction, so the measured loss is printed beside the
//! asked one.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Datagrams waiting for their release time, per direction, before new ones are dropped
/// (about 23 MB of 1.4 kB packets: a deep router buffer).
const MAX_QUEUED: usize = 16_384;
/// Largest datagram forwarded (QUIC's are ≤ 1500 bytes on loopback with MTU discovery off,
/// up to 64 KiB with it on).
const MAX_DATAGRAM: usize = 65_535;

/// How one direction of the link treats datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Dir {
    /// Probability of dropping a datagram, 0.0..=1.0.
    pub loss: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Each datagram's delay is `delay ± U(jitter)`.
    pub jitter: Duration,
    /// Release datagrams independently (jitter reorders them) instead of in order.
    pub reorder: bool,
}

impl Dir {
    /// Loss and a fixed delay with jitter, order kept.
    pub fn new(loss: f64, delay: Duration, jitter: Duration) -> Self {
        Self {
            loss,
            delay,
            jitter,
            reorder: false,
        }
    }
}

/// Both directions of the link and the seed of its random source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkShape {
    /// Client → upstream (provider → gateway).
    pub up: Dir,
    /// Upstream → client (gateway → provider).
    pub down: Dir,
    pub seed: u64,
}

impl LinkShape {
    /// The same treatment both ways.
    pub fn symmetric(dir: Dir, seed: u64) -> Self {
        Self {
            up: dir,
            down: dir,
            seed,
        }
    }
}

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    /// Send it at this time.
    Deliver(Instant),
}

/// The pure core of one direction: decides each datagram's fate from the shape, the clock
/// and the random source it is given.
#[derive(Debug, Clone)]
pub struct Shaper {
    dir: Dir,
    last_release: Option<Instant>,
}

impl Shaper {
    pub fn new(dir: Dir) -> Self {
        Self {
            dir,
            last_release: None,
        }
    }

    /// Changes the shape; datagrams already released keep their time.
    pub fn set(&mut self, dir: Dir) {
        self.dir = dir;
    }

    /// The fate of a datagram that arrives at `now`.
    pub fn on_datagram(&mut self, now: Instant, rng: &mut impl Rng) -> Verdict {
        if self.dir.loss > 0.0 && rng.r#gen::<f64>() < self.dir.loss {
            return Verdict::Drop;
        }
        let jitter = self.dir.jitter.as_secs_f64();
        let offset = if jitter > 0.0 {
            rng.gen_range(-jitter..=jitter)
        } else {
            0.0
        };
        let delay = (self.dir.delay.as_secs_f64() + offset).max(0.0);
        let mut at = now + Duration::from_secs_f64(delay);
        if !self.dir.reorder {
            if let Some(last) = self.last_release {
                at = at.max(last);
            }
            self.last_release = Some(at);
        }
        Verdict::Deliver(at)
    }
}

/// Counters of one direction.
#[derive(Debug, Default)]
struct DirCounters {
    received: AtomicU64,
    dropped: AtomicU64,
    overflow: AtomicU64,
    forwarded: AtomicU64,
    bytes: AtomicU64,
}

impl DirCounters {
    fn snapshot(&self) -> DirStats {
        DirStats {
            received: self.received.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            overflow: self.overflow.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// What one direction did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Datagrams that arrived at the link.
    pub received: u64,
    /// Dropped on purpose (the `loss`).
    pub dropped: u64,
    /// Dropped because [`MAX_QUEUED`] datagrams were already waiting.
    pub overflow: u64,
    /// Sent on.
    pub forwarded: u64,
    /// Bytes sent on.
    pub bytes: u64,
}

impl DirStats {
    /// Measured loss (both causes) as a fraction of what arrived.
    pub fn loss(&self) -> f64 {
        if self.received == 0 {
            0.0
        } else {
            (self.dropped + self.overflow) as f64 / self.received as f64
        }
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &DirStats) -> DirStats {
        DirStats {
            received: self.received.saturating_sub(earlier.received),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            overflow: self.overflow.saturating_sub(earlier.overflow),
            forwarded: self.forwarded.saturating_sub(earlier.forwarded),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

/// Both directions' counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub up: DirStats,
    pub down: DirStats,
}

impl LinkStats {
    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &LinkStats) -> LinkStats {
        LinkStats {
            up: self.up.since(&earlier.up),
            down: self.down.since(&earlier.down),
        }
    }
}

impl std::fmt::Display for LinkStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "measured loss up {:.2} % of {} datagrams, down {:.2} % of {}",
            self.up.loss() * 100.0,
            self.up.received,
            self.down.loss() * 100.0,
            self.down.received
        )
    }
}

/// A datagram waiting for its time: ordered by time, then arrival.
struct Pending {
    at: Instant,
    seq: u64,
    bytes: Vec<u8>,
    socket: Arc<UdpSocket>,
    /// `None`: the socket is connected.
    to: Option<SocketAddr>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One direction's state shared by the tasks that feed it.
struct Direction {
    shaper: Mutex<(Shaper, StdRng)>,
    counters: DirCounters,
    queue: mpsc::Sender<Pending>,
    seq: AtomicU64,
}

impl Direction {
    fn new(dir: Dir, seed: u64, tasks: &mut JoinSet<()>) -> Arc<Self> {
        let (queue, rx) = mpsc::channel(MAX_QUEUED);
        let direction = Arc::new(Self {
            shaper: Mutex::new((Shaper::new(dir), StdRng::seed_from_u64(seed))),
            counters: DirCounters::default(),
            queue,
            seq: AtomicU64::new(0),
        });
        tasks.spawn(deliver(rx, direction.clone()));
        direction
    }

    /// Shapes one datagram and queues it for delivery (or counts it dropped).
    fn offer(&self, bytes: &[u8], socket: &Arc<UdpSocket>, to: Option<SocketAddr>) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let verdict = {
            let mut guard = self.shaper.lock().expect("shaper lock is never poisoned");
            let (shaper, rng) = &mut *guard;
            shaper.on_datagram(Instant::now(), rng)
        };
        let Verdict::Deliver(at) = verdict else {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let pending = Pending {
            at,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            bytes: bytes.to_vec(),
            socket: socket.clone(),
            to,
        };
        if self.queue.try_send(pending).is_err() {
            self.counters.overflow.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends each queued datagram at its time.
async fn deliver(mut rx: mpsc::Receiver<Pending>, direction: Arc<Direction>) {
    let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|Reverse(p)| p.at);
        tokio::select! {
            item = rx.recv() => match item {
                Some(p) if heap.len() < MAX_QUEUED => heap.push(Reverse(p)),
                Some(_) => {
                    direction.counters.overflow.fetch_add(1, Ordering::Relaxed);
                }
                None => return,
            },
            () = sleep_until(next) => {
                let now = Instant::now();
                while heap.peek().is_some_and(|Reverse(p)| p.at <= now) {
                    let Some(Reverse(p)) = heap.pop() else { break };
                    let sent = match p.to {
                        Some(to) => p.socket.send_to(&p.bytes, to).await,
                        None => p.socket.send(&p.bytes).await,
                    };
                    if sent.is_ok() {
                        direction.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                        direction
                            .counters
                            .bytes
                            .fetch_add(p.bytes.len() as u64, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The two directions, shared by the link's tasks.
struct LinkInner {
    up: Arc<Direction>,
    down: Arc<Direction>,
}

/// The emulator: clients send to [`LossyLink::addr`] as if it were `upstream`.
pub struct LossyLink {
    /// Where clients send (instead of the upstream address).
    pub addr: SocketAddr,
    pub upstream: SocketAddr,
    inner: Arc<LinkInner>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for LossyLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossyLink")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl LossyLink {
    /// Binds `127.0.0.1:0` and forwards to `upstream` with `shape`.
    pub async fn start(upstream: SocketAddr, shape: LinkShape) -> std::io::Result<Self> {
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = listen.local_addr()?;
        let mut tasks = JoinSet::new();
        let inner = Arc::new(LinkInner {
            up: Direction::new(shape.up, shape.seed, &mut tasks),
            down: Direction::new(shape.down, shape.seed ^ 0x9e37_79b9_7f4a_7c15, &mut tasks),
        });
        tasks.spawn(accept_up(listen, upstream, inner.clone()));
        Ok(Self {
            addr,
            upstream,
            inner,
            tasks,
        })
    }

    /// Changes both directions' shape from now on (the seed stays).
    pub fn set_shape(&self, up: Dir, down: Dir) {
        for (direction, dir) in [(&self.inner.up, up), (&self.inner.down, down)] {
            let mut guard = direction
                .shaper
                .lock()
                .expect("shaper lock is never poisoned");
            guard.0.set(dir);
        }
    }

    /// The counters of both directions so far.
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            up: self.inner.up.counters.snapshot(),
            down: self.inner.down.counters.snapshot(),
        }
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Reads what clients send; a new client source gets its own upstream socket and a task that
/// carries the answers back.
async fn accept_up(listen: Arc<UdpSocket>, upstream: SocketAddr, inner: Arc<LinkInner>) {
    let mut sessions: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut returns = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, from)) = listen.recv_from(&mut buf).await else {
            // ICMP errors surface as recv errors on some kernels: keep serving.
            continue;
        };
        let socket = match sessions.get(&from) {
            Some(s) => s.clone(),
            None => {
                let Ok(socket) = bind_connected(upstream).await else {
                    continue;
                };
                let socket = Arc::new(socket);
                sessions.insert(from, socket.clone());
                returns.spawn(carry_down(
                    socket.clone(),
                    listen.clone(),
                    from,
                    inner.clone(),
                ));
                socket
            }
        };
        inner.up.offer(&buf[..n], &socket, None);
    }
}

async fn bind_connected(upstream: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(upstream).await?;
    Ok(socket)
}

/// Carries the upstream's answers for one client back through the link.
async fn carry_down(
    socket: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    client: SocketAddr,
    inner: Arc<LinkInner>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => inner.down.offer(&buf[..n], &listen, Some(client)),
            // A closed upstream port answers ICMP "unreachable": keep listening (the
            // gateway may come back on the same port).
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[cfg(test)]
#[path = "lossy_link_tests.rs"]
mod tests;
