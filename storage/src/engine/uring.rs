//! An io_uring engine whose completions are reaped on tokio runtimes, not on a thread of its own.
//!
//! Any task submits: it puts its request into the shared ring under a short lock and enters the
//! kernel once (no hand-off to another thread). Each runtime that submits or waits for IO gets
//! one reaper task, which waits on the ring's descriptor through tokio's reactor and completes
//! whatever has finished, whoever submitted it. A completion therefore wakes one runtime worker, not a ring thread that then wakes
//! a worker: on a small machine that second wake-up was most of the latency of a 4 KiB read.
//! The ring holds each buffer until the kernel is done with it, which keeps a cancelled caller
//! memory-safe.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Weak};

use io_uring::{opcode, squeue, types, IoUring};
use parking_lot::{Mutex, MutexGuard};
use tokio::io::unix::AsyncFd;
use tokio::runtime::{self, Handle};
use tokio::sync::oneshot;

use super::{take_run, Done, IoEngine, IoFuture, Op, Request};
use crate::aligned::AlignedBuf;

/// An IO in flight.
enum InFlight {
    /// One request, and how much of it is done (short transfers are resumed).
    One { req: Request, transferred: usize },
    /// Writes to consecutive offsets, merged into one vectored write.
    Merged { reqs: Vec<Request>, iovecs: IoVecs },
}

/// The iovec array of a merged write; it points into the requests' buffers, which the same
/// `InFlight` owns.
struct IoVecs(Vec<libc::iovec>);
// SAFETY: the pointers are only handed to the kernel; the buffers they point into are owned by
// the same InFlight, which moves between threads as a whole.
unsafe impl Send for IoVecs {}

/// The ring and what is in it; always used under the engine's lock.
struct State {
    ring: IoUring,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    /// Requests waiting for a free slot.
    backlog: VecDeque<Request>,
    /// Writes held back while another write is in flight, to go out merged when it completes:
    /// a device (a virtual one most of all) pays per request, and a burst of small item writes
    /// to consecutive blocks becomes one large write.
    held: Vec<Request>,
    /// Parts of a merged write that stopped short, to go again each on its own, with how much
    /// of each already landed.
    solo: VecDeque<(Request, usize)>,
    /// Write IOs in flight.
    writes_in_flight: usize,
    /// Completions being handled (kept to reuse its allocation).
    cqes: Vec<(u64, i32)>,
    /// Runtimes with a reaper; dropping a sender stops that reaper.
    reapers: Vec<(runtime::Id, oneshot::Sender<()>)>,
    /// Set after a fatal ring error: new requests fail at once.
    failed: bool,
    /// Set when the kernel kept refusing a submission for want of memory; entries wait in the
    /// submission queue.
    stalled: bool,
}

struct Shared {
    fd: RawFd,
    /// Keeps `fd` open while the ring may still use it.
    _file: Arc<File>,
    state: Mutex<State>,
}

/// Positional IO through io_uring. IO is started from within a tokio runtime, whose reactor
/// delivers the completions; outside any runtime it fails at once, and a runtime without IO
/// enabled panics, as with any tokio IO type.
pub struct UringEngine {
    shared: Arc<Shared>,
}

impl UringEngine {
    /// Starts a ring of `depth` entries on `file`; fails if the kernel refuses io_uring.
    pub fn new(file: Arc<File>, depth: u32) -> io::Result<Self> {
        let depth = depth.clamp(2, 4096);
        // No SINGLE_ISSUER or COOP_TASKRUN: every runtime worker submits, and a worker parked
        // in its reactor must be interrupted to post its completions.
        let ring = IoUring::new(depth)?;
        let state = State {
            ring,
            slots: (0..depth as usize).map(|_| None).collect(),
            free: (0..depth as usize).rev().collect(),
            backlog: VecDeque::new(),
            held: Vec::new(),
            solo: VecDeque::new(),
            writes_in_flight: 0,
            cqes: Vec::with_capacity(depth as usize * 2),
            reapers: Vec::new(),
            failed: false,
            stalled: false,
        };
        Ok(UringEngine {
            shared: Arc::new(Shared {
                fd: file.as_raw_fd(),
                _file: file,
                state: Mutex::new(state),
            }),
        })
    }

    fn submit(&self, op: Op, offset: u64, buf: AlignedBuf, done: Option<Done>) -> IoFuture {
        let (req, fut) = Request::new(op, offset, buf, done);
        let mut st = self.shared.lock();
        let refused = if st.failed {
            Some(io::Error::other("io_uring failed earlier"))
        } else {
            attach_reaper(&self.shared, &mut st).err()
        };
        let finished = match refused {
            Some(e) => vec![Completion::Done(req, Err(e))],
            None => {
                st.queue(req);
                st.pump(self.shared.fd)
            }
        };
        let stalled = std::mem::take(&mut st.stalled);
        drop(st);
        complete_all(finished);
        if stalled {
            retry_later(&self.shared);
        }
        let shared = self.shared.clone();
        Box::pin(async move {
            // The runtime that waits may not be the one that submitted (a future can move
            // between runtimes, and the submitting one may no longer be driven): it needs a
            // reaper too. Failing here only means no runtime waits; the submitter's reaper then
            // still completes the IO.
            let _ = attach_reaper(&shared, &mut shared.lock());
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

/// What to report once the lock is released.
enum Completion {
    /// A request finished with this outcome.
    Done(Request, io::Result<()>),
    /// The completion hook of an IO abandoned after a fatal ring error (its buffer is leaked
    /// and its caller gets an error from the dropped reply).
    Abandoned(Done),
}

type Finished = Vec<Completion>;

fn complete_all(finished: Finished) {
    for c in finished {
        match c {
            Completion::Done(req, res) => req.complete(res),
            Completion::Abandoned(hook) => hook(),
        }
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
        let stalled = std::mem::take(&mut st.stalled);
        drop(st);
        complete_all(finished);
        if stalled {
            retry_later(self);
        }
    }
}

/// Makes sure the runtime the caller runs on has a reaper for this ring.
fn attach_reaper(shared: &Arc<Shared>, st: &mut State) -> io::Result<()> {
    let handle = Handle::try_current()
        .map_err(|_| io::Error::other("the io_uring engine is used outside a tokio runtime"))?;
    let id = handle.id();
    // Reapers of runtimes that shut down are gone; so is one that failed to wait on the ring.
    st.reapers.retain(|(_, stop)| !stop.is_closed());
    if st.reapers.iter().any(|(r, _)| *r == id) {
        return Ok(());
    }
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
    handle.spawn(reaper(Arc::downgrade(shared), afd, stop_rx));
    st.reapers.push((id, stop_tx));
    Ok(())
}

/// Completes IOs whenever the ring's completion queue gets entries, until the engine is gone.
async fn reaper(shared: Weak<Shared>, afd: AsyncFd<OwnedFd>, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
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

impl State {
    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Takes finished IOs off the completion queue, moves waiting requests into free slots and
    /// hands new entries to the kernel; returns what finished.
    fn pump(&mut self, fd: RawFd) -> Finished {
        let mut finished = Vec::new();
        let mut tries = 0;
        loop {
            // Entering the kernel runs this thread's pending completions, and completions free
            // slots for waiting requests: reap and fill again after every submission.
            self.reap_into(fd, &mut finished);
            self.fill(fd, &mut finished);
            if self.failed || self.ring.submission().is_empty() {
                break;
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                // Short of memory for a moment: try again at once, a few times, then later.
                // (EBUSY cannot happen: the completion queue has room for every slot twice.)
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EBUSY)) => {
                    tries += 1;
                    if tries > 3 {
                        self.stalled = true;
                        break;
                    }
                }
                Err(e) => self.fail(e, &mut finished),
            }
        }
        finished
    }

    /// Takes a new request: a write waits while another write is in flight.
    fn queue(&mut self, req: Request) {
        match req.op {
            Op::Write if self.writes_in_flight > 0 => self.held.push(req),
            _ => self.backlog.push_back(req),
        }
    }

    /// Moves waiting requests into free slots, merging writes to consecutive offsets.
    fn fill(&mut self, fd: RawFd, finished: &mut Finished) {
        if self.writes_in_flight == 0 && !self.held.is_empty() {
            // Sorted by offset so consecutive items merge. Writes waiting together are
            // independent: a caller that needs one before another awaits the first.
            self.held.sort_by_key(|r| r.offset);
            self.backlog.extend(self.held.drain(..));
        }
        while let Some(&slot) = self.free.last() {
            if let Some((req, transferred)) = self.solo.pop_front() {
                self.free.pop();
                self.start(fd, slot, InFlight::One { req, transferred }, finished);
                continue;
            }
            let Some(req) = self.backlog.pop_front() else {
                break;
            };
            self.free.pop();
            let f = match req.op {
                Op::Write => self.merge(req),
                Op::Read => InFlight::One {
                    req,
                    transferred: 0,
                },
            };
            self.start(fd, slot, f, finished);
        }
    }

    /// `first` and the writes after it in the backlog that continue it.
    fn merge(&mut self, first: Request) -> InFlight {
        let mut reqs = take_run(first, &mut self.backlog);
        if reqs.len() == 1 {
            if let Some(req) = reqs.pop() {
                return InFlight::One {
                    req,
                    transferred: 0,
                };
            }
        }
        let iovecs = reqs
            .iter_mut()
            .map(|r| libc::iovec {
                iov_base: r.buf.as_mut_ptr().cast(),
                iov_len: r.buf.len(),
            })
            .collect();
        InFlight::Merged {
            reqs,
            iovecs: IoVecs(iovecs),
        }
    }

    /// Puts the (rest of the) IO of `f` on the submission queue, in `slot`.
    fn start(&mut self, fd: RawFd, slot: usize, mut f: InFlight, finished: &mut Finished) {
        let sqe = sqe_for(fd, &mut f, slot);
        if f.is_write() {
            self.writes_in_flight += 1;
        }
        self.slots[slot] = Some(f);
        // SAFETY: see sqe_for.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            // Cannot happen (one submission entry per slot), but never strand a caller.
            if let Some(f) = self.slots[slot].take() {
                if f.is_write() {
                    self.writes_in_flight -= 1;
                }
                for req in f.into_requests() {
                    finished.push(Completion::Done(
                        req,
                        Err(io::Error::other("io_uring submission queue full")),
                    ));
                }
            }
            self.free.push(slot);
        }
    }

    fn reap_into(&mut self, fd: RawFd, finished: &mut Finished) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &cqes {
            let slot = ud as usize;
            let Some(f) = self.slots.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            if f.is_write() {
                self.writes_in_flight -= 1;
            }
            // Every request of a failed IO gets its own copy of the error.
            let error = |res: i32| {
                if res < 0 {
                    io::Error::from_raw_os_error(-res)
                } else {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "io_uring transferred 0 bytes")
                }
            };
            match (f, res <= 0) {
                (f, true) => {
                    for req in f.into_requests() {
                        finished.push(Completion::Done(req, Err(error(res))));
                    }
                    self.free.push(slot);
                }
                (InFlight::One { req, transferred }, false) => {
                    let transferred = transferred + res as usize;
                    if transferred >= req.buf.len() {
                        finished.push(Completion::Done(req, Ok(())));
                        self.free.push(slot);
                    } else {
                        // A short transfer: resume where it stopped.
                        self.start(fd, slot, InFlight::One { req, transferred }, finished);
                    }
                }
                (InFlight::Merged { reqs, .. }, false) => {
                    let total: usize = reqs.iter().map(|r| r.buf.len()).sum();
                    if res as usize >= total {
                        finished.extend(reqs.into_iter().map(|r| Completion::Done(r, Ok(()))));
                    } else {
                        // A short merged write: the writes that landed are done; the rest go
                        // again each on its own, the first resumed where it stopped (merged
                        // again, they could stop short at the same place for ever).
                        let mut landed = res as usize;
                        for req in reqs {
                            let len = req.buf.len();
                            if landed >= len {
                                landed -= len;
                                finished.push(Completion::Done(req, Ok(())));
                            } else {
                                self.solo.push_back((req, landed));
                                landed = 0;
                            }
                        }
                    }
                    self.free.push(slot);
                }
            }
        }
        cqes.clear();
        self.cqes = cqes;
    }

    /// After a fatal ring error: waiting requests fail; IOs in flight keep their buffers
    /// (the kernel may still write into them) and their callers get an error.
    fn fail(&mut self, e: io::Error, finished: &mut Finished) {
        tracing::error!(error = %e, "io_uring submission failed; the disk tier stops");
        self.failed = true;
        let solo = self.solo.drain(..).map(|(req, _)| req);
        for req in self
            .backlog
            .drain(..)
            .chain(self.held.drain(..))
            .chain(solo)
        {
            finished.push(Completion::Done(
                req,
                Err(io::Error::other("io_uring failed")),
            ));
        }
        let mut abandoned = Vec::new();
        for f in self.slots.iter_mut().filter_map(Option::take) {
            match f {
                InFlight::One { req, .. } => abandoned.push(req),
                InFlight::Merged { reqs, iovecs } => {
                    // The kernel may still read the iovecs, like the buffers they point to.
                    std::mem::forget(iovecs);
                    abandoned.extend(reqs);
                }
            }
        }
        for req in abandoned {
            // The reply goes unsent: the caller gets an error and a fresh buffer. The hook runs
            // now, before the kernel is done: nothing is written after this failure anyway,
            // and a hook that never ran would pin its region.
            let Request { buf, done, .. } = req;
            std::mem::forget(buf);
            if let Some(d) = done {
                finished.push(Completion::Abandoned(d));
            }
        }
    }
}

impl Drop for Shared {
    /// Waits for every IO still in the ring: the kernel owns their buffers until then.
    fn drop(&mut self) {
        let fd = self.fd;
        let st = self.state.get_mut();
        st.reapers.clear();
        while !st.failed
            && (st.in_flight() > 0
                || !st.backlog.is_empty()
                || !st.held.is_empty()
                || !st.solo.is_empty())
        {
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

    fn write(&self, offset: u64, buf: AlignedBuf, done: Option<Done>) -> IoFuture {
        self.submit(Op::Write, offset, buf, done)
    }

    fn complete_finished(&self) {
        // IO whose runtime shut down has no reaper left: this runtime takes over from here.
        let _ = attach_reaper(&self.shared, &mut self.shared.lock());
        self.shared.reap();
    }
}

impl InFlight {
    fn is_write(&self) -> bool {
        match self {
            InFlight::One { req, .. } => matches!(req.op, Op::Write),
            InFlight::Merged { .. } => true,
        }
    }

    fn into_requests(self) -> Vec<Request> {
        match self {
            InFlight::One { req, .. } => vec![req],
            InFlight::Merged { reqs, .. } => reqs,
        }
    }
}

fn sqe_for(fd: RawFd, f: &mut InFlight, slot: usize) -> squeue::Entry {
    let entry = match f {
        InFlight::One { req, transferred } => {
            let len = req.buf.len() - *transferred;
            let offset = req.offset + *transferred as u64;
            // SAFETY: the pointer stays valid until the completion: the buffer lives in `slots`
            // and is neither moved out nor dropped while its IO is in flight.
            let ptr = unsafe { req.buf.as_mut_ptr().add(*transferred) };
            match req.op {
                Op::Read => opcode::Read::new(types::Fd(fd), ptr, len as u32)
                    .offset(offset)
                    .build(),
                Op::Write => opcode::Write::new(types::Fd(fd), ptr, len as u32)
                    .offset(offset)
                    .build(),
            }
        }
        // The iovecs (and the buffers they point into) live in `slots` until the completion.
        InFlight::Merged { reqs, iovecs } => {
            let offset = reqs.first().map_or(0, |r| r.offset);
            opcode::Writev::new(types::Fd(fd), iovecs.0.as_ptr(), iovecs.0.len() as u32)
                .offset(offset)
                .build()
        }
    };
    entry.user_data(slot as u64)
}
