//! Prometheus metrics of the node: the counters every layer increments, with typed labels so
//! the exposition cannot drift from its documentation.

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use strata_storage::TieredStats;

/// How a cache fill ended (the `result` label of `strata_cache_fills_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FillResult {
    /// A slice (or a whole unknown-length object) reached the tiers.
    Stored,
    /// The origin body ended early or failed.
    Incomplete,
    /// A tier refused or failed the write.
    StoreError,
    /// Every interested client left, so the fill stopped.
    Cancelled,
}

impl FillResult {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FillResult::Stored => "stored",
            FillResult::Incomplete => "incomplete",
            FillResult::StoreError => "store_error",
            FillResult::Cancelled => "cancelled",
        }
    }
}

/// Where body bytes sent to a client came from (the `source` label of `strata_bytes_served_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteSource {
    /// The tiers (or a complete slice of a fill in flight).
    Cache,
    /// The origin, as it arrived.
    Origin,
}

impl ByteSource {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ByteSource::Cache => "cache",
            ByteSource::Origin => "origin",
        }
    }
}

/// All metrics, registered in one registry.
pub(crate) struct Metrics {
    registry: Registry,
    /// Client requests by route and cache outcome.
    requests: IntCounterVec,
    /// Body bytes sent to clients by route and [`ByteSource`].
    bytes_served: IntCounterVec,
    /// Requests Strata sent to origins, by route.
    origin_requests: IntCounterVec,
    /// Cache fills by [`FillResult`].
    fills: IntCounterVec,
    /// Storage counters, refreshed at each scrape.
    storage: IntGaugeVec,
    /// Purge rules recorded, by kind.
    purges: IntCounterVec,
    /// Paths warmed, by result.
    warm: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let requests = counter(
            "strata_requests_total",
            "Client requests by route and cache outcome",
            &["route", "cache"],
        );
        let bytes_served = counter(
            "strata_bytes_served_total",
            "Body bytes sent to clients",
            &["route", "source"],
        );
        let origin_requests = counter(
            "strata_origin_requests_total",
            "Requests sent to origins",
            &["route"],
        );
        let fills = counter(
            "strata_cache_fills_total",
            "Cache fills by result",
            &["result"],
        );
        let purges = counter(
            "strata_purges_total",
            "Purge rules recorded, by kind (path, prefix, tag)",
            &["kind"],
        );
        let warm = counter(
            "strata_warm_total",
            "Paths warmed from the admin API, by result (ok, failed)",
            &["result"],
        );
        let storage = IntGaugeVec::new(
            Opts::new("strata_storage", "Storage tier counters and sizes"),
            &["tier", "stat"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(storage.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            requests,
            bytes_served,
            origin_requests,
            fills,
            storage,
            purges,
            warm,
        }
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

    /// Counts a purge rule of `kind`.
    pub(crate) fn purge(&self, kind: &str) {
        self.purges.with_label_values(&[kind]).inc();
    }

    /// Counts a client request of `route` with the cache outcome `label`.
    pub(crate) fn request(&self, route: &str, label: &str) {
        self.requests.with_label_values(&[route, label]).inc();
    }

    /// Counts `n` body bytes sent to a client of `route` from `source`.
    pub(crate) fn served(&self, route: &str, source: ByteSource, n: u64) {
        self.bytes_served
            .with_label_values(&[route, source.as_str()])
            .inc_by(n);
    }

    /// Counts a request sent to the origin of `route`.
    pub(crate) fn origin_request(&self, route: &str) {
        self.origin_requests.with_label_values(&[route]).inc();
    }

    /// Counts a fill that ended with `result`.
    pub(crate) fn fill(&self, result: FillResult) {
        self.fills.with_label_values(&[result.as_str()]).inc();
    }

    /// The Prometheus text exposition, with storage figures from `stats`.
    pub(crate) fn render(&self, stats: &TieredStats) -> Vec<u8> {
        let set = |tier: &str, stat: &str, v: u64| {
            self.storage
                .with_label_values(&[tier, stat])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        let m = &stats.memory;
        set("memory", "hits", m.hits);
        set("memory", "misses", m.misses);
        set("memory", "inserts", m.inserts);
        set("memory", "evictions", m.evictions);
        set("memory", "rejected_too_large", m.rejected_too_large);
        set("memory", "budget_bytes", m.budget);
        if let Some(d) = &stats.disk {
            set("disk", "hits", d.hits);
            set("disk", "misses", d.misses);
            set("disk", "inserts", d.inserts);
            set("disk", "insert_bytes", d.insert_bytes);
            set("disk", "checksum_failures", d.checksum_failures);
            set("disk", "io_errors", d.io_errors);
            set("disk", "evicted_regions", d.evicted_regions);
            set("disk", "evicted_items", d.evicted_items);
            set("disk", "rejected_busy", d.rejected_busy);
            set("disk", "items", d.items);
            set("disk", "regions", d.regions as u64);
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
