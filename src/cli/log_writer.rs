//! The log writer: each line, formatted where it is logged, is appended to one shared buffer,
//! and a thread of its own writes the buffer out, every few milliseconds or as soon as it
//! holds a batch worth a write.
//!
//! A request's access line must cost the request neither a system call nor a wake-up of
//! another thread: handing each line over a channel woke the writer thread for most lines,
//! and on a node with one core that hand-off cost a fifth of the hit rate. Appending to a
//! buffer costs a lock and a copy. No line is dropped: a thread logging into a full buffer
//! waits for the writer.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
const INTERVAL: Duration = Duration::from_millis(20);
/// A buffer this full is written at once.
const BATCH: usize = 64 << 10;
/// A buffer this full makes the threads logging into it wait for the writer.
const LIMIT: usize = 8 << 20;

/// The buffer shared by the logging threads and the writer thread.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a batch is ready or the writer should end.
    ready: Condvar,
    /// Signalled when the writer has taken the buffer.
    drained: Condvar,
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread that panicked while appending left whole lines or a partial one: either way
        // the buffer is still bytes to write.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Makes the writers the log layer formats lines into.
#[derive(Clone)]
pub(crate) struct BatchedWriter {
    shared: Arc<Shared>,
}

/// Keeps the writer thread running; dropping it writes out what is buffered and ends it.
pub(crate) struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer over `out` and its guard. The thread is named `strata-log`.
pub(crate) fn batched(
    out: impl Write + Send + 'static,
) -> io::Result<(BatchedWriter, WriterGuard)> {
    let shared = Arc::new(Shared::default());
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("strata-log".into())
        .spawn(move || write_out(&for_thread, out))?;
    Ok((
        BatchedWriter {
            shared: shared.clone(),
        },
        WriterGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

/// The writer thread: takes the buffer whenever it holds a batch, or every [`INTERVAL`], and
/// writes it out outside the lock.
fn write_out(shared: &Shared, mut out: impl Write) {
    let mut spare = Vec::with_capacity(BATCH);
    loop {
        let mut state = shared.lock();
        if state.buf.len() < BATCH && !state.closed {
            state = shared
                .ready
                .wait_timeout(state, INTERVAL)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let closed = state.closed;
        std::mem::swap(&mut state.buf, &mut spare);
        drop(state);
        shared.drained.notify_all();
        if !spare.is_empty() {
            // Nowhere to report a failing log stream but the stream itself: carry on.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
        }
        if closed && shared.lock().buf.is_empty() {
            return;
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One line's writer: appends to the shared buffer.
pub(crate) struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut state = self.shared.lock();
        while state.buf.len() >= LIMIT && !state.closed {
            state = self
                .shared
                .drained
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        let before = state.buf.len();
        state.buf.extend_from_slice(bytes);
        // Once per batch: a writer busy writing takes a full buffer without being woken.
        if before < BATCH && state.buf.len() >= BATCH {
            self.shared.ready.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` that hands what it gets to the test.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Every line written by many threads comes out whole, once, and in each thread's order;
    /// dropping the guard writes out the rest.
    #[test]
    fn every_line_comes_out_whole_and_in_order() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let line = format!("thread {t} line {i} {}\n", "x".repeat(i % 300));
                        w.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in out.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let (t, i): (usize, usize) = (f[1].parse().unwrap(), f[3].parse().unwrap());
            assert_eq!(i, next[t], "thread {t} out of order or lost a line");
            assert_eq!(f[4].len(), i % 300, "line cut: {line}");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
    }
}
