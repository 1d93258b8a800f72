//! Request coalescing: one origin fetch per missing slice, however many clients want it.
//!
//! A fetch covers a *run* of consecutive slices. Every slice of a run is registered before the
//! fetch starts, so a client that needs any of them waits for it instead of fetching it again;
//! it reads the bytes as they arrive (read-while-writer), not after the slice completes. A run
//! is cancelled as soon as no client is interested in it any more. The first request for an
//! object nobody has described yet is coalesced too (see [`Coalescer::discover`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{watch, Notify};

/// One origin fetch over consecutive slices, alive while someone needs it.
#[derive(Default)]
pub(crate) struct Run {
    interest: AtomicUsize,
    idle: Notify,
    finished: std::sync::atomic::AtomicBool,
    done: Notify,
    /// How many readers are at each slice index (a reader follows one slice).
    readers: Mutex<BTreeMap<u64, usize>>,
    /// Notified when a reader arrives at or leaves a slice.
    moved: Notify,
}

impl Run {
    /// Declares interest in this run until the returned guard is dropped.
    pub(crate) fn interest(self: &Arc<Self>) -> Interest {
        self.interest.fetch_add(1, Ordering::AcqRel);
        Interest {
            run: self.clone(),
            at: None,
        }
    }

    /// Marks the run over (filled or abandoned).
    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        self.done.notify_waiters();
    }

    /// Resolves once the run is over.
    pub(crate) async fn finished(&self) {
        loop {
            let n = self.done.notified();
            if self.finished.load(Ordering::Acquire) {
                return;
            }
            n.await;
        }
    }

    /// The slice index of the fastest reader following this run, if any reader is.
    pub(crate) fn fastest_reader(&self) -> Option<u64> {
        lock(&self.readers).keys().next_back().copied()
    }

    /// The slice index of the slowest reader following this run, if any reader is: every
    /// slice past it will be read again, from the tiers if its fill is over.
    pub(crate) fn slowest_reader(&self) -> Option<u64> {
        lock(&self.readers).keys().next().copied()
    }

    /// Resolves once slice `idx` is at most `ahead` slices past the fastest reader (at once
    /// when nobody follows the run: then only interest keeps it going). The fastest, not the
    /// slowest: a client that stops reading must not stall the others sharing the fill; it
    /// reads the slices it fell behind on from the tiers when it resumes.
    pub(crate) async fn wait_for_readers(&self, idx: u64, ahead: u64) {
        loop {
            let n = self.moved.notified();
            match self.fastest_reader() {
                Some(s) if idx > s.saturating_add(ahead) => n.await,
                _ => return,
            }
        }
    }

    fn reader_at(&self, idx: u64) {
        *lock(&self.readers).entry(idx).or_insert(0) += 1;
        // A reader arriving ahead moves the fastest on.
        self.moved.notify_waiters();
    }

    fn reader_left(&self, idx: u64) {
        let mut r = lock(&self.readers);
        if let Some(n) = r.get_mut(&idx) {
            *n -= 1;
            if *n == 0 {
                r.remove(&idx);
            }
        }
        drop(r);
        self.moved.notify_waiters();
    }

    /// Resolves once nobody is interested.
    pub(crate) async fn idle(&self) {
        loop {
            let n = self.idle.notified();
            if self.interest.load(Ordering::Acquire) == 0 {
                return;
            }
            n.await;
        }
    }
}

/// Interest of one client in a run, and where that client reads.
pub(crate) struct Interest {
    run: Arc<Run>,
    /// The slice the client is at, once it says so: the run's fill stays within reach of it
    /// even while the client writes a slice it read from the tiers (no reader follows the
    /// run then, and a stalled client would otherwise let the fill run to the end).
    at: Option<u64>,
}

impl Interest {
    /// The run this interest keeps alive.
    pub(crate) fn run(&self) -> &Arc<Run> {
        &self.run
    }

    /// Notes that the client is at slice `idx`.
    pub(crate) fn at(&mut self, idx: u64) {
        if self.at == Some(idx) {
            return;
        }
        self.run.reader_at(idx);
        if let Some(old) = self.at.replace(idx) {
            self.run.reader_left(old);
        }
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        if let Some(idx) = self.at {
            self.run.reader_left(idx);
        }
        if self.run.interest.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.run.idle.notify_waiters();
        }
    }
}

/// How far a slice fill has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Chunks received so far.
    pub(crate) chunks: usize,
    /// `Some(true)` once complete, `Some(false)` once abandoned.
    pub(crate) done: Option<bool>,
}

/// A slice being filled from the origin.
pub(crate) struct PendingSlice {
    /// The run filling it.
    pub(crate) run: Arc<Run>,
    chunks: Mutex<Vec<Bytes>>,
    progress: watch::Sender<Progress>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-push; the Vec is still valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PendingSlice {
    fn new(run: Arc<Run>) -> Self {
        PendingSlice {
            run,
            chunks: Mutex::new(Vec::new()),
            progress: watch::Sender::new(Progress::default()),
        }
    }

    /// Appends bytes and wakes readers.
    pub(crate) fn push(&self, chunk: Bytes) {
        let n = {
            let mut c = lock(&self.chunks);
            c.push(chunk);
            c.len()
        };
        self.progress.send_modify(|p| p.chunks = n);
    }

    /// True once every byte of the slice has arrived.
    pub(crate) fn is_complete(&self) -> bool {
        self.progress.borrow().done == Some(true)
    }

    /// Waits until the slice is complete or abandoned (or its fill is gone).
    pub(crate) async fn settled(&self) {
        let mut rx = self.progress.subscribe();
        let _ = rx.wait_for(|p| p.done.is_some()).await;
    }

    /// Marks the slice complete (`true`) or abandoned (`false`).
    pub(crate) fn finish(&self, ok: bool) {
        self.progress.send_modify(|p| p.done = Some(ok));
    }

    /// A reader from the first byte of slice `idx`; it holds interest in the run while it
    /// lives, and the run's fill does not run far ahead of it.
    pub(crate) fn reader(self: &Arc<Self>, idx: u64) -> SliceReader {
        self.run.reader_at(idx);
        SliceReader {
            _interest: self.run.interest(),
            slice: self.clone(),
            idx,
            next: 0,
            rx: self.progress.subscribe(),
        }
    }
}

/// What a reader gets next.
pub(crate) enum Step {
    /// More bytes of the slice.
    Chunk(Bytes),
    /// The slice is complete and every byte was returned.
    Done,
    /// The fill was abandoned.
    Failed,
    /// No progress within the lock timeout.
    Stalled,
}

/// Follows one in-flight slice from its first byte.
pub(crate) struct SliceReader {
    /// Held, never read: keeps the run wanted while this reader lives.
    _interest: Interest,
    slice: Arc<PendingSlice>,
    /// The slice's index in its object.
    idx: u64,
    next: usize,
    rx: watch::Receiver<Progress>,
}

impl Drop for SliceReader {
    fn drop(&mut self) {
        self.slice.run.reader_left(self.idx);
    }
}

impl SliceReader {
    /// The index of the slice it follows.
    pub(crate) fn idx(&self) -> u64 {
        self.idx
    }

    /// True when the slice it follows is complete: every byte can be read without waiting.
    pub(crate) fn is_complete(&self) -> bool {
        self.slice.is_complete()
    }

    /// Waits for the next chunk, the end, or `timeout` without progress.
    pub(crate) async fn next(&mut self, timeout: Duration) -> Step {
        loop {
            if let Some(c) = lock(&self.slice.chunks).get(self.next) {
                self.next += 1;
                return Step::Chunk(c.clone());
            }
            let p = *self.rx.borrow_and_update();
            if p.chunks > self.next {
                continue;
            }
            match p.done {
                Some(true) => return Step::Done,
                Some(false) => return Step::Failed,
                None => {}
            }
            match tokio::time::timeout(timeout, self.rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Step::Failed,
                Err(_) => return Step::Stalled,
            }
        }
    }
}

/// The outcome of the first fetch of an object, as its waiters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discovery {
    /// The leader is still waiting for the origin.
    Pending,
    /// The object is described in the cache now: look it up again.
    Ready,
    /// The response cannot be shared: fetch it yourself.
    Uncoalescable,
    /// The origin failed just now (the status the leader's client got: 502 when unreachable,
    /// else the origin's 5xx): share the failure, or serve stale where allowed, rather than
    /// ask a failing origin again.
    Failed(u16),
}

/// The role of a request that finds an object unknown.
pub(crate) enum Role {
    /// Fetch it and resolve the guard.
    Leader(DiscoveryGuard),
    /// Wait for the leader.
    Follower(watch::Receiver<Discovery>),
}

/// Held by the leader of a discovery; resolves waiters (as uncoalescable if dropped).
pub(crate) struct DiscoveryGuard {
    coalescer: Arc<Coalescer>,
    key: String,
    tx: watch::Sender<Discovery>,
    resolved: bool,
}

impl DiscoveryGuard {
    /// Tells the waiters what happened.
    pub(crate) fn resolve(mut self, d: Discovery) {
        self.finish(d);
    }

    fn finish(&mut self, d: Discovery) {
        if !self.resolved {
            self.resolved = true;
            lock(&self.coalescer.discoveries).remove(&self.key);
            let _ = self.tx.send(d);
        }
    }
}

impl Drop for DiscoveryGuard {
    fn drop(&mut self) {
        self.finish(Discovery::Uncoalescable);
    }
}

/// The in-flight slices and discoveries of a node.
#[derive(Default)]
pub(crate) struct Coalescer {
    slices: Mutex<HashMap<Vec<u8>, Arc<PendingSlice>>>,
    discoveries: Mutex<HashMap<String, watch::Receiver<Discovery>>>,
}

impl Coalescer {
    /// Slices being filled now.
    pub(crate) fn slices_in_flight(&self) -> usize {
        lock(&self.slices).len()
    }

    /// The slice in flight under `key`, if any.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<PendingSlice>> {
        lock(&self.slices).get(key).cloned()
    }

    /// Registers a run over `keys`, stopping before the first one already in flight; `None`
    /// when the first one is. The caller must fill (or fail) every returned slice.
    pub(crate) fn register_run(
        &self,
        keys: &[Vec<u8>],
    ) -> Option<(Arc<Run>, Vec<Arc<PendingSlice>>)> {
        let run = Arc::new(Run::default());
        let mut map = lock(&self.slices);
        let mut out = Vec::new();
        for k in keys {
            if map.contains_key(k) {
                break;
            }
            let inf = Arc::new(PendingSlice::new(run.clone()));
            map.insert(k.clone(), inf.clone());
            out.push(inf);
        }
        (!out.is_empty()).then_some((run, out))
    }

    /// Registers one more slice of `run` under `key`; `None` when `key` is in flight already.
    pub(crate) fn extend_run(&self, run: &Arc<Run>, key: &[u8]) -> Option<Arc<PendingSlice>> {
        let mut map = lock(&self.slices);
        if map.contains_key(key) {
            return None;
        }
        let inf = Arc::new(PendingSlice::new(run.clone()));
        map.insert(key.to_vec(), inf.clone());
        Some(inf)
    }

    /// A run of one slice that nobody else can join (used to bypass a stalled shared fill).
    pub(crate) fn private_run(&self) -> (Arc<Run>, Vec<Arc<PendingSlice>>) {
        let run = Arc::new(Run::default());
        let slice = Arc::new(PendingSlice::new(run.clone()));
        (run, vec![slice])
    }

    /// Unregisters `key` if it still maps to `slice`.
    pub(crate) fn remove(&self, key: &[u8], slice: &Arc<PendingSlice>) {
        let mut map = lock(&self.slices);
        if map.get(key).is_some_and(|s| Arc::ptr_eq(s, slice)) {
            map.remove(key);
        }
    }

    /// Leader or follower for the first fetch of the object under `key`.
    pub(crate) fn discover(self: &Arc<Self>, key: &str) -> Role {
        let mut map = lock(&self.discoveries);
        if let Some(rx) = map.get(key) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(Discovery::Pending);
        map.insert(key.to_string(), rx);
        Role::Leader(DiscoveryGuard {
            coalescer: self.clone(),
            key: key.to_string(),
            tx,
            resolved: false,
        })
    }
}

/// Waits for a discovery to resolve, at most `timeout`; a stalled leader counts as uncoalescable.
pub(crate) async fn wait_discovery(
    mut rx: watch::Receiver<Discovery>,
    timeout: Duration,
) -> Discovery {
    let wait = rx.wait_for(|d| *d != Discovery::Pending);
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(d)) => *d,
        _ => Discovery::Uncoalescable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_follow_the_writer_and_see_every_byte() {
        let c = Coalescer::default();
        let keys = vec![b"a".to_vec(), b"b".to_vec()];
        let (run, slices) = c.register_run(&keys).unwrap();
        assert!(c.register_run(&keys).is_none(), "a slice is fetched once");
        let mut r = c.get(b"a").unwrap().reader(0);
        slices[0].push(Bytes::from_static(b"he"));
        let Step::Chunk(x) = r.next(Duration::from_secs(1)).await else {
            panic!()
        };
        assert_eq!(&x[..], b"he");
        let writer = slices[0].clone();
        tokio::spawn(async move {
            writer.push(Bytes::from_static(b"llo"));
            writer.finish(true);
        });
        let Step::Chunk(x) = r.next(Duration::from_secs(1)).await else {
            panic!()
        };
        assert_eq!(&x[..], b"llo");
        assert!(matches!(r.next(Duration::from_secs(1)).await, Step::Done));
        // A second reader from the first byte sees the whole slice.
        let mut again = slices[0].reader(0);
        let mut all = Vec::new();
        while let Step::Chunk(c) = again.next(Duration::from_secs(1)).await {
            all.extend_from_slice(&c);
        }
        assert_eq!(all, b"hello");
        drop((r, again));
        // Nobody holds interest: the run is idle.
        tokio::time::timeout(Duration::from_secs(1), run.idle())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_fill_waits_for_its_fastest_reader_only() {
        let c = Coalescer::default();
        let keys: Vec<Vec<u8>> = (0..4).map(|i| vec![i]).collect();
        let (run, slices) = c.register_run(&keys).unwrap();
        // Nobody follows: no bound.
        run.wait_for_readers(100, 2).await;
        let slow = slices[0].reader(0);
        let fast = slices[1].reader(1);
        assert_eq!(run.fastest_reader(), Some(1));
        // The slow reader does not hold slice 3 back: it is 2 past the fastest.
        run.wait_for_readers(3, 2).await;
        let r = run.clone();
        let waiting = tokio::spawn(async move { r.wait_for_readers(4, 2).await });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "slice 4 is 3 past the fastest reader"
        );
        drop(fast);
        let faster = slices[3].reader(3);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("released when the fastest reader moved on")
            .unwrap();
        assert_eq!(run.fastest_reader(), Some(3));
        drop((slow, faster));
        assert_eq!(run.fastest_reader(), None);
    }

    #[tokio::test]
    async fn a_silent_writer_stalls_its_readers() {
        let c = Coalescer::default();
        let (_run, _slices) = c.register_run(&[b"x".to_vec()]).unwrap();
        let mut r = c.get(b"x").unwrap().reader(0);
        assert!(matches!(
            r.next(Duration::from_millis(20)).await,
            Step::Stalled
        ));
    }

    #[tokio::test]
    async fn discovery_has_one_leader_and_drop_releases_followers() {
        let c = Arc::new(Coalescer::default());
        let Role::Leader(guard) = c.discover("k") else {
            panic!()
        };
        let Role::Follower(rx) = c.discover("k") else {
            panic!()
        };
        drop(guard);
        assert_eq!(
            wait_discovery(rx, Duration::from_secs(1)).await,
            Discovery::Uncoalescable
        );
        assert!(matches!(c.discover("k"), Role::Leader(_)));
    }
}
