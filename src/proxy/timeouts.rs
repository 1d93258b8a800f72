//! Client connection timeouts (`limits.header_timeout`, `limits.idle_timeout`), which Pingora
//! does not give: its read timeout restarts with every byte, so a client that trickles a
//! header a byte at a time (slowloris) holds its connection for ever, and an idle keep-alive
//! connection has no limit at all.
//!
//! The proxy application gets each HTTP/1 connection wrapped in a [`Clocked`] stream (see
//! `proxy::connections`), which watches the bytes going by:
//! - a request header must be complete (its blank line seen) within the header timeout, from
//!   the connection's start for the first request and from its first byte for later ones: a
//!   read past that fails with `TimedOut`;
//! - a connection that passes no bytes either way for the idle timeout is closed (a read
//!   between requests sees the end of the stream, a read within one fails).
//!
//! HTTP/2 connections (ALPN `h2`, or the h2c preface first) are not clocked: their frames
//! have no header lines, and HTTP/2 keeps its own streams.
//!
//! The same wrapper pushes the writes of a response fed by an origin (see [`push_writes`]).
//! Pingora keeps a body of known length in the connection's write buffer until the buffer
//! overflows or the body ends; a slow origin's bytes would then reach the client in bursts
//! of the buffer's size, and the response header would wait for the first burst. A pushed
//! response is flushed after every write instead. Answers from the cache are not pushed:
//! their header and body leave in one send.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::proxy::Session;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::held::Held;
use crate::metrics::Metrics;

/// The two limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientTimeouts {
    /// `limits.header_timeout`.
    pub(crate) header: Duration,
    /// `limits.idle_timeout`.
    pub(crate) idle: Duration,
}

/// What the clock is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The rest of a request header, due by the instant given. `newlines` tracks the bytes
    /// after the last line feed seen: 1 after `\n`, 2 after `\n\r` (a second `\n` then ends
    /// the header).
    Header { due: Instant, newlines: u8 },
    /// A request body, or a response being written.
    Exchange,
    /// The next request, after a response was written.
    Between,
    /// An HTTP/2 connection (the h2c preface came first): not clocked.
    Off,
}

/// How an h2c connection starts (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// A client stream with the header and idle clocks on its reads.
pub(crate) struct Clocked {
    inner: Stream,
    limits: ClientTimeouts,
    phase: Phase,
    /// The last read or write that moved bytes.
    active: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether any byte was read yet.
    began: bool,
    /// Where a connection cut by its clock is counted.
    metrics: Arc<Metrics>,
    /// Whether this response's writes are pushed (flushed as they are made); set through a
    /// shared reference to the session ([`push_writes`]), cleared when the next request
    /// begins.
    push: AtomicBool,
    /// A pushed write whose flush the socket could not take at once: completed before the
    /// next write (or flush) goes ahead.
    owed: bool,
    /// A small write (a response header) held to go out with the next one.
    held: Held,
}

impl std::fmt::Debug for Clocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clocked")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl Clocked {
    /// Clocks `inner`, its first request header due within the header timeout.
    pub(crate) fn new(inner: Stream, limits: ClientTimeouts, metrics: Arc<Metrics>) -> Self {
        let now = Instant::now();
        Clocked {
            inner,
            metrics,
            limits,
            phase: Phase::Header {
                due: now + limits.header,
                newlines: 0,
            },
            active: now,
            timer: None,
            began: false,
            push: AtomicBool::new(false),
            owed: false,
            held: Held::default(),
        }
    }

    /// Follows the phase through bytes just read.
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.phase == Phase::Off {
            return;
        }
        if !self.began {
            self.began = true;
            if bytes.starts_with(H2_PREFACE) {
                self.phase = Phase::Off;
                return;
            }
        }
        if self.phase == Phase::Between {
            self.push.store(false, Ordering::Relaxed);
            self.phase = Phase::Header {
                due: self.active + self.limits.header,
                newlines: 0,
            };
        }
        let Phase::Header { newlines, .. } = &mut self.phase else {
            return;
        };
        for &b in bytes {
            *newlines = match (*newlines, b) {
                (1 | 2, b'\n') => {
                    self.phase = Phase::Exchange;
                    return;
                }
                (1, b'\r') => 2,
                (_, b'\n') => 1,
                _ => 0,
            };
        }
    }

    /// When the read now pending times out, and whether that ends a request header.
    fn deadline(&self) -> (Instant, bool) {
        let idle = self.active + self.limits.idle;
        match self.phase {
            Phase::Header { due, .. } => (due.min(idle), due <= idle),
            Phase::Exchange | Phase::Between | Phase::Off => (idle, false),
        }
    }
}

impl AsyncRead for Clocked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.phase == Phase::Off {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if let Phase::Header { due, .. } = this.phase {
            if Instant::now() >= due {
                this.metrics.client_timeout("header");
                return Poll::Ready(Err(timed_out("request header")));
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(res) => {
                if res.is_ok() && buf.filled().len() > before {
                    this.active = Instant::now();
                    this.saw(&buf.filled()[before..]);
                }
                return Poll::Ready(res);
            }
            Poll::Pending => {}
        }
        loop {
            let (at, header) = this.deadline();
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
            ready!(timer.as_mut().poll(cx));
            // Fired; a write may have moved the deadline since it was set.
            if this.deadline().0 > Instant::now() {
                continue;
            }
            this.metrics
                .client_timeout(if header { "header" } else { "idle" });
            return Poll::Ready(match (header, this.phase) {
                (true, _) => Err(timed_out("request header")),
                // Between requests: a quiet close, as if the client had left.
                (false, Phase::Between) => Ok(()),
                (false, _) => Err(timed_out("idle connection")),
            });
        }
    }
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// Makes the rest of the response on `session` reach the client as it is written, each write
/// flushed, rather than held in the write buffer until it fills: for answers fed by an origin.
/// A no-op on HTTP/2 sessions, which send their frames as they come.
pub(crate) fn push_writes(session: &Session) {
    let clocked = session
        .as_downstream()
        .stream()
        .and_then(|s| s.as_any().downcast_ref::<Clocked>());
    if let Some(c) = clocked {
        c.push.store(true, Ordering::Relaxed);
    }
}

impl AsyncWrite for Clocked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_owed(cx))?;
        // A pushed response's bytes are not held: they go as they come.
        let hold = !this.push.load(Ordering::Relaxed);
        let res = ready!(this.held.poll_write(&mut this.inner, cx, buf, hold));
        if matches!(res, Ok(n) if n > 0) {
            this.wrote(cx);
        }
        Poll::Ready(res)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_owed(cx))?;
        ready!(this.held.poll_drain(&mut this.inner, cx))?;
        let res = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs));
        if matches!(res, Ok(n) if n > 0) {
            this.wrote(cx);
        }
        Poll::Ready(res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.held.poll_drain(&mut this.inner, cx))?;
        let res = ready!(Pin::new(&mut this.inner).poll_flush(cx));
        this.owed = false;
        Poll::Ready(res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.held.poll_drain(&mut this.inner, cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl Clocked {
    /// A response is going out: the request before it is answered, the next one not begun.
    /// A pushed response's bytes are flushed at once; if the socket cannot take them all now,
    /// the flush is owed and completed before the next write.
    fn wrote(&mut self, cx: &mut Context<'_>) {
        self.active = Instant::now();
        if self.phase == Phase::Exchange {
            self.phase = Phase::Between;
        }
        if self.push.load(Ordering::Relaxed) {
            // An error is the next write's (or flush's) to report: this write's bytes were
            // taken.
            self.owed = !matches!(
                Pin::new(&mut self.inner).poll_flush(cx),
                Poll::Ready(Ok(()))
            );
        }
    }

    /// Completes a flush a pushed write left owed.
    fn poll_owed(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.owed {
            ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            self.owed = false;
        }
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Shutdown for Clocked {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Clocked {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Clocked {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Clocked {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Clocked {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Clocked {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Clocked {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
