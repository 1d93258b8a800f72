//! Client connections before any request: the caps on how many a client address, and the
//! node, may hold open (`limits.connections_per_client`, `limits.connections`), and the header
//! and idle clocks (`proxy::timeouts`) put on each one.
//!
//! [`Front`] wraps the proxy application. It serves each connection's requests itself, so one
//! guard and one clock live exactly as long as their connection (Pingora has no hook for a
//! connection closing). A connection over a cap is closed at once, before a byte is read, and
//! counted in `strata_refused_connections_total{limit}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;

use crate::metrics::Metrics;
use crate::proxy::timeouts::{ClientTimeouts, Clocked};

/// The connection caps (`None`: no cap).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConnectionCaps {
    /// `limits.connections_per_client`.
    pub(crate) per_client: Option<u32>,
    /// `limits.connections`.
    pub(crate) node: Option<u32>,
}

/// Open connections, counted per client address and in all.
#[derive(Default)]
struct Open {
    total: AtomicUsize,
    by_client: Mutex<HashMap<IpAddr, u32>>,
}

/// A connection counted open until it is dropped.
struct Counted {
    open: Arc<Open>,
    client: Option<IpAddr>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.client {
            let mut m = self
                .open
                .by_client
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

/// Which cap a refused connection was over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cap {
    Node,
    PerClient,
}

impl Cap {
    fn label(self) -> &'static str {
        match self {
            Cap::Node => "node",
            Cap::PerClient => "per_client",
        }
    }
}

impl Open {
    /// Counts a new connection from `client`, or says which cap it is over.
    fn admit(
        self: &Arc<Self>,
        client: Option<IpAddr>,
        caps: ConnectionCaps,
    ) -> Result<Counted, Cap> {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        // Counted first, so every path out (refused or not) gives it back through the drop.
        let mut counted = Counted {
            open: self.clone(),
            client: None,
        };
        if caps.node.is_some_and(|max| total > max as usize) {
            return Err(Cap::Node);
        }
        if let Some(ip) = client {
            let mut m = self.by_client.lock().unwrap_or_else(|p| p.into_inner());
            let n = m.entry(ip).or_insert(0);
            *n += 1;
            counted.client = Some(ip);
            if caps.per_client.is_some_and(|max| *n > max) {
                drop(m);
                return Err(Cap::PerClient);
            }
        }
        Ok(counted)
    }
}

/// The proxy application behind the connection caps and clocks.
pub(crate) struct Front<A> {
    app: Arc<A>,
    timeouts: ClientTimeouts,
    caps: ConnectionCaps,
    open: Arc<Open>,
    metrics: Arc<Metrics>,
}

impl<A> Front<A> {
    /// `app` behind `caps`, its HTTP/1 connections clocked by `timeouts`.
    pub(crate) fn new(
        app: A,
        timeouts: ClientTimeouts,
        caps: ConnectionCaps,
        metrics: Arc<Metrics>,
    ) -> Self {
        Front {
            app: Arc::new(app),
            timeouts,
            caps,
            open: Arc::default(),
            metrics,
        }
    }
}

fn client_ip(stream: &Stream) -> Option<IpAddr> {
    match stream.get_socket_digest()?.peer_addr()? {
        SocketAddr::Inet(a) => Some(a.ip()),
        _ => None,
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Front<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let client = client_ip(&stream);
        let _counted = match self.open.admit(client, self.caps) {
            Ok(c) => c,
            Err(cap) => {
                self.metrics.refused_connection(cap.label());
                tracing::debug!(client = ?client, limit = cap.label(), "connection refused");
                return None;
            }
        };
        let mut next = if stream.selected_alpn_proto() == Some(ALPN::H2) {
            Some(stream)
        } else {
            Some(Box::new(Clocked::new(stream, self.timeouts, self.metrics.clone())) as Stream)
        };
        while let Some(s) = next {
            next = self.app.process_new(s, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.app.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_client_and_in_all_and_give_back_on_close() {
        let open = Arc::new(Open::default());
        let caps = ConnectionCaps {
            per_client: Some(2),
            node: Some(3),
        };
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let a1 = open.admit(Some(a), caps).unwrap();
        let _a2 = open.admit(Some(a), caps).unwrap();
        assert_eq!(open.admit(Some(a), caps).err(), Some(Cap::PerClient));
        let _b1 = open.admit(Some(b), caps).unwrap();
        assert_eq!(open.admit(Some(b), caps).err(), Some(Cap::Node));
        drop(a1);
        // A closed connection (and every refused one) gave its place back.
        assert_eq!(open.total.load(Ordering::Relaxed), 2);
        assert!(open.admit(Some(b), caps).is_ok());
    }
}
