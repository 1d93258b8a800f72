//! IO engines: how the disk store's reads and writes reach the device.
//!
//! Every call hands the engine an owned [`AlignedBuf`] and gets it back with the result, so a
//! caller that drops its future never leaves the kernel writing into freed memory.

mod psync;
mod ring;
mod uring;

pub(crate) use psync::PsyncEngine;
pub(crate) use uring::UringEngine;

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::error::{Result, StorageError};
use crate::io::aligned::AlignedBuf;

/// The result of one IO: the outcome and the buffer handed back.
pub type IoResult = (io::Result<()>, AlignedBuf);

/// A boxed future of an IO result.
pub type IoFuture = Pin<Box<dyn Future<Output = IoResult> + Send>>;

/// Positional reads and writes of whole aligned buffers on one device.
pub trait IoEngine: Send + Sync + 'static {
    /// Short name for logs and metrics (`psync`, `io_uring`).
    fn name(&self) -> &'static str;
    /// Fills `buf` from the device at `offset`; a short read is an error.
    fn read(&self, offset: u64, buf: AlignedBuf) -> IoFuture;
    /// Writes all of `buf` to the device at `offset`; `done` runs (on whichever thread completes
    /// the IO) once the device is finished with the write, even if the caller stopped waiting.
    fn write(&self, offset: u64, buf: AlignedBuf, done: Option<CompletionHook>) -> IoFuture;
    /// Delivers whatever IO has finished, now, on the caller's thread: for a caller about to
    /// wait on completion hooks of IO that other tasks (perhaps of a runtime since shut down)
    /// started.
    fn complete_finished(&self) {}
}

/// Work to run when an IO has finished on the device.
pub type CompletionHook = Box<dyn FnOnce() + Send>;

/// The kind of an IO.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Read,
    Write,
}

impl Op {
    /// `read` or `write`.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
        }
    }
}

/// One IO on its way to the device, with its owned buffer and where to send the result.
pub(crate) struct Request {
    pub op: Op,
    pub offset: u64,
    pub buf: AlignedBuf,
    pub reply: oneshot::Sender<IoResult>,
    pub done: Option<CompletionHook>,
}

impl Request {
    /// A request, and the future its caller awaits for the outcome and the buffer.
    pub(crate) fn new(
        op: Op,
        offset: u64,
        buf: AlignedBuf,
        done: Option<CompletionHook>,
    ) -> (Self, IoFuture) {
        let (reply, rx) = oneshot::channel();
        let fut = Box::pin(async move {
            match rx.await {
                Ok(res) => res,
                // The engine lost the request with its buffer (after a fatal device error);
                // hand back a fresh one so the contract (a buffer is always returned) holds.
                Err(_) => (
                    Err(io::Error::other("io engine failed")),
                    AlignedBuf::zeroed(1, 1),
                ),
            }
        });
        let req = Request {
            op,
            offset,
            buf,
            reply,
            done,
        };
        (req, fut)
    }

    /// Reports the outcome: first the completion hook, then the waiting caller (if any).
    ///
    /// Both engines report every IO here, so the failpoint `io::complete` fails IOs of both:
    /// configured `return`, every IO reports EIO; `return(read)` or `return(write)`, only those;
    /// `return(nospace)`, writes report ENOSPC (a full device).
    pub(crate) fn complete(mut self, res: io::Result<()>) {
        #[cfg(feature = "failpoints")]
        let res = match fail::eval("io::complete", |kind| kind) {
            Some(Some(k)) if k == "nospace" => match self.op {
                Op::Write => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
                Op::Read => res,
            },
            Some(kind) if kind.as_deref().is_none_or(|k| k == self.op.name()) => {
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
            _ => res,
        };
        if let Some(d) = self.done.take() {
            d();
        }
        let _ = self.reply.send((res, self.buf));
    }
}

/// Writes held back while another write is in flight, released together once none is, sorted
/// by offset so consecutive ones merge (see [`take_run`]): a device, a virtual one most of all,
/// pays per request, and a burst of small item writes to consecutive blocks becomes one large
/// write. Writes that wait together are independent: a caller that needs one before another
/// awaits the first.
#[derive(Default)]
pub(crate) struct HeldWrites {
    held: Vec<Request>,
    in_flight: usize,
}

impl HeldWrites {
    /// `req` back if it may go now; a write is kept while another write is in flight.
    pub(crate) fn admit(&mut self, req: Request) -> Option<Request> {
        if matches!(req.op, Op::Write) && self.in_flight > 0 {
            self.held.push(req);
            return None;
        }
        Some(req)
    }

    /// A write IO went to the device.
    pub(crate) fn started(&mut self) {
        self.in_flight += 1;
    }

    /// A write IO came back from the device.
    pub(crate) fn finished(&mut self) {
        self.in_flight -= 1;
    }

    /// The held writes, sorted by offset, once no write is in flight (else none).
    pub(crate) fn release(&mut self) -> Vec<Request> {
        if self.in_flight > 0 {
            return Vec::new();
        }
        let mut held = std::mem::take(&mut self.held);
        held.sort_by_key(|r| r.offset);
        held
    }

    /// Every held write, whatever is in flight (the engine is failing).
    pub(crate) fn take_all(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.held)
    }

    /// True when no write is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// At most this many writes, and this many bytes, are merged into one vectored write.
const MERGE_MAX_WRITES: usize = 256;
const MERGE_MAX_BYTES: usize = 4 << 20;

/// The write `first` and the writes at the front of `queue` that continue it, consecutive on
/// the device: the engines send them as one vectored write.
pub(crate) fn take_run(first: Request, queue: &mut VecDeque<Request>) -> Vec<Request> {
    let mut end = first.offset + first.buf.len() as u64;
    let mut bytes = first.buf.len();
    let mut run = vec![first];
    while let Some(next) = queue.front() {
        let fits = run.len() < MERGE_MAX_WRITES && bytes + next.buf.len() <= MERGE_MAX_BYTES;
        if !matches!(next.op, Op::Write) || next.offset != end || !fits {
            break;
        }
        let Some(next) = queue.pop_front() else {
            break;
        };
        end += next.buf.len() as u64;
        bytes += next.buf.len();
        run.push(next);
    }
    run
}

/// Which engine the operator asked for (`cache.disk.io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// io_uring when the kernel allows it, psync otherwise.
    #[default]
    Auto,
    /// io_uring or fail.
    IoUring,
    /// A pread/pwrite thread pool.
    Psync,
}

impl std::str::FromStr for EngineKind {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(EngineKind::Auto),
            "io_uring" => Ok(EngineKind::IoUring),
            "psync" => Ok(EngineKind::Psync),
            other => Err(StorageError::UnknownEngine {
                name: other.to_string(),
            }),
        }
    }
}

/// Engine tuning.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// io_uring queue depth.
    pub queue_depth: u32,
    /// Threads of the psync engine.
    pub psync_threads: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            queue_depth: 64,
            psync_threads: 8,
        }
    }
}

/// Starts the engine `kind` asks for on `file`; `Auto` falls back to psync when io_uring is
/// refused.
pub fn start(kind: EngineKind, file: Arc<File>, opts: EngineOptions) -> Result<Arc<dyn IoEngine>> {
    let unavailable = |engine| move |source| StorageError::EngineUnavailable { engine, source };
    match kind {
        EngineKind::Psync => PsyncEngine::new(file, opts.psync_threads)
            .map(|e| Arc::new(e) as Arc<dyn IoEngine>)
            .map_err(unavailable("psync")),
        EngineKind::IoUring => UringEngine::new(file, opts.queue_depth)
            .map(|e| Arc::new(e) as Arc<dyn IoEngine>)
            .map_err(unavailable("io_uring")),
        EngineKind::Auto => match UringEngine::new(file.clone(), opts.queue_depth) {
            Ok(e) => Ok(Arc::new(e)),
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable; using the psync engine");
                start(EngineKind::Psync, file, opts)
            }
        },
    }
}
