//! A pread/pwrite engine on a small pool of blocking threads.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use tokio::sync::oneshot;

use super::{IoEngine, IoFuture, IoResult};
use crate::aligned::AlignedBuf;

enum Op {
    Read,
    Write,
}

struct Job {
    op: Op,
    offset: u64,
    buf: AlignedBuf,
    reply: oneshot::Sender<IoResult>,
}

/// Positional IO on dedicated threads; completions return to async callers through oneshots.
pub struct PsyncEngine {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    workers: Vec<thread::JoinHandle<()>>,
}

impl PsyncEngine {
    /// Starts `threads` IO threads on `file`.
    pub fn new(file: Arc<File>, threads: usize) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
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
            jobs: Mutex::new(Some(tx)),
            workers,
        })
    }

    fn submit(&self, op: Op, offset: u64, buf: AlignedBuf) -> IoFuture {
        let (reply, done) = oneshot::channel();
        let job = Job {
            op,
            offset,
            buf,
            reply,
        };
        let sent = match self.jobs.lock() {
            Ok(guard) => match guard.as_ref() {
                Some(tx) => tx.send(job).map_err(|e| e.0),
                None => Err(job),
            },
            Err(_) => Err(job),
        };
        match sent {
            Ok(()) => Box::pin(async move {
                match done.await {
                    Ok(res) => res,
                    // The worker died with the buffer; hand back a fresh one so the caller's
                    // contract (a buffer is always returned) holds.
                    Err(_) => (
                        Err(io::Error::other("io thread exited")),
                        AlignedBuf::zeroed(1, 1),
                    ),
                }
            }),
            Err(job) => {
                Box::pin(async move { (Err(io::Error::other("io engine stopped")), job.buf) })
            }
        }
    }
}

impl Drop for PsyncEngine {
    fn drop(&mut self) {
        // Closing the channel lets the workers exit once queued jobs are done; joining them
        // releases their handles on the device (a block device is opened exclusively).
        if let Ok(mut g) = self.jobs.lock() {
            g.take();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(file: &File, rx: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let Job {
            op,
            offset,
            mut buf,
            reply,
        } = job;
        let res = match op {
            Op::Read => file.read_exact_at(buf.as_mut_slice(), offset),
            Op::Write => file.write_all_at(buf.as_slice(), offset),
        };
        let _ = reply.send((res, buf));
    }
}

impl IoEngine for PsyncEngine {
    fn name(&self) -> &'static str {
        "psync"
    }

    fn read(&self, offset: u64, buf: AlignedBuf) -> IoFuture {
        self.submit(Op::Read, offset, buf)
    }

    fn write(&self, offset: u64, buf: AlignedBuf) -> IoFuture {
        self.submit(Op::Write, offset, buf)
    }
}
