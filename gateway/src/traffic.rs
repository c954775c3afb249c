//! Per-app traffic: requests by status class, errors by kind, body bytes and response-head
//! latency, per route name and per tunnel, without slowing the request path.
//!
//! A [`TrafficCell`] is a handful of relaxed atomics. The route's cell is looked up once, when a
//! provider registers the name ([`Traffic::cell_for`]), and travels in the
//! [`Route`](crate::registry::Route) next to its tunnel's cell, so a request costs a few
//! `fetch_add`s and no map lookup. Cardinality is bounded twice: only registered names (from
//! allowlisted keys) ever get a cell — visitor-supplied hosts never do, 404s are counted
//! unlabelled — and past `--metrics-max-routes` new names share one cell, exported as
//! `route="other"`.
//!
//! The cells are exported by a [`Collector`] read at scrape time. A 1 s sampler
//! ([`sample_loop`]) turns them into a per-second [`TrafficTick`] for the dashboard (a
//! broadcast of its own, not an [`Event`](crate::events::Event): ticks are not numbered and
//! would flush the events' resume ring), keeps the last minute of ticks for a first paint, and
//! ends rate-limit episodes ([`Traffic::rate_limited`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::events::EventKind;
use crate::state::Shared;

/// Upper bounds of the latency buckets in seconds: 0.5 ms doubling 16 times (the unlabelled
/// `response_head_seconds` uses the same), then +Inf.
const BOUNDS: [f64; 16] = {
    let mut b = [0.0005; 16];
    let mut i = 1;
    while i < 16 {
        b[i] = b[i - 1] * 2.0;
        i += 1;
    }
    b
};
const BUCKETS: usize = BOUNDS.len() + 1;
/// Status classes 1xx..5xx.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// A rate-limit episode ends after this long without a 429.
pub(crate) const LIMIT_QUIET: Duration = Duration::from_secs(5);
/// Ticks kept for a dashboard's first paint (one a second).
const TICKS_KEPT: usize = 60;
/// Ticks a slow subscriber may fall behind by before it lags.
const TICK_CHANNEL: usize = 8;
/// The request-rate window: snapshots every 10 s, the oldest at most 60–70 s old.
const WINDOW_EVERY: Duration = Duration::from_secs(10);
const WINDOW_SLOTS: usize = 7;
/// A name's cell is dropped (its series end, its slot under the cap is free) after this long
/// without traffic once no live route holds it: withdrawn or long-offline names.
pub(crate) const EVICT_IDLE: Duration = Duration::from_secs(3600);
/// Label of the cell shared by names past the cap.
pub(crate) const OTHER: &str = "other";

/// Why a routed request got no answer from its app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The provider serving it dropped (502).
    Offline = 0,
    /// The tunnel could not carry it (502).
    Unreachable = 1,
    /// No response head in time (504).
    Timeout = 2,
    /// The visitor's body was malformed (400).
    BadBody = 3,
    /// No tunnel here, one at another gateway of the cluster (502, Retry-After).
    Elsewhere = 4,
}
const ERROR_KINDS: [&str; 5] = ["offline", "unreachable", "timeout", "bad_body", "elsewhere"];

/// The counters of one route (or one tunnel). Every update is a relaxed `fetch_add`.
#[derive(Debug, Default)]
pub(crate) struct TrafficCell {
    requests: [AtomicU64; 5],
    errors: [AtomicU64; 5],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    latency_sum_micros: AtomicU64,
}

impl TrafficCell {
    /// One answered request with `status`.
    pub(crate) fn record_status(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Relaxed);
    }

    pub(crate) fn record_error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// Request body bytes (visitor → app).
    pub(crate) fn add_in(&self, bytes: u64) {
        self.bytes_in.fetch_add(bytes, Relaxed);
    }

    /// Response body bytes (app → visitor).
    pub(crate) fn add_out(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Relaxed);
    }

    /// Time from the request to the app's response head.
    pub(crate) fn observe_head(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        self.latency[bucket].fetch_add(1, Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Relaxed);
    }

    /// A copy of the counters (each read on its own: fine for monitoring).
    pub(crate) fn counts(&self) -> Counts {
        let load = |a: &AtomicU64| a.load(Relaxed);
        Counts {
            requests: self.requests.each_ref().map(load),
            errors: self.errors.each_ref().map(load),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            latency: self.latency.each_ref().map(load),
            latency_sum_micros: load(&self.latency_sum_micros),
        }
    }
}

/// The counters of a cell at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) requests: [u64; 5],
    pub(crate) errors: [u64; 5],
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) latency: [u64; BUCKETS],
    pub(crate) latency_sum_micros: u64,
}

impl Counts {
    pub(crate) fn total_requests(&self) -> u64 {
        self.requests.iter().sum()
    }

    /// What happened since `earlier` (counters never go down; saturating anyway).
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        let sub = |a: u64, b: u64| a.saturating_sub(b);
        Self {
            requests: std::array::from_fn(|i| sub(self.requests[i], earlier.requests[i])),
            errors: std::array::from_fn(|i| sub(self.errors[i], earlier.errors[i])),
            bytes_in: sub(self.bytes_in, earlier.bytes_in),
            bytes_out: sub(self.bytes_out, earlier.bytes_out),
            latency: std::array::from_fn(|i| sub(self.latency[i], earlier.latency[i])),
            latency_sum_micros: sub(self.latency_sum_micros, earlier.latency_sum_micros),
        }
    }

    /// The `q` quantile of the response-head latency in milliseconds, interpolated within its
    /// bucket as Prometheus' `histogram_quantile` does; `None` without observations.
    pub(crate) fn quantile_ms(&self, q: f64) -> Option<f64> {
        let count: u64 = self.latency.iter().sum();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (i, n) in self.latency.iter().enumerate() {
            if *n > 0 && (below + n) as f64 >= rank {
                let Some(upper) = BOUNDS.get(i) else {
                    // +Inf: the largest finite bound is all that can be said.
                    return Some(BOUNDS[BOUNDS.len() - 1] * 1000.0);
                };
                let lower = if i == 0 { 0.0 } else { BOUNDS[i - 1] };
                let within = (rank - below as f64) / *n as f64;
                return Some((lower + (upper - lower) * within) * 1000.0);
            }
            below += n;
        }
        None
    }

    /// The figures the admin API shows.
    pub(crate) fn totals(&self) -> TrafficTotals {
        TrafficTotals {
            requests: self.total_requests(),
            status_4xx: self.requests[3],
            status_5xx: self.requests[4],
            errors: self.errors.iter().sum(),
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            p50_ms: self.quantile_ms(0.5),
            p99_ms: self.quantile_ms(0.99),
        }
    }
}

/// A route's or a provider's traffic, as the admin API shows it (its schema is `Figures`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = Figures)]
pub(crate) struct TrafficTotals {
    pub(crate) requests: u64,
    pub(crate) status_4xx: u64,
    pub(crate) status_5xx: u64,
    /// Requests the app never answered (offline, unreachable, timeout, malformed body). Each
    /// is also counted in its status class (the gateway's own 502, 504 or 400).
    pub(crate) errors: u64,
    /// Request body bytes, visitor → app.
    pub(crate) bytes_in: u64,
    /// Response body bytes, app → visitor.
    pub(crate) bytes_out: u64,
    /// Response-head latency quantiles, milliseconds (null before the first request).
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
}

/// One route's traffic during one second of a [`TrafficTick`] (flat in JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RouteTick {
    pub(crate) route: String,
    #[serde(flatten)]
    pub(crate) traffic: TrafficTotals,
}

/// The traffic of the last second, per route. Routes with no request and no byte in that
/// second are left out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TrafficTick {
    /// End of the second, milliseconds since the Unix epoch.
    pub(crate) at_unix_ms: u64,
    pub(crate) routes: Vec<RouteTick>,
}

/// What the sampler remembers of one route.
#[derive(Debug)]
struct History {
    /// Counts at the previous tick.
    last: Counts,
    /// Counts every [`WINDOW_EVERY`], oldest first, for the last minute's request rate.
    window: VecDeque<(Instant, Counts)>,
    /// The last tick with traffic (or when the sampler first saw the route).
    last_active: Instant,
}

#[derive(Debug, Default)]
struct Sampler {
    routes: HashMap<String, History>,
    ticks: VecDeque<Arc<TrafficTick>>,
}

/// Every route's cell, the shared `other` cell, the sampler's memory and the rate-limit
/// episodes. One per gateway, in [`Shared`](crate::state::Shared).
#[derive(Debug)]
pub(crate) struct Traffic {
    cells: DashMap<String, Arc<TrafficCell>>,
    other: Arc<TrafficCell>,
    /// Whether a name was ever folded into `other` (only then is it exported).
    folded: AtomicBool,
    cap: usize,
    /// Serialises inserts so the cap is exact.
    insert: Mutex<()>,
    sampler: Mutex<Sampler>,
    ticks: broadcast::Sender<Arc<TrafficTick>>,
    /// Routes refused by their host limit, and the last refusal.
    limited: DashMap<String, Instant>,
}

impl Traffic {
    /// `cap`: most names with a cell of their own (`--metrics-max-routes`).
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cells: DashMap::new(),
            other: Arc::default(),
            folded: AtomicBool::new(false),
            cap,
            insert: Mutex::new(()),
            sampler: Mutex::default(),
            ticks: broadcast::channel(TICK_CHANNEL).0,
            limited: DashMap::new(),
        }
    }

    /// The cell of registered name `name`: its own, or the shared `other` one once `cap`
    /// names have theirs. Called when a provider registers the name, never per request.
    pub(crate) fn cell_for(&self, name: &str) -> Arc<TrafficCell> {
        if let Some(cell) = self.cells.get(name) {
            return cell.clone();
        }
        // Full: no lock (offline names past the cap come here on every request).
        if self.cells.len() >= self.cap {
            self.folded.store(true, Relaxed);
            return self.other.clone();
        }
        let _guard = self.insert.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cell) = self.cells.get(name) {
            return cell.clone();
        }
        if self.cells.len() >= self.cap {
            self.folded.store(true, Relaxed);
            return self.other.clone();
        }
        let cell = Arc::<TrafficCell>::default();
        self.cells.insert(name.to_owned(), cell.clone());
        cell
    }

    /// The operator released `name`: its series end (a later owner starts from zero). Names
    /// already folded into `other` stay there.
    pub(crate) fn release(&self, name: &str) {
        self.cells.remove(name);
        let mut sampler = self.sampler.lock().unwrap_or_else(|p| p.into_inner());
        sampler.routes.remove(name);
    }

    /// Counts of `name`'s own cell (`None` for unknown or folded names).
    pub(crate) fn counts(&self, name: &str) -> Option<Counts> {
        self.cells.get(name).map(|c| c.counts())
    }

    /// Requests per second of `name` over about the last minute (0 when unknown).
    pub(crate) fn req_per_s_1m(&self, name: &str, now: Instant) -> f64 {
        let Some(current) = self.counts(name) else {
            return 0.0;
        };
        let sampler = self.sampler.lock().unwrap_or_else(|p| p.into_inner());
        let Some((since, then)) = sampler.routes.get(name).and_then(|h| h.window.front()) else {
            return 0.0;
        };
        let secs = now.saturating_duration_since(*since).as_secs_f64();
        if secs < 1.0 {
            return 0.0;
        }
        current
            .total_requests()
            .saturating_sub(then.total_requests()) as f64
            / secs
    }

    /// The ticks of the last minute, oldest first.
    pub(crate) fn ticks(&self) -> Vec<Arc<TrafficTick>> {
        let sampler = self.sampler.lock().unwrap_or_else(|p| p.into_inner());
        sampler.ticks.iter().cloned().collect()
    }

    /// Every tick from now on (one a second while the gateway runs).
    pub(crate) fn subscribe_ticks(&self) -> broadcast::Receiver<Arc<TrafficTick>> {
        self.ticks.subscribe()
    }

    /// A 429 from the host limit of registered route `name` at `now`. True when this starts
    /// an episode (the caller publishes `rate_limit_started`); [`Traffic::sample`] ends it
    /// after [`LIMIT_QUIET`] without another.
    pub(crate) fn rate_limited(&self, name: &str, now: Instant) -> bool {
        // During a flood every refusal comes here: update in place, allocate only when an
        // episode starts.
        if let Some(mut last) = self.limited.get_mut(name) {
            *last = now;
            return false;
        }
        self.limited.insert(name.to_owned(), now).is_none()
    }

    /// One sampler step at `now`: the tick of the second that ended (also broadcast and kept),
    /// and the routes whose rate-limit episode ended.
    pub(crate) fn sample(&self, now: Instant, at_unix_ms: u64) -> (Arc<TrafficTick>, Vec<String>) {
        let mut named: Vec<(String, Counts)> = self
            .cells
            .iter()
            .map(|e| (e.key().clone(), e.value().counts()))
            .collect();
        if self.folded.load(Relaxed) {
            named.push((OTHER.to_owned(), self.other.counts()));
        }
        let mut sampler = self.sampler.lock().unwrap_or_else(|p| p.into_inner());
        sampler
            .routes
            .retain(|name, _| name == OTHER || self.cells.contains_key(name));
        let mut routes = Vec::new();
        let mut idle = Vec::new();
        for (name, counts) in named {
            let history = sampler
                .routes
                .entry(name.clone())
                .or_insert_with(|| History {
                    last: Counts::default(),
                    window: VecDeque::from([(now, Counts::default())]),
                    last_active: now,
                });
            let delta = counts.since(&history.last);
            history.last = counts;
            if history
                .window
                .back()
                .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= WINDOW_EVERY)
            {
                if history.window.len() == WINDOW_SLOTS {
                    history.window.pop_front();
                }
                history.window.push_back((now, counts));
            }
            if delta.total_requests() > 0 || delta.bytes_in > 0 || delta.bytes_out > 0 {
                history.last_active = now;
                routes.push(RouteTick {
                    route: name,
                    traffic: delta.totals(),
                });
            } else if name != OTHER
                && now.saturating_duration_since(history.last_active) >= EVICT_IDLE
            {
                idle.push(name);
            }
        }
        // A cell only the table holds (no live route, no request in flight) that has been idle
        // this long gives its slot back; checked under the table's shard lock, so a
        // registration either got it before (and it stays) or creates a new one after.
        for name in idle {
            if self
                .cells
                .remove_if(&name, |_, cell| Arc::strong_count(cell) == 1)
                .is_some()
            {
                sampler.routes.remove(&name);
            }
        }
        routes.sort_by(|a, b| a.route.cmp(&b.route));
        let tick = Arc::new(TrafficTick { at_unix_ms, routes });
        if sampler.ticks.len() == TICKS_KEPT {
            sampler.ticks.pop_front();
        }
        sampler.ticks.push_back(tick.clone());
        drop(sampler);
        // Err only means nobody is watching.
        let _ = self.ticks.send(tick.clone());

        let mut ended: Vec<String> = self
            .limited
            .iter()
            .filter(|e| now.saturating_duration_since(*e.value()) >= LIMIT_QUIET)
            .map(|e| e.key().clone())
            .collect();
        ended.sort();
        // A refusal since the scan keeps its episode going.
        ended.retain(|name| {
            self.limited
                .remove_if(name, |_, last| {
                    now.saturating_duration_since(*last) >= LIMIT_QUIET
                })
                .is_some()
        });
        (tick, ended)
    }

    /// Every exported cell, by name (sorted), `other` last when it was used.
    fn exported(&self) -> Vec<(String, Counts)> {
        let mut all: Vec<(String, Counts)> = self
            .cells
            .iter()
            .map(|e| (e.key().clone(), e.value().counts()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        if self.folded.load(Relaxed) {
            all.push((OTHER.to_owned(), self.other.counts()));
        }
        all
    }
}

/// Samples the gateway's traffic every second until `stop`, publishing `rate_limit_ended`.
pub(crate) async fn sample_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (_, ended) = shared.traffic.sample(Instant::now(), at_unix_ms);
        for route in ended {
            shared.events.publish(EventKind::RateLimitEnded { route });
        }
    }
}

/// One counter family's values of a cell, by the value of its second label.
type Labelled = fn(&Counts) -> Vec<(&'static str, u64)>;

/// Exports the cells at scrape time as `peercompute_gateway_route_*` series.
#[derive(Debug)]
pub(crate) struct TrafficCollector(pub(crate) Arc<Traffic>);

impl Collector for TrafficCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cells = self.0.exported();
        let counters: [(&str, &str, &str, Labelled); 3] = [
            (
                "route_requests",
                "Requests answered per app (route), by status class",
                "class",
                |c| CLASSES.into_iter().zip(c.requests).collect(),
            ),
            (
                "route_errors",
                "Requests per app that its provider never answered, by kind",
                "kind",
                |c| ERROR_KINDS.into_iter().zip(c.errors).collect(),
            ),
            (
                "route_body_bytes",
                "Body bytes proxied per app, by direction",
                "direction",
                |c| vec![("upload", c.bytes_in), ("download", c.bytes_out)],
            ),
        ];
        for (name, help, label, values) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (route, c) in &cells {
                for (value, n) in values(c) {
                    let labels = [("route", route.as_str()), (label, value)];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "route_response_head_seconds",
            "Time from request to response head per app",
            None,
            MetricType::Histogram,
        )?;
        for (route, c) in &cells {
            let buckets: Vec<(f64, u64)> = BOUNDS
                .iter()
                .copied()
                .chain([f64::MAX])
                .zip(c.latency)
                .collect();
            let count = c.latency.iter().sum();
            let sum = c.latency_sum_micros as f64 / 1e6;
            let labels = [("route", route.as_str())];
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
