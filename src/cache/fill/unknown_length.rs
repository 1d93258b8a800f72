//! Filling the cache from an origin body of unknown length (no `Content-Length`), one slice at
//! a time, while the client is sent the same bytes.
//!
//! Memory per fill is one slice. The metadata record is written last, and only when the body
//! arrived complete, so a partial body is never visible as an object. Nobody else can follow
//! such a fill (its slices are not registered: their number is unknown until the end).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use strata_storage::TieredCache;

use crate::cache::key::{meta_key, slice_key};
use crate::cache::record::ObjectMeta;

/// Why a fill did not produce a cached object.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FillError {
    /// The body ended before its announced length (or the origin broke off).
    #[error("body incomplete: got {got} of {expected} bytes")]
    Incomplete {
        /// Bytes stored.
        got: u64,
        /// Bytes the object has.
        expected: u64,
    },
    /// A tier refused or failed a write.
    #[error("cache write failed: {0}")]
    Store(#[from] strata_storage::StorageError),
}

/// Accumulates body bytes into slices and stores each completed slice.
pub(crate) struct UnsizedFill {
    cache: Arc<TieredCache>,
    id: u128,
    slice_size: usize,
    buf: BytesMut,
    next_idx: u64,
    stored: u64,
    error: Option<FillError>,
}

impl UnsizedFill {
    /// Starts a fill of object version `id` in slices of `slice_size` bytes.
    pub(crate) fn new(cache: Arc<TieredCache>, id: u128, slice_size: usize) -> Self {
        UnsizedFill {
            cache,
            id,
            slice_size,
            buf: BytesMut::new(),
            next_idx: 0,
            stored: 0,
            error: None,
        }
    }

    /// Adds the next body bytes; completed slices are stored before this returns.
    pub(crate) async fn push(&mut self, mut chunk: Bytes) {
        while !chunk.is_empty() && self.error.is_none() {
            if self.buf.capacity() == 0 {
                self.buf.reserve(self.slice_size);
            }
            let take = (self.slice_size - self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk.split_to(take));
            if self.buf.len() == self.slice_size {
                self.flush().await;
            }
        }
    }

    async fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let data = self.buf.split().freeze();
        let len = data.len() as u64;
        let key = slice_key(self.id, self.next_idx);
        match self.cache.insert(&key, data).await {
            Ok(()) => {
                self.next_idx += 1;
                self.stored += len;
            }
            Err(e) => self.error = Some(e.into()),
        }
    }

    /// Stores the last slice and then `meta`, if the body was complete.
    pub(crate) async fn finish(
        mut self,
        cache_key: &str,
        meta: &ObjectMeta,
    ) -> Result<(), FillError> {
        self.flush().await;
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.stored != meta.length {
            return Err(FillError::Incomplete {
                got: self.stored,
                expected: meta.length,
            });
        }
        self.cache
            .insert(&meta_key(cache_key), meta.encode())
            .await?;
        Ok(())
    }
}
