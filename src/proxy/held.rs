//! Small writes held back to go out with the next one: a response header written alone is
//! kept until its body's first bytes, then both leave in one vectored write.
//!
//! Plain client connections have no write buffer under this (see `node`): a hit's body goes
//! from the cache to the socket as it is, not copied into a buffer first. Without holding,
//! though, its header would go out in a send of its own: two sends per response, and twice
//! the loopback's per-segment cost. Holding the header here lets the body take it along in
//! one `writev`; small writes together (a header and a small body, chunk framing) stay held
//! up to [`HOLD`] bytes. Held bytes are written out by the next flush or shutdown, as
//! buffered ones would be.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;

/// Writes of at most this many bytes (together) are held: a response header's size.
const HOLD: usize = 8 << 10;

/// The bytes held back from the stream, in order.
#[derive(Debug, Default)]
pub(crate) struct Held {
    bytes: Vec<u8>,
}

impl Held {
    /// Writes `buf` to `inner`, or holds it when it is small and may wait (`hold`): returns the
    /// bytes of `buf` taken, as `poll_write` does.
    pub(crate) fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
        buf: &[u8],
        hold: bool,
    ) -> Poll<io::Result<usize>> {
        if hold && self.bytes.len() + buf.len() <= HOLD {
            self.bytes.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        while !self.bytes.is_empty() {
            let slices = [IoSlice::new(&self.bytes), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut *inner).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let held = self.bytes.len();
            if n < held {
                // Part of what was held went: the rest goes first, on the next try.
                self.bytes.drain(..n);
                continue;
            }
            // Freed, not kept: an idle keep-alive connection holds no buffer.
            self.bytes = Vec::new();
            if n > held {
                return Poll::Ready(Ok(n - held));
            }
        }
        Pin::new(inner).poll_write(cx, buf)
    }

    /// Writes out what is held (before a flush or a shutdown).
    pub(crate) fn poll_drain<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.bytes.is_empty() {
            let n = ready!(Pin::new(&mut *inner).poll_write(cx, &self.bytes))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.bytes.drain(..n);
        }
        self.bytes = Vec::new();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that records each call's bytes and takes at most `limit` per call.
    struct Calls {
        calls: Vec<Vec<u8>>,
        limit: usize,
    }

    impl Calls {
        fn taking(limit: usize) -> Self {
            Calls {
                calls: vec![],
                limit,
            }
        }
    }

    impl AsyncWrite for Calls {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.limit);
            self.calls.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len().min(self.limit);
            self.calls.push(all[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn write(held: &mut Held, w: &mut Calls, buf: &[u8], hold: bool) -> usize {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match held.poll_write(w, &mut cx, buf, hold) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("{other:?}"),
        }
    }

    fn drain(held: &mut Held, w: &mut Calls) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(held.poll_drain(w, &mut cx), Poll::Ready(Ok(()))));
    }

    #[test]
    fn a_header_leaves_with_a_large_body_in_one_write() {
        let (header, body) = (vec![b'h'; 300], vec![b'b'; 64 << 10]);
        let mut w = Calls::taking(usize::MAX);
        let mut held = Held::default();
        assert_eq!(write(&mut held, &mut w, &header, true), 300);
        assert!(w.calls.is_empty(), "held");
        assert_eq!(write(&mut held, &mut w, &body, true), body.len());
        assert_eq!(w.calls, vec![[header, body].concat()]);
    }

    #[test]
    fn what_is_held_is_written_by_a_drain_and_nothing_is_held_when_pushed() {
        let mut w = Calls::taking(usize::MAX);
        let mut held = Held::default();
        write(&mut held, &mut w, b"head", true);
        drain(&mut held, &mut w);
        assert_eq!(w.calls, vec![b"head".to_vec()]);
        write(&mut held, &mut w, b"pushed", false);
        assert_eq!(w.calls.len(), 2, "a pushed write goes at once");
        drain(&mut held, &mut w);
        assert_eq!(w.calls.len(), 2, "nothing was held");
    }

    #[test]
    fn short_writes_keep_every_byte_in_order() {
        let (header, body) = (vec![b'h'; 5000], vec![b'b'; 20_000]);
        let mut w = Calls::taking(3000);
        let mut held = Held::default();
        write(&mut held, &mut w, &header, true);
        let mut sent = 0;
        while sent < body.len() {
            sent += write(&mut held, &mut w, &body[sent..], true);
        }
        drain(&mut held, &mut w);
        assert_eq!(w.calls.concat(), [header, body].concat());
        assert!(w.calls.iter().all(|c| !c.is_empty() && c.len() <= 3000));
    }

    #[test]
    fn writes_over_the_hold_are_not_held() {
        let mut w = Calls::taking(usize::MAX);
        let mut held = Held::default();
        let big = vec![b'x'; HOLD + 1];
        assert_eq!(write(&mut held, &mut w, &big, true), HOLD + 1);
        assert_eq!(w.calls, vec![big]);
    }
}
