//! A pread/pwrite engine on a small pool of blocking threads.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use super::{Done, IoEngine, IoFuture, Op, Queue, Request};
use crate::aligned::AlignedBuf;

/// Positional IO on dedicated threads; completions return to async callers through oneshots.
pub struct PsyncEngine {
    queue: Queue,
    workers: Vec<thread::JoinHandle<()>>,
}

impl PsyncEngine {
    /// Starts `threads` IO threads on `file`.
    pub fn new(file: Arc<File>, threads: usize) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        // std's Receiver is single-consumer; the mutex is held only while taking the next job.
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads.max(1))
            .map(|i| {
                let rx = rx.clone();
                let file = file.clone();
                thread::Builder::new()
                    .name(format!("strata-psync-{i}"))
                    .spawn(move || worker(&file, &rx))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(PsyncEngine {
            queue: Queue::new(tx),
            workers,
        })
    }
}

impl Drop for PsyncEngine {
    fn drop(&mut self) {
        // Closing the channel lets the workers exit once queued jobs are done; joining them
        // releases their handles on the device (a block device is opened exclusively).
        self.queue.close();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(file: &File, rx: &Mutex<mpsc::Receiver<Request>>) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let mut job = job;
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
        self.queue.submit(Op::Read, offset, buf, None, || {})
    }

    fn write(&self, offset: u64, buf: AlignedBuf, done: Option<Done>) -> IoFuture {
        self.queue.submit(Op::Write, offset, buf, done, || {})
    }
}
