//! A partial response the origin chose for itself (a 206 that does not start on a slice
//! boundary) relayed to its client while every whole slice inside it is stored: an incomplete
//! response kept for the later ranges it covers (RFC 9111 §3.3).
//!
//! The pieces of slices at either end of the body are not kept: the tiers hold whole slices
//! only. Stored slices join other fetches' only under a strong validator (the object id
//! follows it), so without one they serve exactly the ranges this response covered.

use std::sync::Arc;

use bytes::Bytes;
use strata_storage::{Shed, TieredCache};

use crate::cache::key::meta_key;
use crate::cache::record::ObjectMeta;
use crate::metrics::{FillResult, Metrics};

/// Whole slices of a relayed body, stored as they pass.
pub(crate) struct Tee {
    cache: Arc<TieredCache>,
    metrics: Arc<Metrics>,
    meta: ObjectMeta,
    key: String,
    /// Object offset of the next byte to arrive.
    pos: u64,
    /// The slice being collected (only one begun at its first byte), and its parts so far.
    collecting: Option<(u64, Vec<Bytes>)>,
    /// Slices stored so far.
    stored: u64,
}

impl Tee {
    /// A tee for the body of `meta`'s object (stored under `key`) starting at byte `start`.
    pub(crate) fn new(
        cache: Arc<TieredCache>,
        metrics: Arc<Metrics>,
        meta: ObjectMeta,
        key: String,
        start: u64,
    ) -> Tee {
        Tee {
            cache,
            metrics,
            meta,
            key,
            pos: start,
            collecting: None,
            stored: 0,
        }
    }

    /// Whether a body of bytes `start..=end` of an object of `total` bytes holds at least one
    /// whole slice of `slice_size` bytes (the last slice may be shorter).
    pub(crate) fn covers_a_slice(slice_size: u64, total: u64, start: u64, end: u64) -> bool {
        let first = start.div_ceil(slice_size).saturating_mul(slice_size);
        let first_end = first.saturating_add(slice_size).min(total);
        first < total && first_end.saturating_sub(1) <= end
    }

    /// Takes the next bytes of the body; a slice they complete is stored.
    pub(crate) async fn push(&mut self, mut chunk: Bytes) {
        let s = self.meta.slice_size as u64;
        while !chunk.is_empty() {
            let idx = self.pos / s;
            let off = self.pos % s;
            let len = self.meta.slice_len(idx);
            if off >= len {
                // Past the object's end: an origin that sent more than it announced.
                return;
            }
            let part = chunk.split_to(((len - off) as usize).min(chunk.len()));
            self.pos += part.len() as u64;
            match &mut self.collecting {
                Some((i, parts)) if *i == idx => parts.push(part),
                _ if off == 0 => self.collecting = Some((idx, vec![part])),
                // The tail of a slice that began before the body: not kept.
                _ => continue,
            }
            if self.pos - idx * s == len {
                if let Some((i, parts)) = self.collecting.take() {
                    self.store(i, &parts).await;
                }
            }
        }
    }

    async fn store(&mut self, idx: u64, parts: &[Bytes]) {
        match self
            .cache
            // The client reads the relayed body itself: nobody comes back for this slice.
            .insert_parts(&self.meta.slice_key(idx), parts, Shed::Allowed)
            .await
        {
            Ok(()) => {
                self.stored += 1;
                self.metrics.fill(FillResult::Stored);
            }
            Err(e) => {
                tracing::warn!(key = %self.key, slice = idx, error = %e, "slice not stored");
                self.metrics.fill(FillResult::StoreError);
            }
        }
    }

    /// The body was relayed as far as it goes: describes the object if any slice of it was
    /// stored (a body cut short stores its whole slices, never a description of more).
    pub(crate) async fn finish(self) {
        if self.stored == 0 {
            return;
        }
        let key = meta_key(&self.key);
        let record = self.meta.encode();
        self.cache.insert_memory_now(&key, record.clone());
        if let Err(e) = self.cache.insert_disk(&key, record).await {
            tracing::warn!(key = %self.key, error = %e, "object description not stored on disk");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache with a memory tier only.
    async fn memory_cache() -> Arc<TieredCache> {
        let cfg = strata_storage::TieredCacheConfig {
            memory: 1 << 20,
            disk: None,
            admission: Default::default(),
        };
        Arc::new(TieredCache::open(cfg).await.unwrap())
    }

    #[test]
    fn a_body_covers_a_slice_only_whole() {
        let covers = |total, start, end| Tee::covers_a_slice(1000, total, start, end);
        assert!(covers(10_000, 0, 999));
        assert!(!covers(10_000, 1, 1998));
        assert!(covers(10_000, 1, 1999));
        assert!(!covers(10_000, 9001, 9999));
        // The last slice is shorter.
        assert!(covers(9500, 9000, 9499));
        assert!(!covers(10_000, 10_000, 10_000));
    }

    #[tokio::test]
    async fn only_whole_slices_are_stored_and_then_described() {
        let cache = memory_cache().await;
        let metrics = Arc::new(Metrics::default());
        let m = ObjectMeta::for_test(3500, 1000);
        let body: Vec<u8> = (0..3500u32).map(|i| i as u8).collect();
        let mut tee = Tee::new(cache.clone(), metrics, m.clone(), "k".into(), 500);
        // Bytes 500..=3499 in uneven chunks: slices 1, 2 and the short last one (3) are whole.
        for piece in body[500..].chunks(333) {
            tee.push(Bytes::copy_from_slice(piece)).await;
        }
        assert!(!cache.contains(&meta_key("k")));
        tee.finish().await;
        assert!(cache.contains(&meta_key("k")));
        assert!(!cache.contains(&m.slice_key(0)));
        for (idx, range) in [(1, 1000..2000), (2, 2000..3000), (3, 3000..3500)] {
            let v = cache.get(&m.slice_key(idx)).await.expect("slice stored");
            assert_eq!(&v[..], &body[range], "slice {idx}");
        }
    }

    #[tokio::test]
    async fn a_body_without_a_whole_slice_describes_nothing() {
        let cache = memory_cache().await;
        let m = ObjectMeta::for_test(3500, 1000);
        let mut tee = Tee::new(
            cache.clone(),
            Arc::new(Metrics::default()),
            m,
            "k".into(),
            10,
        );
        tee.push(Bytes::from(vec![0u8; 1500])).await;
        tee.finish().await;
        assert!(!cache.contains(&meta_key("k")));
    }
}
