//! Filling a registered run of slices from one origin response, in a task of its own: the
//! fill of every object whose length is known.
//!
//! The task is detached from the client that started it: other clients may be reading the
//! same slices. It stops as soon as nobody is interested in the run any more (every client
//! gone), so an abandoned download does not keep pulling from the origin.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use pingora::http::RequestHeader;
use strata_storage::{Shed, TieredCache, ValueWriter};

use crate::cache::coalesce::{Coalescer, PendingSlice, Run};
use crate::cache::key::meta_key;
use crate::cache::plane::CachePlane;
use crate::cache::record::ObjectMeta;
use crate::http::range::{body_span, BodySpan};
use crate::metrics::{FillResult, Metrics};
use crate::origin::{OriginResponse, Upstream};
use crate::routing::Route;

/// Slices of a run registered ahead of the one being filled: what a run registers up front
/// and keeps registered as it advances. The registry, and the work before the first byte, stay
/// in proportion to this window, not to the object (a `Content-Length` is the origin's word).
pub(crate) const WINDOW: usize = 64;

/// Registers a run over the slices of `meta` from `first` (which must be missing): at most
/// [`WINDOW`] up front, up to the first slice stored or in flight. Returns the run, its
/// registered slices and the last slice it is to fill: `last` when the window was full (the
/// rest is registered as the fill advances), else the last one registered. `None` when
/// `first` is in flight already.
pub(crate) fn register(
    plane: &CachePlane,
    meta: &ObjectMeta,
    first: u64,
    last: u64,
) -> Option<(Arc<Run>, Vec<Arc<PendingSlice>>, u64)> {
    let keys: Vec<Vec<u8>> = (first..=last)
        .map(|i| meta.slice_key(i))
        .enumerate()
        .take_while(|(n, k)| *n == 0 || !plane.cache.contains(k))
        .map(|(_, k)| k)
        .take(WINDOW)
        .collect();
    let (run, slices) = plane.coalescer.register_run(&keys)?;
    // A slice in flight ends the registration early: the run must end there too, or its
    // origin request would ask again for what another fill is fetching.
    let planned = if slices.len() == WINDOW {
        last
    } else {
        first + slices.len() as u64 - 1
    };
    Some((run, slices, planned))
}

/// How many slices a fill may run ahead of the fastest client reading it: none. It fills a
/// slice once that client has reached it (and meanwhile waits, and so does the origin), so the
/// client reads the very buffer the fill gathers into and the pair holds one slice, not two; a
/// client reading a byte a minute does not pull a whole object into the tiers at origin speed,
/// while one that stops reading does not stall the others.
const FILL_AHEAD: u64 = 0;

/// How many complete slices of one fill may be on their way to the tiers while it fills the
/// next: past that the fill waits for the device (for at most `write_wait`).
const WRITES_PER_FILL: usize = 2;

/// Bytes at the start of a run its readers are let to send as they arrive. Until this much has
/// come, a client's write buffer may still hold the response header: Pingora sends a body of
/// known length only once the buffer overflows or the body ends.
const LEAD_BYTES: usize = crate::cache::plane::RESPONSE_WRITE_BUFFER;

/// A registered run of slices and what is needed to fill it.
pub(crate) struct RunFill {
    /// The tiers the slices go to.
    cache: Arc<TieredCache>,
    /// Where the slices are registered.
    coalescer: Arc<Coalescer>,
    /// The object the slices belong to.
    meta: Arc<ObjectMeta>,
    /// The object's cache key.
    key: String,
    /// Index of the first slice of the run.
    first: u64,
    /// Index of the last slice the run is to fill (registered as the window reaches it).
    last: u64,
    /// The registered slices, in order.
    slices: Vec<Arc<PendingSlice>>,
    /// The run (its interest decides cancellation).
    run: Arc<Run>,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Connection pool, to give the origin connection back.
    upstream: Arc<Upstream>,
    /// Strata's `Via` entry for origin requests.
    via: http::HeaderValue,
    /// How long the fill waits for the device before it goes on: half the lock timeout, so
    /// its clients see progress before they would give up on it.
    write_wait: std::time::Duration,
}

enum Next {
    Bytes(Bytes),
    End,
    Failed,
    Cancelled,
}

impl RunFill {
    /// A fill of slices `first..=last` of object `meta` stored under `key`, of which `slices`
    /// (from `first` on, at most [`WINDOW`]) are registered; the rest are registered as it goes.
    pub(crate) fn new(
        plane: &CachePlane,
        meta: Arc<ObjectMeta>,
        key: String,
        (first, last): (u64, u64),
        slices: Vec<Arc<PendingSlice>>,
        run: Arc<Run>,
    ) -> RunFill {
        let last = last.max(first + slices.len() as u64 - 1);
        RunFill {
            last,
            cache: plane.cache.clone(),
            coalescer: plane.coalescer.clone(),
            meta,
            key,
            first,
            slices,
            run,
            metrics: plane.metrics.clone(),
            upstream: plane.upstream.clone(),
            via: plane.via.clone(),
            write_wait: plane.lock_timeout / 2,
        }
    }

    /// First byte of the run within the object.
    fn start(&self) -> u64 {
        self.first * self.meta.slice_size as u64
    }

    /// Last byte (inclusive) of the run within the object.
    fn end(&self) -> u64 {
        let last = self.last;
        (last.saturating_mul(self.meta.slice_size as u64) + self.meta.slice_len(last))
            .saturating_sub(1)
    }

    /// Registers slices after the pending ones, up to [`WINDOW`] ahead and at most to the
    /// run's last; stops for good at a slice stored or in flight (the body beyond it is not
    /// needed: the run ends there).
    fn extend(&mut self, pending: &mut VecDeque<Arc<PendingSlice>>, next: &mut u64) {
        while pending.len() < WINDOW && *next <= self.last {
            let key = self.meta.slice_key(*next);
            let slice = (!self.cache.contains(&key))
                .then(|| self.coalescer.extend_run(&self.run, &key))
                .flatten();
            match slice {
                Some(s) => {
                    pending.push_back(s);
                    *next += 1;
                }
                None => {
                    self.last = *next - 1;
                    return;
                }
            }
        }
    }

    /// Fetches the run with a ranged request and fills it; for slices missing from a known object.
    pub(crate) async fn fetch(self, route: Arc<Route>, upstream_path: String) {
        let mut req = match RequestHeader::build(Method::GET, upstream_path.as_bytes(), None) {
            Ok(r) => r,
            Err(_) => return self.abandon_all(),
        };
        // Only a strong ETag proves the new range belongs to the stored version (RFC 9111
        // §3.4); with If-Range, a changed object comes back whole (200), never as a range of
        // another version. Without one, slices are never fetched apart from their object.
        let Some(etag) = self.meta.strong_etag().map(<[u8]>::to_vec) else {
            return self.abandon_all();
        };
        let range = format!("bytes={}-{}", self.start(), self.end());
        let ok = req
            .insert_header(header::HOST, route.backend.host_header())
            .is_ok()
            && req.insert_header(header::RANGE, range).is_ok()
            && req.insert_header(header::IF_RANGE, etag).is_ok()
            && req.insert_header(header::VIA, self.via.clone()).is_ok();
        if !ok {
            return self.abandon_all();
        }
        let origin = match self.upstream.send(&route.backend, &route.name, &req).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(route = %route.name, error = %e, "slice fetch failed");
                return self.abandon_all();
            }
        };
        let h = &origin.header;
        let same_version = self.meta.header("etag")
            == h.headers.get(header::ETAG).map(|v| v.as_bytes())
            && self.meta.header("last-modified")
                == h.headers.get(header::LAST_MODIFIED).map(|v| v.as_bytes());
        let body_start = match (h.status, body_span(h.status, &h.headers)) {
            (StatusCode::PARTIAL_CONTENT, Some(BodySpan { start, total }))
                if start == self.start() && total == self.meta.length =>
            {
                Some(start)
            }
            // An origin that ignores Range: usable from its first byte if it is the same object.
            (StatusCode::OK, Some(BodySpan { start: 0, total })) if total == self.meta.length => {
                Some(0)
            }
            _ => None,
        };
        match body_start {
            Some(start) if same_version => self.fill(origin, start).await,
            _ => {
                tracing::warn!(
                    route = %route.name,
                    key = %self.key,
                    status = h.status.as_u16(),
                    "origin object changed or refused the range; dropping the cached object"
                );
                let _ = self.cache.remove(&meta_key(&self.key)).await;
                self.abandon_all()
            }
        }
    }

    /// Fills the run from `origin`, whose body starts at byte `body_start` of the object.
    pub(crate) async fn fill(mut self, origin: OriginResponse, body_start: u64) {
        // Given back to the pool as soon as its body is read: the stores that follow may wait
        // for the device, and an origin connection must not wait with them.
        let mut origin = Some(origin);
        let mut skip = self.start().saturating_sub(body_start);
        let mut carry: Option<Bytes> = None;
        // Each slice is let go once complete: its bytes then live on only in readers still at it.
        let mut pending: VecDeque<Arc<PendingSlice>> = std::mem::take(&mut self.slices).into();
        let mut idx = self.first;
        // A private run (one slice nobody else may join) never registers more.
        let mut next = self.first + pending.len() as u64;
        // Stores of complete slices still in progress, oldest first. Dropping one of their
        // handles (an abandoned fill) lets it finish: a complete slice is still worth keeping.
        let mut stores = VecDeque::new();
        // Bytes of the run handed to its readers so far, counted up to LEAD_BYTES (see below).
        let mut lead = 0usize;
        while let Some(slice) = pending.front().cloned() {
            let cancelled = tokio::select! {
                biased;
                _ = self.run.idle() => true,
                _ = self.run.wait_for_readers(idx, FILL_AHEAD) => false,
            };
            if cancelled {
                self.metrics.fill(FillResult::Cancelled);
                return self.abandon(idx, pending);
            }
            let expect = self.meta.slice_len(idx);
            let key = self.meta.slice_key(idx);
            // The slice is gathered straight into the buffer the device writes it from, and its
            // readers are given views of that buffer: the fill holds its bytes once.
            let mut value = self.cache.writer(&key, expect as usize);
            let mut got = 0u64;
            while got < expect {
                let next = match carry.take() {
                    Some(b) => Next::Bytes(b),
                    None => self.read(&mut origin).await,
                };
                let mut chunk = match next {
                    Next::Bytes(b) => b,
                    other => {
                        self.metrics.fill(match other {
                            Next::Cancelled => FillResult::Cancelled,
                            _ => FillResult::Incomplete,
                        });
                        return self.abandon(idx, pending);
                    }
                };
                if skip > 0 {
                    let s = skip.min(chunk.len() as u64);
                    skip -= s;
                    chunk = chunk.slice(s as usize..);
                    if chunk.is_empty() {
                        continue;
                    }
                }
                let take = ((expect - got) as usize).min(chunk.len());
                if take < chunk.len() {
                    carry = Some(chunk.slice(take..));
                }
                got += take as u64;
                slice.push(value.append(&chunk[..take]));
                if lead < LEAD_BYTES {
                    // An origin whose bytes are all ready never makes the fill wait, so its
                    // readers would send nothing (not even the header) before the slice is
                    // complete: at the start of the run, each chunk is theirs to send first.
                    lead += take;
                    tokio::task::yield_now().await;
                }
            }
            if carry.is_none() && origin.as_mut().is_some_and(OriginResponse::is_done) {
                if let Some(o) = origin.take() {
                    self.upstream.release(o).await;
                }
            }
            // Complete now: its readers get their last bytes without waiting for the disk. It
            // stays registered (readable) until the tiers hold it, so no request in between
            // goes to the origin for it.
            slice.finish(true);
            if lead < LEAD_BYTES {
                // A run shorter than its lead (a small object): its readers send their last
                // bytes before the stores below take the worker.
                tokio::task::yield_now().await;
            }
            // A reader behind this slice will look for it in the tiers once it is let go, and
            // so will a client that joins the object later: if the slice cannot be fetched
            // again on its own (no strong validator), its disk write is never shed (it waits
            // for the device instead). A slice the origin can serve again, with nobody behind
            // on it, may be lost by a device that is behind: the cache may decline to keep
            // things.
            let shed = match self.run.slowest_reader() {
                _ if self.meta.strong_etag().is_none() => Shed::Never,
                Some(r) if r < idx => Shed::Never,
                _ => Shed::Allowed,
            };
            // Stored beside the next slice's fill: a device that is behind holds up neither
            // the fill nor its readers, only (up to WRITES_PER_FILL) the memory of its slices.
            stores.push_back(crate::cache::spawn_boxed(
                self.store(key, value, slice, shed, idx),
            ));
            stores.retain(|s| !s.is_finished());
            // Past a few, the fill waits for the oldest: the device paces the origin, and an
            // object one client streams is stored whole rather than shed. But only so long:
            // its clients wait on its progress, and a device that slow must not make them
            // give up on the fill (what waits meanwhile is bounded by the write queue).
            let deadline = tokio::time::Instant::now() + self.write_wait;
            while stores.len() > WRITES_PER_FILL {
                if let Some(mut s) = stores.pop_front() {
                    if tokio::time::timeout_at(deadline, &mut s).await.is_err() {
                        // Still awaited before the run is declared over.
                        stores.push_front(s);
                        break;
                    }
                }
            }
            pending.pop_front();
            idx += 1;
            self.extend(&mut pending, &mut next);
        }
        for s in stores {
            let _ = s.await;
        }
        self.run.finish();
        // A connection whose body was not read to the end (the run ended at a slice stored
        // meanwhile) is not reusable: dropping it closes it.
    }

    /// Stores complete slice `idx` (key `key`, gathered in `value`) in the tiers, then lets its
    /// registration go.
    fn store(
        &self,
        key: Vec<u8>,
        value: ValueWriter,
        slice: Arc<PendingSlice>,
        shed: Shed,
        idx: u64,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (cache, coalescer, metrics) = (
            self.cache.clone(),
            self.coalescer.clone(),
            self.metrics.clone(),
        );
        let object = self.key.clone();
        async move {
            match cache.insert_value(&key, value, shed).await {
                Ok(()) => metrics.fill(FillResult::Stored),
                Err(e) => {
                    tracing::warn!(key = %object, slice = idx, error = %e, "slice not stored");
                    metrics.fill(FillResult::StoreError);
                }
            }
            coalescer.remove(&key, &slice);
        }
    }

    async fn read(&self, origin: &mut Option<OriginResponse>) -> Next {
        let Some(origin) = origin else {
            // The body ended (and its connection went back) before the run was filled.
            return Next::End;
        };
        tokio::select! {
            biased;
            _ = self.run.idle() => Next::Cancelled,
            r = origin.read_body() => match r {
                Ok(Some(b)) => Next::Bytes(b),
                Ok(None) => Next::End,
                Err(e) => {
                    tracing::warn!(key = %self.key, error = %e, "origin body failed during slice fill");
                    Next::Failed
                }
            },
        }
    }

    /// Marks every slice of the run abandoned.
    fn abandon_all(mut self) {
        let slices = std::mem::take(&mut self.slices).into();
        self.abandon(self.first, slices);
    }

    /// Marks `slices` (from slice `idx` on) abandoned so their readers look elsewhere.
    fn abandon(&self, idx: u64, slices: VecDeque<Arc<PendingSlice>>) {
        for (i, slice) in slices.iter().enumerate() {
            slice.finish(false);
            self.coalescer
                .remove(&self.meta.slice_key(idx + i as u64), slice);
        }
        self.run.finish();
    }
}
