//! Prometheus metrics of the node.

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use strata_storage::TieredStats;

/// All metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// Client requests by route and cache outcome.
    pub requests: IntCounterVec,
    /// Body bytes sent to clients by route and source (`cache`, `origin`).
    pub bytes_served: IntCounterVec,
    /// Requests Strata sent to origins, by route.
    pub origin_requests: IntCounterVec,
    /// Cache fills by result (`stored`, `incomplete`, `store_error`, `aborted`).
    pub fills: IntCounterVec,
    /// Storage counters, refreshed at each scrape.
    storage: IntGaugeVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
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
        }
    }

    /// The Prometheus text exposition, with storage figures from `stats`.
    pub fn render(&self, stats: &TieredStats) -> Vec<u8> {
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
