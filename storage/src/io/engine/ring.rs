//! The state behind the io_uring engine's lock: the ring, its slots, the requests waiting for
//! one, and how writes are held and merged.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring};
use tokio::runtime;
use tokio::sync::{oneshot, Notify};

use super::{take_run, CompletionHook, HeldWrites, Op, Request};

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
pub(super) struct State {
    pub(super) ring: IoUring,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    /// Requests waiting for a free slot.
    backlog: VecDeque<Request>,
    /// Writes waiting for the write IOs in flight.
    held: HeldWrites,
    /// Parts of a merged write that stopped short, to go again each on its own, with how much
    /// of each already landed.
    solo: VecDeque<(Request, usize)>,
    /// Completions being handled (kept to reuse its allocation).
    cqes: Vec<(u64, i32)>,
    /// Runtimes with a reaper; dropping a sender stops that reaper.
    pub(super) reapers: Vec<Reaper>,
    /// Set after a fatal ring error: new requests fail at once.
    pub(super) failed: bool,
    /// Set when the kernel kept refusing a submission for want of memory; entries wait in the
    /// submission queue.
    pub(super) stalled: bool,
    /// Submissions that entered the kernel.
    pub(super) enters: u64,
}

/// A runtime's reaper, as the ring knows it.
pub(super) struct Reaper {
    /// The runtime it runs on.
    pub(super) runtime: runtime::Id,
    /// Dropped to stop it.
    pub(super) stop: oneshot::Sender<()>,
    /// Asks it to submit what was queued on its runtime, once that runtime's tick is over.
    pub(super) flush: Arc<Notify>,
}

/// What to report once the lock is released.
pub(super) enum Completion {
    /// A request finished with this outcome.
    Done(Request, io::Result<()>),
    /// The completion hook of an IO abandoned after a fatal ring error (its buffer is leaked
    /// and its caller gets an error from the dropped reply).
    Abandoned(CompletionHook),
}

pub(super) type Finished = Vec<Completion>;

pub(super) fn complete_all(finished: Finished) {
    for c in finished {
        match c {
            Completion::Done(req, res) => req.complete(res),
            Completion::Abandoned(hook) => hook(),
        }
    }
}

impl State {
    /// Empty slots for `depth` IOs in flight on `ring`.
    pub(super) fn new(ring: IoUring, depth: usize) -> Self {
        State {
            ring,
            slots: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            backlog: VecDeque::new(),
            held: HeldWrites::default(),
            solo: VecDeque::new(),
            cqes: Vec::with_capacity(depth * 2),
            reapers: Vec::new(),
            failed: false,
            stalled: false,
            enters: 0,
        }
    }

    pub(super) fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// True while any request is in flight or waiting.
    pub(super) fn busy(&self) -> bool {
        self.in_flight() > 0
            || !self.backlog.is_empty()
            || !self.held.is_empty()
            || !self.solo.is_empty()
    }

    /// Takes finished IOs off the completion queue, moves waiting requests into free slots and
    /// hands new entries to the kernel; returns what finished.
    pub(super) fn pump(&mut self, fd: RawFd) -> Finished {
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
                Ok(_) => self.enters += 1,
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
    pub(super) fn queue(&mut self, req: Request) {
        if let Some(req) = self.held.admit(req) {
            self.backlog.push_back(req);
        }
    }

    /// Moves waiting requests into free slots, merging writes to consecutive offsets.
    fn fill(&mut self, fd: RawFd, finished: &mut Finished) {
        self.backlog.extend(self.held.release());
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
            self.held.started();
        }
        self.slots[slot] = Some(f);
        // SAFETY: the entry points into memory that stays valid until its completion is reaped:
        // the buffer of `f` (or its iovecs and the buffers they point into), now owned by
        // `self.slots[slot]`, which is neither moved out nor dropped while the IO is in flight
        // (after a fatal ring error it is leaked instead).
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            // Cannot happen (one submission entry per slot), but never strand a caller.
            if let Some(f) = self.slots[slot].take() {
                if f.is_write() {
                    self.held.finished();
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
            let res = shortened(res);
            if f.is_write() {
                self.held.finished();
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
    pub(super) fn fail(&mut self, e: io::Error, finished: &mut Finished) {
        tracing::error!(error = %e, "io_uring submission failed; the disk tier stops");
        self.failed = true;
        let solo = self.solo.drain(..).map(|(req, _)| req);
        for req in self
            .backlog
            .drain(..)
            .chain(self.held.take_all())
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

/// With the failpoint `io::short` configured (`return`), a transfer the device completed is
/// reported as half done (whole 4 KiB blocks, so the resumed rest stays aligned for O_DIRECT):
/// the resume paths run as they would on a device that stops short. Always `res` without the
/// `failpoints` feature.
fn shortened(res: i32) -> i32 {
    #[cfg(feature = "failpoints")]
    if res > 8192 && fail::eval("io::short", |_| ()).is_some() {
        return (res / 2) & !4095;
    }
    res
}
