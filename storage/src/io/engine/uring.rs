//! An io_uring engine whose completions are reaped on tokio runtimes, not on a thread of its own.
//!
//! Any task submits: it puts its request into the shared ring under a short lock (no hand-off
//! to another thread). Each runtime that submits or waits for IO gets one reaper task, which
//! enters the kernel once the runtime has run the tasks that were ready (so the requests of one
//! scheduler tick go in one submission), and waits on the ring's descriptor through tokio's
//! reactor and completes whatever has finished, whoever submitted it. A completion therefore
//! wakes one runtime worker, not a ring thread that then wakes a worker: on a small machine that
//! second wake-up was most of the latency of a 4 KiB read. The ring's own state is in
//! [`super::ring`].
//! The ring holds each buffer until the kernel is done with it, which keeps a cancelled caller
//! memory-safe.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Weak};

use io_uring::IoUring;
use parking_lot::{Mutex, MutexGuard};
use tokio::io::unix::AsyncFd;
use tokio::runtime::{self, Handle};
use tokio::sync::{oneshot, Notify};

use super::ring::{complete_all, Completion, Finished, Reaper, State};
use super::{CompletionHook, IoEngine, IoFuture, Op, Request};
use crate::io::aligned::AlignedBuf;

/// The engine's state, shared with its reapers.
struct Shared {
    fd: RawFd,
    /// Keeps `fd` open while the ring may still use it.
    _file: Arc<File>,
    state: Mutex<State>,
}

/// Positional IO through io_uring. IO is started from within a tokio runtime, whose reactor
/// delivers the completions; outside any runtime it fails at once, and a runtime without IO
/// enabled panics, as with any tokio IO type.
pub(crate) struct UringEngine {
    shared: Arc<Shared>,
}

impl UringEngine {
    /// Starts a ring of `depth` entries on `file`; fails if the kernel refuses io_uring.
    pub(crate) fn new(file: Arc<File>, depth: u32) -> io::Result<Self> {
        let depth = depth.clamp(2, 4096);
        // No SINGLE_ISSUER or COOP_TASKRUN: every runtime worker submits, and a worker parked
        // in its reactor must be interrupted to post its completions.
        let ring = IoUring::new(depth)?;
        let state = State::new(ring, depth as usize);
        Ok(UringEngine {
            shared: Arc::new(Shared {
                fd: file.as_raw_fd(),
                _file: file,
                state: Mutex::new(state),
            }),
        })
    }

    /// Queues a request for the ring. It enters the kernel when the caller's runtime has run
    /// the tasks that are ready now: those tasks' requests go in the same submission, and the
    /// device is notified once for all of them (in a virtual machine, each notification is an
    /// exit to the host, which cost more CPU than the reads themselves on a busy cache).
    fn submit(
        &self,
        op: Op,
        offset: u64,
        buf: AlignedBuf,
        done: Option<CompletionHook>,
    ) -> IoFuture {
        let (req, fut) = Request::new(op, offset, buf, done);
        let mut st = self.shared.lock();
        let reaper = if st.failed {
            Err(io::Error::other("io_uring failed earlier"))
        } else {
            attach_reaper(&self.shared, &mut st)
        };
        let (submitted_on, flush) = match reaper {
            Err(e) => {
                self.shared.settle(st, vec![Completion::Done(req, Err(e))]);
                return fut;
            }
            Ok(r) => r,
        };
        st.queue(req);
        drop(st);
        flush.notify_one();
        let shared = self.shared.clone();
        Box::pin(async move {
            // The runtime that waits may not be the one that submitted (a future can move
            // between runtimes, and the submitting one may no longer be driven): it needs a
            // reaper too, and one that submits, in case the submitter's never does. Failing
            // here only means no runtime waits; the submitter's reaper then still completes
            // the IO.
            if Handle::try_current().map(|h| h.id()).ok() != Some(submitted_on) {
                if let Ok((_, flush)) = attach_reaper(&shared, &mut shared.lock()) {
                    flush.notify_one();
                }
            }
            fut.await
        })
    }
}

/// Submits again shortly after the kernel kept refusing for want of memory: with nothing else
/// in flight no completion would trigger it. A thread, so no runtime timer is needed for this
/// rare path.
fn retry_later(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("strata-uring-retry".into())
        .spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(1));
            if let Some(s) = weak.upgrade() {
                s.reap();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "io_uring: cannot schedule a submission retry");
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Reaps and submits; called by reapers when the ring's descriptor is readable.
    fn reap(self: &Arc<Self>) {
        let mut st = self.lock();
        let finished = st.pump(self.fd);
        self.settle(st, finished);
    }

    /// Releases the lock, then reports what finished and schedules a retry if the kernel kept
    /// refusing submissions.
    fn settle(self: &Arc<Self>, mut st: MutexGuard<'_, State>, finished: Finished) {
        let stalled = std::mem::take(&mut st.stalled);
        drop(st);
        complete_all(finished);
        if stalled {
            retry_later(self);
        }
    }
}

/// Makes sure the runtime the caller runs on has a reaper for this ring; returns the runtime's
/// id and the reaper's flush signal.
fn attach_reaper(shared: &Arc<Shared>, st: &mut State) -> io::Result<(runtime::Id, Arc<Notify>)> {
    let handle = Handle::try_current()
        .map_err(|_| io::Error::other("the io_uring engine is used outside a tokio runtime"))?;
    let id = handle.id();
    if let Some(r) = st
        .reapers
        .iter()
        .find(|r| r.runtime == id && !r.stop.is_closed())
    {
        return Ok((id, r.flush.clone()));
    }
    // Reapers of runtimes that shut down are gone; so is one that failed to wait on the ring.
    st.reapers.retain(|r| !r.stop.is_closed());
    // A descriptor of its own, so the reaper can outlive the ring without touching a reused fd.
    // SAFETY: dup of the ring's valid descriptor; the new one is owned by `fd` from here on.
    let raw = unsafe { libc::fcntl(st.ring.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: the AsyncFd owns `fd`, which stays open and unchanged for its whole life.
    // Registering needs a runtime with IO enabled: every runtime Strata builds has it.
    let afd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let flush = Arc::new(Notify::new());
    handle.spawn(reaper(Arc::downgrade(shared), afd, stop_rx, flush.clone()));
    st.reapers.push(Reaper {
        runtime: id,
        stop: stop_tx,
        flush: flush.clone(),
    });
    Ok((id, flush))
}

/// Submits what its runtime queued, and completes IOs whenever the ring's completion queue
/// gets entries, until the engine is gone.
async fn reaper(
    shared: Weak<Shared>,
    afd: AsyncFd<OwnedFd>,
    mut stop: oneshot::Receiver<()>,
    flush: Arc<Notify>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            // Not at once: the runtime first runs the other tasks that are ready, whose
            // requests then go in with this one.
            _ = flush.notified() => tokio::task::yield_now().await,
            ready = afd.readable() => match ready {
                // Cleared before reaping: an entry posted after the reap raises a new edge.
                Ok(mut guard) => guard.clear_ready(),
                Err(e) => {
                    tracing::error!(error = %e, "io_uring reaper cannot wait on its ring");
                    return;
                }
            },
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.reap();
    }
}

impl Drop for Shared {
    /// Waits for every IO still in the ring: the kernel owns their buffers until then.
    fn drop(&mut self) {
        let fd = self.fd;
        let st = self.state.get_mut();
        st.reapers.clear();
        while !st.failed && st.busy() {
            let finished = st.pump(fd);
            let progressed = !finished.is_empty();
            complete_all(finished);
            if progressed || st.in_flight() == 0 {
                continue;
            }
            match st.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EBUSY)) => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => {
                    let mut finished = Vec::new();
                    st.fail(e, &mut finished);
                    complete_all(finished);
                }
            }
        }
    }
}

impl IoEngine for UringEngine {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn read(&self, offset: u64, buf: AlignedBuf) -> IoFuture {
        self.submit(Op::Read, offset, buf, None)
    }

    fn write(&self, offset: u64, buf: AlignedBuf, done: Option<CompletionHook>) -> IoFuture {
        self.submit(Op::Write, offset, buf, done)
    }

    fn complete_finished(&self) {
        // IO whose runtime shut down has no reaper left: this runtime takes over from here.
        let _ = attach_reaper(&self.shared, &mut self.shared.lock());
        self.shared.reap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests made in one scheduler tick enter the kernel together, once, and all complete.
    #[test]
    fn one_tick_of_requests_is_one_submission() {
        let dir = tempfile::tempdir().expect("scratch dir");
        let path = dir.path().join("ring.img");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("scratch file");
        file.set_len(1 << 20).expect("size the file");
        let engine = match UringEngine::new(Arc::new(file), 64) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("skipped: io_uring is unavailable here ({e})");
                return;
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let reads: Vec<_> = (0..16u64)
                .map(|i| engine.read(i * 4096, AlignedBuf::zeroed(4096, 4096)))
                .collect();
            assert_eq!(engine.shared.lock().enters, 0, "nothing enters mid-tick");
            for r in reads {
                let (res, buf) = r.await;
                res.expect("read");
                assert_eq!(buf.len(), 4096);
            }
        });
        assert_eq!(engine.shared.lock().enters, 1, "16 reads, one submission");
    }
}
