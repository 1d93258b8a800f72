//! Prometheus metrics of the node, named as Prometheus asks (base units, `_total` counters,
//! `_bytes`, `_seconds`), with typed labels so the exposition cannot drift from its
//! documentation (the README lists every family).
//!
//! Request, origin and fill figures are counted where they happen; the tiers' own counters
//! are read at each scrape and carried into counters by their increase since the last one.
//!
//! - [`labels`]: the typed label values (fill results, byte sources, origin errors).

use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use strata_storage::TieredStats;

mod labels;

pub(crate) use labels::{ByteSource, FillResult, OriginError};

/// What a scrape reads from outside the counters.
pub(crate) struct Snapshot {
    /// The tiers' counters.
    pub(crate) storage: TieredStats,
    /// Requests being served.
    pub(crate) in_flight: usize,
    /// Client connections open on the public listener, when they can be counted.
    pub(crate) connections: Option<u64>,
}

/// Buckets for request durations and times to first byte: 100 µs to a minute.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0,
];

/// Storage counters carried into Prometheus counters: (family, tier, read from a snapshot).
type StorageCounter = (&'static str, &'static str, fn(&TieredStats) -> Option<u64>);

/// Every storage counter, by family and tier.
const STORAGE_COUNTERS: [StorageCounter; 13] = [
    ("hits", "memory", |s| Some(s.memory.hits)),
    ("misses", "memory", |s| Some(s.memory.misses)),
    ("inserts", "memory", |s| Some(s.memory.inserts)),
    ("evictions", "memory", |s| Some(s.memory.evictions)),
    ("hits", "disk", |s| s.disk.as_ref().map(|d| d.hits)),
    ("misses", "disk", |s| s.disk.as_ref().map(|d| d.misses)),
    ("inserts", "disk", |s| s.disk.as_ref().map(|d| d.inserts)),
    ("evictions", "disk", |s| {
        s.disk.as_ref().map(|d| d.evicted_items)
    }),
    ("io_errors", "disk", |s| {
        s.disk.as_ref().map(|d| d.io_errors)
    }),
    ("checksum_failures", "disk", |s| {
        s.disk.as_ref().map(|d| d.checksum_failures)
    }),
    ("regions_retired", "disk", |s| {
        s.disk.as_ref().map(|d| d.regions_retired)
    }),
    ("write_suspensions", "disk", |s| {
        s.disk.as_ref().map(|d| d.write_suspensions)
    }),
    ("writes_shed", "disk", |s| {
        s.disk.as_ref().map(|d| d.shed_writes)
    }),
];

/// All metrics, registered in one registry.
pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    response_bytes: IntCounterVec,
    duration: HistogramVec,
    ttfb: HistogramVec,
    origin_requests: IntCounterVec,
    origin_errors: IntCounterVec,
    origin_duration: HistogramVec,
    coalesced: IntCounterVec,
    fills: IntCounterVec,
    purges: IntCounterVec,
    warm: IntCounterVec,
    limited: IntCounterVec,
    refused_connections: IntCounterVec,
    client_timeouts: IntCounterVec,
    /// `strata_cache_{hits,misses,inserts,evictions}_total{tier}`.
    tier_counters: std::collections::HashMap<&'static str, IntCounterVec>,
    disk_io_errors: IntCounter,
    disk_checksum_failures: IntCounter,
    disk_regions_retired: IntCounter,
    disk_write_suspensions: IntCounter,
    disk_writes_shed: IntCounter,
    disk_write_queue: IntGauge,
    used_bytes: IntGaugeVec,
    capacity_bytes: IntGaugeVec,
    items: IntGaugeVec,
    recovery_seconds: prometheus::Gauge,
    recovered_items: IntGauge,
    in_flight: IntGauge,
    connections: IntGauge,
    /// The storage counters as last read, to add only their increase.
    last: Mutex<Vec<u64>>,
}

impl Metrics {
    /// Creates and registers every metric; `io_engine` names the disk tier's IO engine
    /// (`none` without one) in `strata_build_info`.
    pub(crate) fn new(io_engine: &str) -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("unique metric");
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };
        let histogram = |name: &str, help: &str| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )
            .expect("valid metric");
            reg(Box::new(h.clone()));
            h
        };
        let mut tier_counters = std::collections::HashMap::new();
        for (family, help) in [
            ("hits", "Tier lookups that found the key"),
            ("misses", "Tier lookups that did not"),
            ("inserts", "Values written to the tier"),
            ("evictions", "Values the tier dropped to make room"),
        ] {
            let c = counter(&format!("strata_cache_{family}_total"), help, &["tier"]);
            tier_counters.insert(family, c);
        }
        let single = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let build = gauge(
            "strata_build_info",
            "The running build: version and disk IO engine (value 1)",
            &["version", "io_engine"],
        );
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), io_engine])
            .set(1);
        let recovery_seconds = prometheus::Gauge::new(
            "strata_recovery_duration_seconds",
            "How long the disk tier's start-up recovery took",
        )
        .expect("valid metric");
        reg(Box::new(recovery_seconds.clone()));
        let int_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };
        #[cfg(target_os = "linux")]
        reg(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let m = Metrics {
            requests: counter(
                "strata_requests_total",
                "Client requests by route, cache outcome and status class",
                &["route", "cache", "status_class"],
            ),
            response_bytes: counter(
                "strata_response_bytes_total",
                "Body bytes sent to clients, by route and where they came from",
                &["route", "source"],
            ),
            duration: histogram(
                "strata_request_duration_seconds",
                "Time from a request's arrival to its last byte",
            ),
            ttfb: histogram(
                "strata_time_to_first_byte_seconds",
                "Time from a request's arrival to its response header",
            ),
            origin_requests: counter(
                "strata_origin_requests_total",
                "Requests sent to origins",
                &["route"],
            ),
            origin_errors: counter(
                "strata_origin_errors_total",
                "Origin requests that failed, by kind (connect, timeout, protocol, status)",
                &["route", "kind"],
            ),
            origin_duration: histogram(
                "strata_origin_duration_seconds",
                "Time from sending an origin request to its response header",
            ),
            coalesced: counter(
                "strata_coalesced_requests_total",
                "Requests that waited for another request's origin fetch instead of their own",
                &["route"],
            ),
            fills: counter(
                "strata_fills_total",
                "Slices (or unsized objects) filled from origins, by result",
                &["result"],
            ),
            purges: counter(
                "strata_purges_total",
                "Purge rules recorded, by kind (path, prefix, tag)",
                &["kind"],
            ),
            client_timeouts: counter(
                "strata_client_timeouts_total",
                "Client connections cut by a clock: a request header too slow (header), or no bytes either way (idle)",
                &["kind"],
            ),
            refused_connections: counter(
                "strata_refused_connections_total",
                "Client connections closed at once because a cap was reached (per_client, node)",
                &["limit"],
            ),
            limited: counter(
                "strata_limited_requests_total",
                "Requests refused with 429 because their client was over a limit (rate, in_flight)",
                &["limit"],
            ),
            warm: counter(
                "strata_warm_total",
                "Paths warmed from the admin API, by result (ok, failed)",
                &["result"],
            ),
            tier_counters,
            disk_io_errors: single(
                "strata_disk_io_errors_total",
                "Failed reads or writes of the disk tier's device",
            ),
            disk_checksum_failures: single(
                "strata_disk_checksum_failures_total",
                "Disk tier reads whose checksum did not match (served as misses)",
            ),
            disk_regions_retired: single(
                "strata_disk_regions_retired_total",
                "Disk tier regions taken out of use after failing again and again",
            ),
            disk_write_suspensions: single(
                "strata_disk_write_suspensions_total",
                "Times disk tier writes were suspended for a back-off after failing everywhere",
            ),
            disk_writes_shed: single(
                "strata_disk_writes_shed_total",
                "Disk tier writes shed because cache.disk.write_queue bytes were already waiting for the device",
            ),
            disk_write_queue: int_gauge(
                "strata_disk_write_queue_bytes",
                "Bytes of disk tier writes waiting for the device",
            ),
            used_bytes: gauge(
                "strata_cache_used_bytes",
                "Bytes the tier holds (the disk tier: regions in use)",
                &["tier"],
            ),
            capacity_bytes: gauge(
                "strata_cache_capacity_bytes",
                "Bytes the tier may hold",
                &["tier"],
            ),
            items: gauge(
                "strata_cache_items",
                "Values the tier holds (disk tier only)",
                &["tier"],
            ),
            recovery_seconds,
            recovered_items: int_gauge(
                "strata_recovered_items",
                "Items the disk tier's start-up recovery found intact",
            ),
            in_flight: int_gauge("strata_requests_in_flight", "Requests being served"),
            connections: int_gauge(
                "strata_open_connections",
                "Client connections open on the public listener",
            ),
            last: Mutex::new(vec![0; STORAGE_COUNTERS.len()]),
            registry,
        };
        // Shown at zero from the start, so alerts on them need no first event.
        for (family, labels) in [
            (&m.client_timeouts, ["header", "idle"]),
            (&m.refused_connections, ["per_client", "node"]),
            (&m.limited, ["rate", "in_flight"]),
        ] {
            for l in labels {
                family.with_label_values(&[l]);
            }
        }
        m
    }

    /// Shows `route`'s origin and coalescing series from the start, at zero: an alert on an
    /// error rate needs the series before the first error.
    pub(crate) fn known_route(&self, route: &str) {
        self.origin_requests.with_label_values(&[route]);
        self.coalesced.with_label_values(&[route]);
        for kind in [
            OriginError::Connect,
            OriginError::Timeout,
            OriginError::Protocol,
            OriginError::Status,
        ] {
            self.origin_errors
                .with_label_values(&[route, kind.as_str()]);
        }
    }

    /// Counts a finished client request of `route`: its cache `outcome`, status, total
    /// duration and time to first byte (when a header was written).
    pub(crate) fn request(
        &self,
        route: &str,
        outcome: &str,
        status: Option<u16>,
        duration: Duration,
        ttfb: Option<Duration>,
    ) {
        let class = match status.map(|s| s / 100) {
            Some(1) => "1xx",
            Some(2) => "2xx",
            Some(3) => "3xx",
            Some(4) => "4xx",
            Some(5) => "5xx",
            _ => "none",
        };
        self.requests
            .with_label_values(&[route, outcome, class])
            .inc();
        self.duration
            .with_label_values(&[route])
            .observe(duration.as_secs_f64());
        if let Some(t) = ttfb {
            self.ttfb
                .with_label_values(&[route])
                .observe(t.as_secs_f64());
        }
    }

    /// Counts `n` body bytes sent to a client of `route` from `source`.
    pub(crate) fn served(&self, route: &str, source: ByteSource, n: u64) {
        self.response_bytes
            .with_label_values(&[route, source.as_str()])
            .inc_by(n);
    }

    /// Counts a request sent to the origin of `route`.
    pub(crate) fn origin_request(&self, route: &str) {
        self.origin_requests.with_label_values(&[route]).inc();
    }

    /// Records how long the origin of `route` took to answer.
    pub(crate) fn origin_answered(&self, route: &str, took: Duration) {
        self.origin_duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// Counts a failed origin request of `route`.
    pub(crate) fn origin_error(&self, route: &str, kind: OriginError) {
        self.origin_errors
            .with_label_values(&[route, kind.as_str()])
            .inc();
    }

    /// Counts a request of `route` that waited for another's fetch.
    pub(crate) fn coalesced(&self, route: &str) {
        self.coalesced.with_label_values(&[route]).inc();
    }

    /// Counts a fill that ended with `result`.
    pub(crate) fn fill(&self, result: FillResult) {
        self.fills.with_label_values(&[result.as_str()]).inc();
    }

    /// Counts a client connection cut by its `kind` clock (`header`, `idle`).
    pub(crate) fn client_timeout(&self, kind: &str) {
        self.client_timeouts.with_label_values(&[kind]).inc();
    }

    /// Counts a client connection closed at once for being over the cap `limit`.
    pub(crate) fn refused_connection(&self, limit: &str) {
        self.refused_connections.with_label_values(&[limit]).inc();
    }

    /// Counts a request refused because its client is over a limit (`rate`, `in_flight`).
    pub(crate) fn limited(&self, limit: &str) {
        self.limited.with_label_values(&[limit]).inc();
    }

    /// Counts a purge rule of `kind`.
    pub(crate) fn purge(&self, kind: &str) {
        self.purges.with_label_values(&[kind]).inc();
    }

    /// Counts a warmed path by `result`.
    pub(crate) fn warm(&self, result: &str) {
        self.warm.with_label_values(&[result]).inc();
    }

    /// Requests so far per route: (route, requests, hits), most requested first.
    pub(crate) fn requests_by_route(&self) -> Vec<(String, u64, u64)> {
        let mut by: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for family in self.registry.gather() {
            if family.name() != "strata_requests_total" {
                continue;
            }
            for m in family.get_metric() {
                let label = |n: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == n)
                        .map(|l| l.value().to_string())
                        .unwrap_or_default()
                };
                let n = m.get_counter().get_value() as u64;
                let e = by.entry(label("route")).or_default();
                e.0 += n;
                if label("cache") == "hit" {
                    e.1 += n;
                }
            }
        }
        let mut out: Vec<_> = by.into_iter().map(|(r, (n, h))| (r, n, h)).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// The Prometheus text exposition, with the figures read at this scrape.
    pub(crate) fn render(&self, now: &Snapshot) -> Vec<u8> {
        let s = &now.storage;
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            for (i, (family, tier, read)) in STORAGE_COUNTERS.iter().enumerate() {
                let Some(v) = read(s) else { continue };
                let add = v.saturating_sub(last[i]);
                last[i] = v;
                match *family {
                    "io_errors" => self.disk_io_errors.inc_by(add),
                    "checksum_failures" => self.disk_checksum_failures.inc_by(add),
                    "regions_retired" => self.disk_regions_retired.inc_by(add),
                    "write_suspensions" => self.disk_write_suspensions.inc_by(add),
                    "writes_shed" => self.disk_writes_shed.inc_by(add),
                    f => {
                        if let Some(c) = self.tier_counters.get(f) {
                            c.with_label_values(&[tier]).inc_by(add);
                        }
                    }
                }
            }
        }
        let set = |g: &IntGaugeVec, tier: &str, v: u64| {
            g.with_label_values(&[tier])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.capacity_bytes, "memory", s.memory.budget);
        set(&self.used_bytes, "memory", s.memory.used);
        if let Some(d) = &s.disk {
            set(
                &self.capacity_bytes,
                "disk",
                d.region_size * u64::from(d.regions),
            );
            set(&self.used_bytes, "disk", d.region_size * d.regions_in_use);
            set(&self.items, "disk", d.items);
            self.recovery_seconds.set(d.recovery_ms as f64 / 1000.0);
            self.recovered_items
                .set(i64::try_from(d.recovered_items).unwrap_or(i64::MAX));
            self.disk_write_queue
                .set(i64::try_from(d.queued_write_bytes).unwrap_or(i64::MAX));
        }
        self.in_flight
            .set(i64::try_from(now.in_flight).unwrap_or(i64::MAX));
        if let Some(c) = now.connections {
            self.connections.set(i64::try_from(c).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new("none")
    }
}
