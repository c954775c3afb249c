//! A provider that the gateway admits but that is hostile (issue 17, B7): a raw quinn client
//! built from the public pieces of the tunnel protocol, so it can do what the real provider
//! never does — open streams it never finishes, leave the gateway's streams unread, answer with
//! an endless body or a head that never ends, send broken or oversized control frames, churn
//! names, ping without reading.
//!
//! Its QUIC windows are small and its own (`Windows`), so the memory the test process gains
//! during an attack is the gateway's, not this client's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use peercompute_identity::{Identity, PeerId, PinnedPeerServerVerifier, self_signed_cert};
use peercompute_tunnel_proto::{
    ALPN, ControlMessage, ControlReader, MAX_CONTROL_FRAME, MAX_VERSION, MIN_VERSION,
    read_stream_header, write_control,
};
use quinn::crypto::rustls::QuicClientConfig;
use tokio::task::JoinHandle;

/// The SNI a client sends when it pins the gateway's peer id (the gateway then presents its
/// self-signed tunnel certificate).
const PINNED_SNI: &str = "gateway.peercompute.invalid";

/// How long each step of the handshake may take.
const STEP: Duration = Duration::from_secs(10);

/// The client's own flow-control windows and stream grant.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Bidirectional streams the gateway may open toward us at once.
    pub grant: u32,
    /// Per-stream receive window (bytes).
    pub stream: u32,
    /// Connection receive window (bytes).
    pub conn: u32,
}

impl Default for Windows {
    fn default() -> Self {
        Self {
            grant: 4096,
            stream: 1024 * 1024,
            conn: 1024 * 1024,
        }
    }
}

/// What the hostile provider does with the streams the gateway opens toward it (visitors of
/// its names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// Never accepts them.
    NeverAccept,
    /// Accepts each and holds it without ever reading.
    NeverRead,
    /// Reads the request head, then answers 200 with a chunked body that never ends.
    EndlessBody,
    /// Reads the request head, then sends 48 KiB of response head and then a byte every 100 ms,
    /// never ending it.
    HeadNeverEnds,
    /// Reads the request head, then sends a 1 MiB response head.
    HugeHead,
}

/// The misbehaviours of issue 17's B7, shared by `tests/tests/tunnel_hostile.rs` (bounds,
/// asserted) and `tunnel-bench --hostile` (the honest provider's p99, measured with the
/// gateway in a process of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Behaviour {
    /// Opens 10,000 streams toward the gateway, writing into them, never finishing.
    OpenStreams,
    /// Accepts the gateway's streams (visitors of its name) and never reads them.
    NeverReadStreams,
    /// Answers 200 with a chunked body that never ends.
    EndlessBody,
    /// Sends 48 KiB of response head, then a byte every 100 ms.
    HeadNeverEnds,
    /// Sends a 1 MiB response head.
    HugeHead,
    /// A control frame announcing a body over the limit.
    OversizedControl,
    /// A control frame of a type nobody defined.
    UnknownControl,
    /// A control frame whose fields overrun its body.
    TruncatedControl,
    /// Registers and unregisters names as fast as the gateway takes them.
    RegisterChurn,
    /// Pings without ever reading the Pongs.
    PingNoRead,
}

impl Behaviour {
    /// Every behaviour, the stream-holding one first (while freed memory of earlier phases
    /// cannot yet hide its cost in a resident-memory figure).
    pub const ALL: [Behaviour; 10] = [
        Behaviour::NeverReadStreams,
        Behaviour::HeadNeverEnds,
        Behaviour::OpenStreams,
        Behaviour::EndlessBody,
        Behaviour::HugeHead,
        Behaviour::OversizedControl,
        Behaviour::UnknownControl,
        Behaviour::TruncatedControl,
        Behaviour::RegisterChurn,
        Behaviour::PingNoRead,
    ];

    /// What it does with the streams the gateway opens toward it.
    pub fn mode(self) -> StreamMode {
        match self {
            Self::OpenStreams => StreamMode::NeverAccept,
            Self::EndlessBody => StreamMode::EndlessBody,
            Self::HeadNeverEnds => StreamMode::HeadNeverEnds,
            Self::HugeHead => StreamMode::HugeHead,
            _ => StreamMode::NeverRead,
        }
    }

    /// Its QUIC windows.
    pub fn windows(self) -> Windows {
        match self {
            // Streams without end toward us: grant the gateway all it wants.
            Self::NeverReadStreams => Windows {
                grant: 100_000,
                ..Windows::default()
            },
            // A 1 KiB control window: the gateway's Pongs fill it in ~80 Pings, fewer than the
            // control budget's burst, so only the control-write timeout can end the stall.
            Self::PingNoRead => Windows {
                stream: 1024,
                ..Windows::default()
            },
            _ => Windows::default(),
        }
    }

    /// The raw control frame it sends, for the three broken-frame behaviours.
    pub fn raw_frame(self) -> Option<Vec<u8>> {
        match self {
            Self::OversizedControl => Some(HostileProvider::oversized_frame()),
            Self::UnknownControl => Some(HostileProvider::unknown_type_frame()),
            Self::TruncatedControl => Some(HostileProvider::truncated_frame()),
            _ => None,
        }
    }
}

/// One connected hostile provider.
#[derive(Debug)]
pub struct HostileProvider {
    pub peer: PeerId,
    pub conn: quinn::Connection,
    control: Option<quinn::SendStream>,
    reader: Option<ControlReader<quinn::RecvStream>>,
    /// Streams accepted from the gateway (by [`HostileProvider::serve`]).
    pub accepted: Arc<AtomicUsize>,
    /// Bytes written on streams (bodies, heads, stream floods).
    pub written: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
    _endpoint: quinn::Endpoint,
}

impl Drop for HostileProvider {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.conn.close(0u32.into(), b"test over");
    }
}

impl HostileProvider {
    /// Connects to the gateway at `addr` pinned to `gateway`, says Hello and reads Welcome.
    pub async fn connect(
        identity: &Identity,
        gateway: PeerId,
        addr: SocketAddr,
        windows: Windows,
    ) -> Self {
        crate::init();
        let (cert, key) = self_signed_cert(identity, &[]).expect("hostile cert");
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(PinnedPeerServerVerifier::new(gateway))
        .with_client_auth_cert(vec![cert], key)
        .expect("client cert");
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(windows.grant.into())
            .max_concurrent_uni_streams(0u32.into())
            .stream_receive_window(windows.stream.into())
            .receive_window(windows.conn.into())
            .send_window(u64::from(windows.conn))
            .keep_alive_interval(Some(Duration::from_secs(5)));
        let mut client =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).expect("quic tls")));
        client.transport_config(Arc::new(transport));
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(client);
        let conn = crate::within(
            10,
            "the hostile provider's handshake",
            endpoint.connect(addr, PINNED_SNI).expect("connect"),
        )
        .await
        .expect("handshake");
        let (mut control, recv) = crate::within(10, "control stream", conn.open_bi())
            .await
            .expect("control stream");
        let hello = ControlMessage::Hello {
            min_version: MIN_VERSION,
            max_version: MAX_VERSION,
            agent: "hostile/1".into(),
        };
        write_control(&mut control, &hello).await.expect("hello");
        let mut reader = ControlReader::new(recv);
        let welcome = tokio::time::timeout(STEP, reader.next())
            .await
            .expect("welcome in time");
        assert!(
            matches!(welcome, Ok(Some(ControlMessage::Welcome { .. }))),
            "{welcome:?}"
        );
        Self {
            peer: identity.peer_id(),
            conn,
            control: Some(control),
            reader: Some(reader),
            accepted: Arc::default(),
            written: Arc::default(),
            tasks: Vec::new(),
            _endpoint: endpoint,
        }
    }

    /// Registers `name` and returns the gateway's answer.
    pub async fn register(&mut self, name: &str) -> ControlMessage {
        let msg = ControlMessage::Register { name: name.into() };
        write_control(self.control(), &msg).await.expect("register");
        let reader = self.reader.as_mut().expect("control reader still ours");
        tokio::time::timeout(STEP, reader.next())
            .await
            .expect("an answer to Register in time")
            .expect("a readable answer")
            .expect("an answer, not the end of the stream")
    }

    /// Handles the streams the gateway opens toward us according to `mode`, in the background.
    pub fn serve(&mut self, mode: StreamMode) {
        if mode == StreamMode::NeverAccept {
            return;
        }
        let (conn, accepted, written) = (
            self.conn.clone(),
            self.accepted.clone(),
            self.written.clone(),
        );
        self.tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((send, recv)) = conn.accept_bi().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                if mode == StreamMode::NeverRead {
                    held.push((send, recv));
                    continue;
                }
                tokio::spawn(answer(mode, send, recv, written.clone()));
            }
        }));
    }

    /// Opens up to `count` streams toward the gateway within `deadline`, writing up to
    /// `bytes_each` into each in the background. Returns how many could be opened.
    pub async fn open_streams(
        &mut self,
        count: usize,
        deadline: Duration,
        bytes_each: usize,
    ) -> usize {
        let end = Instant::now() + deadline;
        let mut opened = 0;
        while opened < count {
            let left = end.saturating_duration_since(Instant::now());
            let Ok(Ok((mut send, recv))) = tokio::time::timeout(left, self.conn.open_bi()).await
            else {
                break;
            };
            opened += 1;
            let written = self.written.clone();
            self.tasks.push(tokio::spawn(async move {
                let _recv = recv;
                let chunk = vec![0x5a_u8; 64 * 1024];
                let mut sent = 0;
                while sent < bytes_each {
                    if send.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                    written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                // Never finished: the stream stays open.
                std::future::pending::<()>().await;
            }));
        }
        opened
    }

    /// Writes `bytes` as they are on the control stream (a broken or oversized frame).
    pub async fn send_raw_control(&mut self, bytes: &[u8]) {
        let _ = tokio::time::timeout(STEP, self.control().write_all(bytes)).await;
    }

    /// A control frame prefix announcing a Register body one byte over the limit.
    pub fn oversized_frame() -> Vec<u8> {
        let len = u32::try_from(MAX_CONTROL_FRAME + 1).expect("small");
        let mut frame = vec![0x03];
        frame.extend_from_slice(&len.to_be_bytes());
        frame
    }

    /// A control frame of a type nobody defined.
    pub fn unknown_type_frame() -> Vec<u8> {
        vec![0x7f, 0, 0, 0, 1, 0]
    }

    /// A Register frame whose name says 200 bytes where the body has 3.
    pub fn truncated_frame() -> Vec<u8> {
        vec![0x03, 0, 0, 0, 4, 200, b'a', b'b', b'c']
    }

    /// Registers and unregisters fresh names (`{prefix}-{i}`) as fast as allowed by `per_sec`
    /// (0: no pause), at most `max` names, reading the answers in the background. Returns the
    /// counters: messages sent, Registered and Refused answers.
    pub fn churn(&mut self, prefix: &str, per_sec: u32, max: usize) -> Churn {
        let counts = Churn::default();
        let mut reader = self.reader.take().expect("control reader still ours");
        let (registered, refused) = (counts.registered.clone(), counts.refused.clone());
        self.tasks.push(tokio::spawn(async move {
            while let Ok(Some(msg)) = reader.next().await {
                match msg {
                    ControlMessage::Registered { .. } => registered.fetch_add(1, Ordering::Relaxed),
                    ControlMessage::Refused { .. } => refused.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
        }));
        let conn = self.conn.clone();
        let mut control = self.take_control();
        let (sent, prefix) = (counts.sent.clone(), prefix.to_owned());
        self.tasks.push(tokio::spawn(async move {
            let pause = (per_sec > 0).then(|| Duration::from_secs(1) / per_sec);
            for i in 0..max {
                let name = format!("{prefix}-{i}");
                for msg in [
                    ControlMessage::Register { name: name.clone() },
                    ControlMessage::Unregister { name },
                ] {
                    let write = tokio::time::timeout(STEP, write_control(&mut control, &msg));
                    if !matches!(write.await, Ok(Ok(()))) {
                        return;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(p) = pause {
                    tokio::time::sleep(p).await;
                }
                if conn.close_reason().is_some() {
                    return;
                }
            }
        }));
        counts
    }

    /// Sends Pings as fast as the gateway takes them and never reads its control stream, in
    /// the background. Returns the count of Pings sent.
    pub fn ping_no_read(&mut self) -> Arc<AtomicU64> {
        let sent = Arc::new(AtomicU64::new(0));
        // The reader stays in `self`, never read: the gateway's Pongs pile up unread.
        let mut control = self.take_control();
        let counter = sent.clone();
        self.tasks.push(tokio::spawn(async move {
            for nonce in 0..u64::MAX {
                let ping = ControlMessage::Ping { nonce };
                // A write that waits means the gateway stopped reading; wait for ever (the
                // test bounds the phase).
                if write_control(&mut control, &ping).await.is_err() {
                    return;
                }
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
        sent
    }

    /// Why the connection ended, once it has (waits at most `within`): the QUIC close reason
    /// the gateway gave, as text.
    pub async fn closed_within(&self, within: Duration) -> Option<String> {
        let reason = tokio::time::timeout(within, self.conn.closed())
            .await
            .ok()?;
        Some(match reason {
            quinn::ConnectionError::ApplicationClosed(close) => {
                String::from_utf8_lossy(&close.reason).into_owned()
            }
            other => other.to_string(),
        })
    }

    fn take_control(&mut self) -> quinn::SendStream {
        self.control.take().expect("control stream still ours")
    }

    fn control(&mut self) -> &mut quinn::SendStream {
        self.control.as_mut().expect("control stream still ours")
    }
}

/// Counters of a [`HostileProvider::churn`].
#[derive(Debug, Clone, Default)]
pub struct Churn {
    pub sent: Arc<AtomicU64>,
    pub registered: Arc<AtomicU64>,
    pub refused: Arc<AtomicU64>,
}

/// Answers one stream the gateway opened, the hostile way.
async fn answer(
    mode: StreamMode,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    written: Arc<AtomicU64>,
) {
    if read_stream_header(&mut recv).await.is_err() {
        return;
    }
    // The request head and body stay unread past the stream header; the gateway only needs
    // them to be accepted by flow control (a GET fits).
    let _recv = recv;
    let put = |n: usize| written.fetch_add(n as u64, Ordering::Relaxed);
    match mode {
        StreamMode::EndlessBody => {
            let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            if send.write_all(head).await.is_err() {
                return;
            }
            let mut chunk = format!("{:x}\r\n", 16 * 1024).into_bytes();
            chunk.extend(std::iter::repeat_n(b'e', 16 * 1024));
            chunk.extend_from_slice(b"\r\n");
            while send.write_all(&chunk).await.is_ok() {
                put(chunk.len());
            }
        }
        StreamMode::HeadNeverEnds => {
            // 48 KiB of header lines at once (the gateway buffers them while it waits for the
            // rest), then a byte every 100 ms.
            let head = padded_head(48 * 1024, b"x-slow: ");
            if send.write_all(&head).await.is_err() {
                return;
            }
            put(head.len());
            drop(head);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if send.write_all(b"a").await.is_err() {
                    return;
                }
                put(1);
            }
        }
        StreamMode::HugeHead => {
            let head = padded_head(1024 * 1024, b"content-length: 0\r\n\r\n");
            if send.write_all(&head).await.is_ok() {
                put(head.len());
            }
            // Not held while waiting: the memory the test measures is the gateway's.
            drop(head);
            std::future::pending::<()>().await;
        }
        StreamMode::NeverAccept | StreamMode::NeverRead => {}
    }
}

/// A 200 response head of at least `size` bytes of 1 KB header lines, ending with `tail`.
fn padded_head(size: usize, tail: &[u8]) -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    let line = format!("x-pad: {}\r\n", "p".repeat(1000));
    while head.len() < size {
        head.extend_from_slice(line.as_bytes());
    }
    head.extend_from_slice(tail);
    head
}
