//! `GET /stats`: the node at a glance, as JSON: tier occupancy and hit ratios, the most
//! requested routes, fills and requests in flight, purge rules, warming progress.

use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::node::admin::{json as reply, AdminApp};

/// Routes listed, most requested first.
const TOP_ROUTES: usize = 10;

/// `hits / (hits + misses)`, or null before any lookup.
fn ratio(hits: u64, misses: u64) -> Value {
    let all = hits + misses;
    if all == 0 {
        Value::Null
    } else {
        json!(hits as f64 / all as f64)
    }
}

/// Builds the stats document.
pub(super) fn handle(app: &AdminApp) -> Response<Vec<u8>> {
    let s = app.cache.stats();
    let m = &s.memory;
    let memory = json!({
        "capacity_bytes": m.budget,
        "hits": m.hits,
        "misses": m.misses,
        "hit_ratio": ratio(m.hits, m.misses),
        "inserts": m.inserts,
        "evictions": m.evictions,
    });
    let disk = s.disk.as_ref().map(|d| {
        json!({
            "capacity_bytes": d.region_size * u64::from(d.regions),
            "regions": d.regions,
            "items": d.items,
            "hits": d.hits,
            "misses": d.misses,
            "hit_ratio": ratio(d.hits, d.misses),
            "inserts": d.inserts,
            "evicted_items": d.evicted_items,
            "checksum_failures": d.checksum_failures,
            "io_errors": d.io_errors,
            "regions_retired": d.regions_retired,
            "write_suspensions": d.write_suspensions,
            "writes_shed": d.shed_writes,
            "write_queue_bytes": d.queued_write_bytes,
            "recovered_items": d.recovered_items,
            "recovery_ms": d.recovery_ms,
        })
    });
    let routes: Vec<Value> = app
        .metrics
        .requests_by_route()
        .into_iter()
        .take(TOP_ROUTES)
        .map(|(route, requests, hits)| {
            json!({
                "route": route,
                "requests": requests,
                "hits": hits,
                "hit_ratio": ratio(hits, requests - hits),
            })
        })
        .collect();
    let (paths, prefixes, tags) = app.purges.counts();
    reply(
        StatusCode::OK,
        &json!({
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "tiers": { "memory": memory, "disk": disk },
            "top_routes": routes,
            "requests_in_flight": app.drain.in_flight(),
            "slices_filling": app.fills.slices_in_flight(),
            "purge_rules": { "paths": paths, "prefixes": prefixes, "tags": tags },
            "warm": app.warmer.counts(),
        }),
    )
}
