//! What the cache holds for one URL key, for the operator (`GET /inspect`): the stored
//! response (status, header fields, age and lifetime, size and slices), or the request
//! headers its variants are chosen by, and which tier holds each slice.

use std::time::SystemTime;

use serde_json::{json, Value};
use strata_storage::TieredCache;

use crate::cache::key::meta_key;
use crate::cache::record::{ObjectMeta, Record};

/// Slices listed one by one at most; beyond, only the counts per tier are given.
const SLICES_LISTED: u64 = 4096;

/// The stored record under `key` as JSON; `None` when nothing is stored.
pub(crate) async fn stored(cache: &TieredCache, key: &str) -> Option<Value> {
    let mk = meta_key(key);
    let raw = cache.get(&mk).await?;
    let placement = cache.placement(&mk);
    let record = match Record::decode(&raw)? {
        Record::Vary(names) => json!({ "varies_on": names }),
        Record::Object(meta) => object(cache, &meta),
    };
    Some(json!({
        "key": key,
        "record_in": { "memory": placement.memory, "disk": placement.disk },
        "stored": record,
    }))
}

fn object(cache: &TieredCache, meta: &ObjectMeta) -> Value {
    let now = SystemTime::now();
    let headers: Vec<Value> = meta
        .headers
        .iter()
        .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
        .collect();
    let count = meta.length.div_ceil(meta.slice_size as u64);
    let (mut memory, mut disk, mut missing) = (0u64, 0u64, 0u64);
    let mut listed = Vec::new();
    for i in 0..count {
        let p = cache.placement(&meta.slice_key(i));
        memory += p.memory as u64;
        disk += p.disk as u64;
        missing += (!p.memory && !p.disk) as u64;
        if i < SLICES_LISTED {
            let tier = match (p.memory, p.disk) {
                (true, true) => "memory+disk",
                (true, false) => "memory",
                (false, true) => "disk",
                (false, false) => "missing",
            };
            listed.push(json!(tier));
        }
    }
    json!({
        "status": meta.status,
        "length": meta.length,
        "headers": headers,
        "age_seconds": meta.policy.age(now),
        "lifetime_seconds": meta.policy.lifetime,
        "ttl_seconds": meta.policy.ttl(now),
        "stored_at_ms": meta.stored_at_ms,
        "object_id": format!("{:032x}", meta.id),
        "slice_size": meta.slice_size,
        "slices": {
            "count": count,
            "in_memory": memory,
            "on_disk": disk,
            "missing": missing,
            "by_index": listed,
        },
    })
}
