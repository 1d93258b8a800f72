//! Step 1, lookup: the stored record of a request's URL, followed to its variant when the
//! response varies.

use crate::cache::job::Job;
use crate::cache::key::meta_key;
use crate::cache::plane::CachePlane;
use crate::cache::record::{ObjectMeta, Record};

/// What the cache holds for a request.
pub(super) enum Found {
    /// A stored response.
    Object(Box<ObjectMeta>),
    /// The URL varies and this request's variant is not stored.
    VaryMiss,
    /// Nothing is stored for the URL.
    Miss,
}

/// Finds the stored response for the request, following a Vary record to its variant (and
/// setting the job's key, and the names it varies on, to the variant's).
pub(super) async fn find(plane: &CachePlane, job: &mut Job) -> Found {
    match record(plane, &job.base_key).await {
        Some(Record::Object(m)) => Found::Object(m),
        Some(Record::Vary(names)) => {
            job.select_variant(&names);
            match record(plane, &job.key).await {
                Some(Record::Object(m)) => Found::Object(m),
                _ => Found::VaryMiss,
            }
        }
        None => Found::Miss,
    }
}

/// The record under `key`; one that does not decode is removed and counts as a miss.
async fn record(plane: &CachePlane, key: &str) -> Option<Record> {
    let mk = meta_key(key);
    let raw = plane.cache.get(&mk).await?;
    let rec = Record::decode(&raw);
    if rec.is_none() {
        let _ = plane.cache.remove(&mk).await;
    }
    rec
}
