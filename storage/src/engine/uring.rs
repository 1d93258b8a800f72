//! An io_uring engine: one ring owned by a dedicated thread, requests from any task.
//!
//! Callers queue a request (with its owned buffer) on a channel and wake the ring thread through
//! an eventfd; the thread keeps a read armed on that eventfd, so it only ever blocks inside
//! `submit_and_wait`, never in a busy loop. Completions go back on oneshot channels, so no tokio
//! worker thread blocks on IO. The ring holds each buffer until the kernel is done with it,
//! which keeps a cancelled caller memory-safe.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};

use super::{Done, IoEngine, IoFuture, Op, Queue, Request};
use crate::aligned::AlignedBuf;
use io_uring::{opcode, squeue, types, IoUring};

/// user_data of the eventfd read that wakes the ring thread.
const WAKE: u64 = u64::MAX;

/// An IO in flight: the request plus how much of it is done (short transfers are resumed).
struct InFlight {
    req: Request,
    transferred: usize,
}

/// Positional IO through io_uring.
pub struct UringEngine {
    queue: Queue,
    wake: Arc<OwnedFd>,
    /// Set while the ring thread will look at the queue anyway (it is awake, or a wake-up is
    /// pending): submitters then skip the eventfd write (a syscall and a wake-up).
    woken: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UringEngine {
    /// Starts a ring of `depth` entries on `file`; fails if the kernel refuses io_uring.
    pub fn new(file: Arc<File>, depth: u32) -> io::Result<Self> {
        let depth = depth.clamp(2, 4096);
        // SAFETY: eventfd returns a new descriptor (or -1), which we own from here on.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: efd is a fresh, valid descriptor not owned elsewhere.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(efd) });
        let (tx, rx) = mpsc::channel();
        let thread_wake = wake.clone();
        let woken = Arc::new(AtomicBool::new(false));
        let thread_woken = woken.clone();
        // The ring is created on its own thread: with SINGLE_ISSUER only its creator may submit.
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("strata-uring".into())
            .spawn(move || {
                let ring = match new_ring(depth + 1) {
                    Ok(r) => {
                        let _ = ready_tx.send(Ok(()));
                        r
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut slots: Vec<Option<InFlight>> = (0..depth as usize).map(|_| None).collect();
                let r = ring_loop(ring, &file, &thread_wake, &thread_woken, &rx, &mut slots);
                if let Err(e) = r {
                    tracing::error!(error = %e, "io_uring thread failed; the disk tier stops");
                    abandon_in_flight(slots);
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("io_uring thread exited at start"))??;
        Ok(UringEngine {
            queue: Queue::new(tx),
            wake,
            woken,
            thread: Some(thread),
        })
    }

    fn submit(&self, op: Op, offset: u64, buf: AlignedBuf, done: Option<Done>) -> IoFuture {
        self.queue.submit(op, offset, buf, done, || {
            if !self.woken.swap(true, Ordering::AcqRel) {
                notify(self.wake.as_raw_fd());
            }
        })
    }
}

/// A ring tuned for one submitting thread; falls back to defaults on older kernels.
fn new_ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_defer_taskrun()
        .build(entries)
        .or_else(|_| IoUring::new(entries))
}

fn notify(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own; failure only means the
    // counter is saturated, in which case the ring thread is awake anyway.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        self.queue.close();
        notify(self.wake.as_raw_fd());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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
}

fn sqe_for(fd: RawFd, f: &mut InFlight, slot: usize) -> squeue::Entry {
    let len = f.req.buf.len() - f.transferred;
    let offset = f.req.offset + f.transferred as u64;
    // SAFETY: the pointer stays valid until the completion: the buffer lives in `slots` and is
    // neither moved out nor dropped while its IO is in flight.
    let ptr = unsafe { f.req.buf.as_mut_ptr().add(f.transferred) };
    let entry = match f.req.op {
        Op::Read => opcode::Read::new(types::Fd(fd), ptr, len as u32)
            .offset(offset)
            .build(),
        Op::Write => opcode::Write::new(types::Fd(fd), ptr, len as u32)
            .offset(offset)
            .build(),
    };
    entry.user_data(slot as u64)
}

/// After a fatal ring error: the kernel may still write into buffers of IOs in flight, so they
/// are leaked rather than freed; their callers get an error (and a fresh buffer).
fn abandon_in_flight(slots: Vec<Option<InFlight>>) {
    for f in slots.into_iter().flatten() {
        let Request {
            buf, reply, done, ..
        } = f.req;
        std::mem::forget(buf);
        if let Some(d) = done {
            d();
        }
        let _ = reply.send((
            Err(io::Error::other("io_uring failed")),
            AlignedBuf::zeroed(1, 1),
        ));
    }
}

/// Moves queued requests into the ring while slots are free.
fn take_requests(
    ring: &mut IoUring,
    fd: RawFd,
    slots: &mut [Option<InFlight>],
    free: &mut Vec<usize>,
    rx: &mpsc::Receiver<Request>,
    closed: &mut bool,
) -> io::Result<()> {
    while let Some(&slot) = free.last() {
        match rx.try_recv() {
            Ok(req) => {
                free.pop();
                let mut f = InFlight {
                    req,
                    transferred: 0,
                };
                let sqe = sqe_for(fd, &mut f, slot);
                slots[slot] = Some(f);
                // SAFETY: see sqe_for; the ring has depth + 1 entries, one per slot plus wake.
                unsafe { ring.submission().push(&sqe) }
                    .map_err(|_| io::Error::other("submission queue full"))?;
            }
            Err(mpsc::TryRecvError::Empty) => break,
            Err(mpsc::TryRecvError::Disconnected) => {
                *closed = true;
                break;
            }
        }
    }
    Ok(())
}

fn ring_loop(
    mut ring: IoUring,
    file: &File,
    wake: &OwnedFd,
    woken: &AtomicBool,
    rx: &mpsc::Receiver<Request>,
    slots: &mut [Option<InFlight>],
) -> io::Result<()> {
    let depth = slots.len();
    let fd = file.as_raw_fd();
    let efd = wake.as_raw_fd();
    // Leaked on purpose (8 bytes per engine): the armed eventfd read may still be pending in
    // the kernel when this thread returns, so its target must never be freed.
    let wake_buf: &'static mut [u8; 8] = Box::leak(Box::new([0u8; 8]));
    let arm_wake = |ring: &mut IoUring, buf: &mut [u8; 8]| -> io::Result<()> {
        let e = opcode::Read::new(types::Fd(efd), buf.as_mut_ptr(), 8)
            .build()
            .user_data(WAKE);
        // SAFETY: wake_buf is 'static, so the kernel's write target stays valid.
        unsafe { ring.submission().push(&e) }.map_err(|_| io::Error::other("ring full"))
    };
    arm_wake(&mut ring, wake_buf)?;
    let mut free: Vec<usize> = (0..depth).rev().collect();
    let mut closed = false;
    let mut completions = Vec::with_capacity(depth + 1);
    loop {
        take_requests(&mut ring, fd, slots, &mut free, rx, &mut closed)?;
        // This thread is about to sleep until a completion or the eventfd. Submitters skip the
        // eventfd write while the flag is set (this thread looks at the queue anyway), so it is
        // cleared before every sleep, and a request that slipped in before the clear is taken
        // now. Waiting for the next completion instead would hold a new request back for a
        // whole interrupt-coalescing interval, which halves the device's effective depth.
        woken.store(false, Ordering::Release);
        take_requests(&mut ring, fd, slots, &mut free, rx, &mut closed)?;
        if closed && free.len() == depth {
            return Ok(());
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            // Transient resource shortage: reap what completed and try again shortly.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOMEM)) => {
                thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
        // Awake: requests queued from here on are taken at the top of the loop.
        woken.store(true, Ordering::Release);
        completions.clear();
        completions.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &completions {
            if ud == WAKE {
                if !closed {
                    arm_wake(&mut ring, wake_buf)?;
                }
                continue;
            }
            let slot = ud as usize;
            let Some(mut f) = slots[slot].take() else {
                continue;
            };
            let outcome = if res < 0 {
                Some(Err(io::Error::from_raw_os_error(-res)))
            } else if res == 0 {
                Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "io_uring transferred 0 bytes",
                )))
            } else {
                f.transferred += res as usize;
                (f.transferred >= f.req.buf.len()).then_some(Ok(()))
            };
            match outcome {
                Some(r) => {
                    f.req.complete(r);
                    free.push(slot);
                }
                None => {
                    // A short transfer: resume where it stopped.
                    let sqe = sqe_for(fd, &mut f, slot);
                    slots[slot] = Some(f);
                    // SAFETY: as above.
                    unsafe { ring.submission().push(&sqe) }
                        .map_err(|_| io::Error::other("submission queue full"))?;
                }
            }
        }
    }
}
