//! Step 3, fetch (its second half): a new object's description stored, for the followers
//! waiting on it and for every later request, and the run of slices its body covers
//! registered and handed to a fill.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, StatusCode};
use pingora::http::ResponseHeader;
use strata_storage::TieredCache;

use crate::cache::coalesce::{PendingSlice, Run};
use crate::cache::fill::{register, RunFill};
use crate::cache::job::Job;
use crate::cache::key::{meta_key, object_id};
use crate::cache::plane::CachePlane;
use crate::cache::record::{stored_headers, ObjectMeta, Record};
use crate::http::date::unix_ms;
use crate::http::freshness::Policy;
use crate::http::headers::content_length;
use crate::http::range::BodySpan;
use crate::http::vary;
use crate::origin::OriginResponse;

/// A run of slices registered for a fill, and the last slice it is to fill.
pub(super) type Registered = (Arc<Run>, Vec<Arc<PendingSlice>>, u64);

/// Stores the description of a newly fetched object (and the Vary record of its URL), and
/// registers the run of slices its body covers, as far as this request needs them.
pub(super) async fn describe(
    plane: &CachePlane,
    job: &mut Job,
    oh: &ResponseHeader,
    policy: Policy,
    span: BodySpan,
) -> (Arc<ObjectMeta>, Option<Registered>) {
    let total = span.total;
    let names = vary::names(&oh.headers).unwrap_or_default();
    job.select_variant(&names);
    let meta = Arc::new(object_meta(plane, &job.key, oh, policy, total));
    // Visible from memory at once; the disk write does not hold up the first byte.
    let mut records = vec![(meta_key(&job.key), meta.encode())];
    if !names.is_empty() {
        records.push((meta_key(&job.base_key), Record::encode_vary(&names)));
    }
    for (k, v) in &records {
        plane.cache.insert_memory_now(k, v.clone());
    }
    let s = meta.slice_size as u64;
    let first = span.start / s;
    let applies = job.range_applies(meta.header("etag"), meta.header("last-modified"));
    // A HEAD wants the first slice only (it came with the header).
    let wanted_last = job
        .needed(meta.status, total, applies)
        .filter(|_| !job.is_head)
        .map_or(first, |r| r.end / s);
    // A one-byte probe covers no slice (unless the object is one byte long).
    let covers = total > 0
        && (oh.status != StatusCode::PARTIAL_CONTENT
            || content_length(&oh.headers) != Some(1)
            || total == 1);
    // A body whose first slice is stored already fills nothing: the serving step reads what is
    // stored and fetches what is missing.
    let run = (covers && !plane.cache.contains(&meta.slice_key(first)))
        .then(|| register(plane, &meta, first, wanted_last))
        .flatten();
    if plane.memory_holds_records {
        let first_slice = run
            .as_ref()
            .and_then(|(_, slices, _)| slices.first().cloned());
        store_after(plane, records, first_slice);
    } else {
        // Without a memory tier to show it at once, the description must be on disk before
        // the followers are told it is there, or they would find nothing and fetch again.
        store_records(plane.cache.clone(), records).await;
    }
    (meta, run)
}

/// Writes records to disk, one after another. Memory has them already (and may have newer
/// ones by the time these land).
async fn store_records(cache: Arc<TieredCache>, records: Vec<(Vec<u8>, Bytes)>) {
    for (k, v) in records {
        if let Err(e) = cache.insert_disk(&k, v).await {
            tracing::warn!(error = %e, "object description not stored on disk");
        }
    }
}

/// Writes records to disk in the background, once the fill's first slice has its bytes (or
/// the lock timeout passed): a device write submitted on this worker before them would hold up
/// the client's first byte.
fn store_after(
    plane: &CachePlane,
    records: Vec<(Vec<u8>, Bytes)>,
    first_slice: Option<Arc<PendingSlice>>,
) {
    let (cache, wait) = (plane.cache.clone(), plane.lock_timeout);
    crate::cache::spawn_boxed(async move {
        if let Some(slice) = first_slice {
            let _ = tokio::time::timeout(wait, slice.settled()).await;
        }
        store_records(cache, records).await
    });
}

/// Puts back on disk the description of a stored object (and its URL's Vary record) when
/// memory holds it but the disk no longer does, as a fill of its missing slices (the first of
/// them `first_slice`) starts.
///
/// Memory keeps the records of many more objects than it keeps slices of, so a record read
/// from memory alone may have aged out of the device meanwhile. Its slices, written again by
/// this fill, would then be unreachable after a restart. The write happens in the background,
/// as a new object's does: the client's bytes do not wait for it.
pub(super) fn restore_records(
    plane: &CachePlane,
    job: &Job,
    meta: &ObjectMeta,
    first_slice: &Arc<PendingSlice>,
) {
    let Some(disk) = plane.cache.disk() else {
        return;
    };
    let mut records = Vec::new();
    let key = meta_key(&job.key);
    if !disk.contains(&key) {
        records.push((key, meta.encode()));
    }
    if !job.vary_names.is_empty() {
        let base = meta_key(&job.base_key);
        if !disk.contains(&base) {
            records.push((base, Record::encode_vary(&job.vary_names)));
        }
    }
    if !records.is_empty() {
        store_after(plane, records, Some(first_slice.clone()));
    }
}

/// The description, stored under `key`, of the object of `total` bytes that the response
/// header `oh` belongs to (a 206 stands for its whole 200).
pub(super) fn object_meta(
    plane: &CachePlane,
    key: &str,
    oh: &ResponseHeader,
    policy: Policy,
    total: u64,
) -> ObjectMeta {
    let etag = oh.headers.get(header::ETAG).map(|v| v.as_bytes());
    let slice_size = plane.slice_size as u32;
    ObjectMeta {
        status: status_of_response(oh.status),
        headers: stored_headers(&oh.headers),
        length: total,
        slice_size,
        id: object_id(key, etag, Some(total), slice_size),
        stored_at_ms: unix_ms(SystemTime::now()),
        policy,
        full_header: Default::default(),
    }
}

/// Fills the registered slices from `origin`'s body in a task of their own.
pub(super) fn spawn_fill(
    plane: &CachePlane,
    job: &Job,
    meta: &Arc<ObjectMeta>,
    (run, slices, last): Registered,
    origin: OriginResponse,
    body_start: u64,
) {
    let first = body_start / meta.slice_size as u64;
    let span = (first, last);
    let fill = RunFill::new(plane, meta.clone(), job.key.clone(), span, slices, run);
    crate::cache::spawn_boxed(fill.fill(origin, body_start));
}

/// The status an object is stored with: a 206 stands for the whole (200) representation.
fn status_of_response(s: StatusCode) -> u16 {
    if s == StatusCode::PARTIAL_CONTENT {
        200
    } else {
        s.as_u16()
    }
}
