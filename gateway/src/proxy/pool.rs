//! Idle upstream HTTP/1.1 connections, one small pool per route registration.
//!
//! Each entry is the request half of a hyper HTTP/1.1 client connection running on one QUIC
//! stream; the provider splices that stream to one TCP connection to the app, so reusing an
//! entry reuses both the stream and the app's keep-alive connection. A pool belongs to one
//! [`Route`](crate::registry::Route) value — one name on one tunnel connection, from its
//! registration until it is replaced or withdrawn — and the registry [closes](IdlePool::close)
//! it then, so a stream never outlives the registration it was opened for.
//!
//! Entries are taken newest first (the freshest stream is the least likely to have been closed
//! by the app), and dropped when older than [`IDLE_TIMEOUT`] — under the 5 s keep-alive
//! timeout of common app servers, so the gateway closes first — when the pool holds
//! [`MAX_IDLE_PER_ROUTE`] already, or when the connection is no longer usable. Dropping an
//! entry closes its stream, and the provider then closes its app connection. The pool is
//! sans-IO: callers pass `now`, and a timer calls [`IdlePool::evict_expired`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Idle streams kept per route; more concurrent requests than this still work, their streams
/// are closed when they finish.
pub(crate) const MAX_IDLE_PER_ROUTE: usize = 128;

/// How long a stream may wait unused before it is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A connection handle the pool can judge.
pub(crate) trait Reusable {
    /// Whether a new request could be sent on it now.
    fn is_reusable(&self) -> bool;
}

impl<B> Reusable for hyper::client::conn::http1::SendRequest<B> {
    fn is_reusable(&self) -> bool {
        !self.is_closed() && self.is_ready()
    }
}

/// The idle connections of one route registration.
pub(crate) struct IdlePool<T> {
    inner: Mutex<Inner<T>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// The tunnel's stream permits, held by idle connections too (see [`IdlePool::checkin`]).
    permits: Option<Arc<Semaphore>>,
}

struct Inner<T> {
    /// Set by [`IdlePool::close`]: nothing is kept any more.
    closed: bool,
    /// Oldest first.
    idle: VecDeque<Idle<T>>,
}

struct Idle<T> {
    conn: T,
    since: Instant,
}

impl<T: Reusable> Default for IdlePool<T> {
    fn default() -> Self {
        Self::new(MAX_IDLE_PER_ROUTE, IDLE_TIMEOUT)
    }
}

impl<T> fmt::Debug for IdlePool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("IdlePool")
            .field("idle", &inner.idle.len())
            .field("closed", &inner.closed)
            .finish()
    }
}

impl<T: Reusable> IdlePool<T> {
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                closed: false,
                idle: VecDeque::new(),
            }),
            max_idle,
            idle_timeout,
            permits: None,
        }
    }

    /// A pool of a tunnel whose open streams each hold one of `permits`: a connection checked
    /// in while none is left is closed instead of kept, so its permit goes to a request
    /// waiting for one rather than sitting idle.
    pub(crate) fn with_permits(mut self, permits: Arc<Semaphore>) -> Self {
        self.permits = Some(permits);
        self
    }

    /// The most recently returned usable connection, if any; expired and unusable ones met
    /// on the way are dropped.
    pub(crate) fn checkout(&self, now: Instant) -> Option<T> {
        let mut dropped = Vec::new();
        let found = {
            let mut inner = self.lock();
            loop {
                let Some(entry) = inner.idle.pop_back() else {
                    break None;
                };
                if now.saturating_duration_since(entry.since) < self.idle_timeout
                    && entry.conn.is_reusable()
                {
                    break Some(entry.conn);
                }
                dropped.push(entry);
            }
        };
        // Closing streams happens outside the lock.
        drop(dropped);
        found
    }

    /// Returns a connection whose previous exchange completed. It is dropped instead when the
    /// pool is closed, the connection unusable or the tunnel out of stream permits; a full
    /// pool drops its oldest entry.
    pub(crate) fn checkin(&self, conn: T, now: Instant) {
        if !conn.is_reusable()
            || self
                .permits
                .as_ref()
                .is_some_and(|p| p.available_permits() == 0)
        {
            return;
        }
        let mut inner = self.lock();
        if inner.closed || self.max_idle == 0 {
            drop(inner);
            drop(conn);
            return;
        }
        let evicted = if inner.idle.len() >= self.max_idle {
            inner.idle.pop_front()
        } else {
            None
        };
        inner.idle.push_back(Idle { conn, since: now });
        drop(inner);
        drop(evicted);
    }

    /// Drops connections idle for the timeout or no longer usable; returns how many.
    pub(crate) fn evict_expired(&self, now: Instant) -> usize {
        let mut dropped = Vec::new();
        {
            let mut inner = self.lock();
            let mut kept = VecDeque::with_capacity(inner.idle.len());
            for entry in inner.idle.drain(..) {
                if now.saturating_duration_since(entry.since) < self.idle_timeout
                    && entry.conn.is_reusable()
                {
                    kept.push_back(entry);
                } else {
                    dropped.push(entry);
                }
            }
            inner.idle = kept;
        }
        dropped.len()
    }

    /// Drops the oldest idle connection, if there is one: its stream's permit comes back for
    /// a request that found none (idle streams count against `max_streams_per_tunnel`).
    pub(crate) fn evict_oldest(&self) -> bool {
        let oldest = self.lock().idle.pop_front();
        oldest.is_some()
    }

    /// Drops every idle connection and refuses later check-ins: the route was withdrawn,
    /// replaced or went offline.
    pub(crate) fn close(&self) {
        let idle = {
            let mut inner = self.lock();
            inner.closed = true;
            std::mem::take(&mut inner.idle)
        };
        drop(idle);
    }

    /// Idle connections held now.
    #[cfg(test)]
    pub(crate) fn idle_len(&self) -> usize {
        self.lock().idle.len()
    }
}

impl<T> IdlePool<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // Nothing in a critical section can panic halfway through an update.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A connection whose usability the test flips; `id` tells entries apart.
    #[derive(Debug, Clone)]
    struct Fake {
        id: u32,
        usable: Arc<AtomicBool>,
    }

    impl Fake {
        fn new(id: u32) -> Self {
            Self {
                id,
                usable: Arc::new(AtomicBool::new(true)),
            }
        }
    }

    impl Reusable for Fake {
        fn is_reusable(&self) -> bool {
            self.usable.load(Ordering::SeqCst)
        }
    }

    const SEC: Duration = Duration::from_secs(1);

    fn pool(max: usize) -> IdlePool<Fake> {
        IdlePool::new(max, 4 * SEC)
    }

    #[test]
    fn a_tunnel_out_of_stream_permits_keeps_nothing_idle() {
        let t0 = Instant::now();
        let permits = Arc::new(Semaphore::new(2));
        let p = pool(8).with_permits(permits.clone());
        // Both streams open (each holds a permit): the first to finish is closed, not kept.
        let (a, b) = (
            permits.clone().try_acquire_owned().expect("first"),
            permits.clone().try_acquire_owned().expect("second"),
        );
        p.checkin(Fake::new(1), t0);
        assert_eq!(p.idle_len(), 0, "kept idle at the cap");
        drop(b);
        // A permit is free again: finished streams are kept for reuse.
        p.checkin(Fake::new(2), t0);
        assert_eq!(p.idle_len(), 1);
        drop(a);
    }

    #[test]
    fn evict_oldest_drops_the_oldest_entry_only() {
        let t0 = Instant::now();
        let p = pool(8);
        assert!(!p.evict_oldest(), "nothing to evict");
        for id in 0..3 {
            p.checkin(Fake::new(id), t0);
        }
        assert!(p.evict_oldest());
        let left: Vec<u32> = std::iter::from_fn(|| p.checkout(t0).map(|f| f.id)).collect();
        assert_eq!(left, [2, 1]);
    }

    #[test]
    fn checkout_takes_newest_first() {
        let t0 = Instant::now();
        let p = pool(8);
        for id in 0..3 {
            p.checkin(Fake::new(id), t0);
        }
        let order: Vec<u32> = std::iter::from_fn(|| p.checkout(t0).map(|f| f.id)).collect();
        assert_eq!(order, [2, 1, 0]);
        assert!(p.checkout(t0).is_none());
    }

    #[test]
    fn entries_expire_at_the_idle_timeout() {
        let t0 = Instant::now();
        let cases = [
            (Duration::ZERO, true),
            (3 * SEC, true),
            (4 * SEC - Duration::from_millis(1), true),
            (4 * SEC, false),
            (60 * SEC, false),
        ];
        for (age, kept) in cases {
            let p = pool(8);
            p.checkin(Fake::new(1), t0);
            assert_eq!(p.checkout(t0 + age).is_some(), kept, "age {age:?}");
            let p = pool(8);
            p.checkin(Fake::new(1), t0);
            assert_eq!(p.evict_expired(t0 + age), usize::from(!kept), "age {age:?}");
            assert_eq!(p.idle_len(), usize::from(kept), "age {age:?}");
        }
    }

    #[test]
    fn unusable_entries_are_skipped_and_dropped() {
        let t0 = Instant::now();
        let p = pool(8);
        let dead = Fake::new(1);
        p.checkin(Fake::new(0), t0);
        p.checkin(dead.clone(), t0);
        dead.usable.store(false, Ordering::SeqCst);
        assert_eq!(p.checkout(t0).map(|f| f.id), Some(0));
        assert_eq!(p.idle_len(), 0, "the dead entry was dropped on the way");

        let gone = Fake::new(2);
        gone.usable.store(false, Ordering::SeqCst);
        p.checkin(gone, t0);
        assert_eq!(p.idle_len(), 0, "an unusable connection is never kept");
    }

    #[test]
    fn a_full_pool_drops_its_oldest() {
        let t0 = Instant::now();
        let p = pool(2);
        for id in 0..3 {
            p.checkin(Fake::new(id), t0 + SEC * id);
        }
        assert_eq!(p.idle_len(), 2);
        let order: Vec<u32> = std::iter::from_fn(|| p.checkout(t0).map(|f| f.id)).collect();
        assert_eq!(order, [2, 1]);
    }

    #[test]
    fn a_closed_pool_keeps_nothing() {
        let t0 = Instant::now();
        let p = pool(8);
        p.checkin(Fake::new(0), t0);
        p.close();
        assert_eq!(p.idle_len(), 0);
        p.checkin(Fake::new(1), t0);
        assert!(p.checkout(t0).is_none());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let t0 = Instant::now();
        let p = pool(0);
        p.checkin(Fake::new(0), t0);
        assert!(p.checkout(t0).is_none());
    }
}
