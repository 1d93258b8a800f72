//! A pread/pwrite engine on a small pool of blocking threads. As with io_uring, a write waits
//! while another write runs, and waiting writes to consecutive offsets go out as one pwritev.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::thread;

use parking_lot::{Condvar, Mutex};

use super::{take_run, CompletionHook, HeldWrites, IoEngine, IoFuture, Op, Request};
use crate::io::aligned::AlignedBuf;

/// Requests waiting for a thread.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Request>,
    /// Writes waiting for the write running (see `run`).
    held: HeldWrites,
    closed: bool,
}

/// The queue, and a condvar signalled once per queued job so exactly one idle thread wakes.
#[derive(Default)]
struct Jobs {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// Positional IO on dedicated threads; completions return to async callers through oneshots.
pub(crate) struct PsyncEngine {
    jobs: Arc<Jobs>,
    workers: Vec<thread::JoinHandle<()>>,
}

impl PsyncEngine {
    /// Starts `threads` IO threads on `file`.
    pub(crate) fn new(file: Arc<File>, threads: usize) -> io::Result<Self> {
        let jobs = Arc::new(Jobs::default());
        let workers = (0..threads.max(1))
            .map(|i| {
                let jobs = jobs.clone();
                let file = file.clone();
                thread::Builder::new()
                    .name(format!("strata-psync-{i}"))
                    .spawn(move || worker(&file, &jobs))
            })
            .collect::<io::Result<Vec<_>>>();
        let workers = match workers {
            Ok(w) => w,
            Err(e) => {
                close(&jobs);
                return Err(e);
            }
        };
        Ok(PsyncEngine { jobs, workers })
    }

    fn submit(
        &self,
        op: Op,
        offset: u64,
        buf: AlignedBuf,
        done: Option<CompletionHook>,
    ) -> IoFuture {
        let (req, fut) = Request::new(op, offset, buf, done);
        let mut q = self.jobs.queue.lock();
        if q.closed {
            drop(q);
            req.complete(Err(io::Error::other("io engine stopped")));
        } else if let Some(req) = q.held.admit(req) {
            q.waiting.push_back(req);
            drop(q);
            self.jobs.ready.notify_one();
        }
        fut
    }
}

/// Lets the threads exit once the queued requests are done.
fn close(jobs: &Jobs) {
    jobs.queue.lock().closed = true;
    jobs.ready.notify_all();
}

impl Drop for PsyncEngine {
    fn drop(&mut self) {
        // Joining the threads releases their handles on the device (a block device is opened
        // exclusively).
        close(&self.jobs);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(file: &File, jobs: &Jobs) {
    loop {
        let mut batch = {
            let mut q = jobs.queue.lock();
            loop {
                if let Some(job) = q.waiting.pop_front() {
                    let batch = take_batch(&mut q, job);
                    // Pass the wake-up on while work is left (one wake per job, no herd).
                    if !q.waiting.is_empty() {
                        jobs.ready.notify_one();
                    }
                    break batch;
                }
                if q.closed && q.held.is_empty() {
                    // Threads that went back to sleep while held writes remained would
                    // otherwise never see the end.
                    jobs.ready.notify_all();
                    return;
                }
                jobs.ready.wait(&mut q);
            }
        };
        let is_write = batch.first().is_some_and(|r| matches!(r.op, Op::Write));
        let res = run(file, &mut batch);
        if is_write {
            let mut q = jobs.queue.lock();
            q.held.finished();
            let released = q.held.release();
            if !released.is_empty() {
                q.waiting.extend(released);
                jobs.ready.notify_one();
            }
        }
        for job in batch {
            // Every request of a failed batch gets its own copy of the error.
            let r = match &res {
                Ok(()) => Ok(()),
                Err(e) => Err(e.raw_os_error().map_or_else(
                    || io::Error::new(e.kind(), e.to_string()),
                    io::Error::from_raw_os_error,
                )),
            };
            job.complete(r);
        }
    }
}

/// `first`, and for a write the waiting writes that continue it; counts a running write.
fn take_batch(q: &mut Queue, first: Request) -> Vec<Request> {
    if !matches!(first.op, Op::Write) {
        return vec![first];
    }
    q.held.started();
    take_run(first, &mut q.waiting)
}

/// Runs one request, or consecutive writes as one `pwritev`.
fn run(file: &File, batch: &mut [Request]) -> io::Result<()> {
    if let [job] = batch {
        return match job.op {
            Op::Read => file.read_exact_at(job.buf.as_mut_slice(), job.offset),
            Op::Write => file.write_all_at(job.buf.as_slice(), job.offset),
        };
    }
    let Some(first) = batch.first() else {
        return Ok(());
    };
    let iov: Vec<libc::iovec> = batch
        .iter()
        .map(|r| libc::iovec {
            iov_base: r.buf.as_slice().as_ptr() as *mut libc::c_void,
            iov_len: r.buf.len(),
        })
        .collect();
    let total: usize = batch.iter().map(|r| r.buf.len()).sum();
    // SAFETY: the iovecs point into buffers borrowed for the whole call; pwritev only reads them.
    let n = unsafe {
        libc::pwritev(
            file.as_raw_fd(),
            iov.as_ptr(),
            iov.len() as libc::c_int,
            first.offset as libc::off_t,
        )
    };
    if n >= 0 && n as usize == total {
        return Ok(());
    }
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    // Stopped short: each write again on its own (rewriting bytes that landed is harmless).
    for r in batch.iter() {
        file.write_all_at(r.buf.as_slice(), r.offset)?;
    }
    Ok(())
}

impl IoEngine for PsyncEngine {
    fn name(&self) -> &'static str {
        "psync"
    }

    fn read(&self, offset: u64, buf: AlignedBuf) -> IoFuture {
        self.submit(Op::Read, offset, buf, None)
    }

    fn write(&self, offset: u64, buf: AlignedBuf, done: Option<CompletionHook>) -> IoFuture {
        self.submit(Op::Write, offset, buf, done)
    }
}
