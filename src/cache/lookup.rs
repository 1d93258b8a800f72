//! Step 1, lookup: the stored record of a request's URL, followed to its variant when the
//! response varies.

use std::sync::Arc;

use strata_storage::Tier;

use crate::cache::job::Job;
use crate::cache::key::meta_key;
use crate::cache::plane::CachePlane;
use crate::cache::record::{ObjectMeta, Record};

/// What the cache holds for a request.
pub(super) enum Found {
    /// A stored response.
    Object(Arc<ObjectMeta>),
    /// The URL varies and this request's variant is not stored.
    VaryMiss,
    /// Nothing is stored for the URL.
    Miss,
}

/// Finds the stored response for the request, following a Vary record to its variant (and
/// setting the job's key, and the names it varies on, to the variant's).
pub(super) async fn find(plane: &CachePlane, job: &mut Job) -> Found {
    match record(plane, &job.base_key).await {
        Some(Record::Object(m)) if purged(plane, job, &m).await => Found::Miss,
        Some(Record::Object(m)) => Found::Object(m),
        Some(Record::Vary(names)) => {
            job.select_variant(&names);
            match record(plane, &job.key).await {
                Some(Record::Object(m)) if purged(plane, job, &m).await => Found::VaryMiss,
                Some(Record::Object(m)) => Found::Object(m),
                _ => Found::VaryMiss,
            }
        }
        None => Found::Miss,
    }
}

/// Whether a purge rule covers the object found for `job`; if so its record goes now and its
/// slices in the background (a refetch of the same version must not find them).
async fn purged(plane: &CachePlane, job: &Job, meta: &ObjectMeta) -> bool {
    if !plane.purges.purged(&job.base_key, meta) {
        return false;
    }
    let _ = plane.cache.remove(&meta_key(&job.key)).await;
    let cache = plane.cache.clone();
    let slices: Vec<_> = (0..meta.length.div_ceil(meta.slice_size as u64))
        .map(|i| meta.slice_key(i))
        .collect();
    tokio::spawn(async move {
        for k in slices {
            let _ = cache.remove(&k).await;
        }
    });
    true
}

/// The record under `key` (its decoding kept from an earlier hit when the memory tier hands
/// back the same bytes); one that does not decode is removed and counts as a miss.
async fn record(plane: &CachePlane, key: &str) -> Option<Record> {
    let mk = meta_key(key);
    let rec = match plane.cache.get_from(&mk).await? {
        (raw, Tier::Memory) => plane.memo.decode(&mk, raw),
        // A disk read is a buffer of its own each time: the memo could never match it again,
        // and keeping it would only hold the IO buffer.
        (raw, Tier::Disk) => Record::decode(&raw),
    };
    if rec.is_none() {
        let _ = plane.cache.remove(&mk).await;
    }
    rec
}
