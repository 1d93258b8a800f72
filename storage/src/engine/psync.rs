//! A pread/pwrite engine on a small pool of blocking threads.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::thread;

use parking_lot::{Condvar, Mutex};

use super::{Done, IoEngine, IoFuture, Op, Request};
use crate::aligned::AlignedBuf;

/// Requests waiting for a thread, and whether the engine is shutting down.
#[derive(Default)]
struct Jobs {
    queue: Mutex<(VecDeque<Request>, bool)>,
    /// Signalled once per queued request, so exactly one idle thread wakes for it.
    ready: Condvar,
}

/// Positional IO on dedicated threads; completions return to async callers through oneshots.
pub struct PsyncEngine {
    jobs: Arc<Jobs>,
    workers: Vec<thread::JoinHandle<()>>,
}

impl PsyncEngine {
    /// Starts `threads` IO threads on `file`.
    pub fn new(file: Arc<File>, threads: usize) -> io::Result<Self> {
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

    fn submit(&self, op: Op, offset: u64, buf: AlignedBuf, done: Option<Done>) -> IoFuture {
        let (req, fut) = Request::new(op, offset, buf, done);
        let mut q = self.jobs.queue.lock();
        if q.1 {
            drop(q);
            req.complete(Err(io::Error::other("io engine stopped")));
        } else {
            q.0.push_back(req);
            drop(q);
            self.jobs.ready.notify_one();
        }
        fut
    }
}

/// Lets the threads exit once the queued requests are done.
fn close(jobs: &Jobs) {
    jobs.queue.lock().1 = true;
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
        let mut job = {
            let mut q = jobs.queue.lock();
            loop {
                if let Some(job) = q.0.pop_front() {
                    break job;
                }
                if q.1 {
                    return;
                }
                jobs.ready.wait(&mut q);
            }
        };
        let res = match job.op {
            Op::Read => file.read_exact_at(job.buf.as_mut_slice(), job.offset),
            Op::Write => file.write_all_at(job.buf.as_slice(), job.offset),
        };
        job.complete(res);
    }
}

impl IoEngine for PsyncEngine {
    fn name(&self) -> &'static str {
        "psync"
    }

    fn read(&self, offset: u64, buf: AlignedBuf) -> IoFuture {
        self.submit(Op::Read, offset, buf, None)
    }

    fn write(&self, offset: u64, buf: AlignedBuf, done: Option<Done>) -> IoFuture {
        self.submit(Op::Write, offset, buf, done)
    }
}
