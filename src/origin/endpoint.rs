//! Where an origin is: its base URL, and a host to connect to with its address cached.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pingora::upstreams::peer::HttpPeer;

use crate::config::TimeoutsConfig;

/// How long a resolved origin address is reused before it is looked up again.
const DNS_TTL: Duration = Duration::from_secs(30);

/// How long an address that refused a connection is passed over.
const ADDRESS_DOWN_FOR: Duration = Duration::from_secs(10);

/// Why an origin URL is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UrlError {
    /// Not a URL at all.
    #[error("`{url}` is not a URL: {source}")]
    Syntax {
        /// The text given.
        url: String,
        /// What the parser said.
        source: url::ParseError,
    },
    /// A scheme other than http and https.
    #[error("scheme `{0}` is not supported (use http or https)")]
    Scheme(String),
    /// No host.
    #[error("`{0}` has no host")]
    NoHost(String),
    /// User and password in the URL.
    #[error("`{0}`: credentials in the URL are not supported")]
    Credentials(String),
    /// A query or fragment.
    #[error("`{0}`: an origin may not have a query or fragment")]
    Query(String),
}

/// Why no connection target could be found for an origin.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The name resolved to nothing.
    #[error("{0} has no addresses")]
    NoAddress(String),
}

/// An HTTP(S) origin base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OriginUrl {
    /// `https` when true.
    pub(crate) tls: bool,
    /// Host name or address, without port.
    pub(crate) host: String,
    /// TCP port.
    pub(crate) port: u16,
    /// Path prefix on the origin, always ending with `/`.
    pub(crate) base_path: String,
}

impl OriginUrl {
    /// Parses `http://host[:port][/path]` or `https://…`.
    pub(crate) fn parse(s: &str) -> Result<OriginUrl, UrlError> {
        let u = url::Url::parse(s).map_err(|source| UrlError::Syntax {
            url: s.to_string(),
            source,
        })?;
        let tls = match u.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(UrlError::Scheme(other.to_string())),
        };
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| UrlError::NoHost(s.to_string()))?;
        if !u.username().is_empty() || u.password().is_some() {
            return Err(UrlError::Credentials(s.to_string()));
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err(UrlError::Query(s.to_string()));
        }
        // http and https always have a known default port.
        let port = u
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let mut base_path = u.path().to_string();
        if !base_path.ends_with('/') {
            base_path.push('/');
        }
        Ok(OriginUrl {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            base_path,
        })
    }

    /// The value for the upstream `Host` header.
    pub(crate) fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// `scheme://host[:port]`, the start of this origin's cache keys.
    pub(crate) fn authority_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host_header())
    }
}

/// A host to connect to, with its resolved addresses cached for [`DNS_TTL`].
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Where it is.
    pub(crate) url: OriginUrl,
    /// `routes[].timeouts`.
    pub(crate) timeouts: TimeoutsConfig,
    dns: Mutex<Option<(Instant, Vec<SocketAddr>)>>,
    /// Which resolved address the next peer takes.
    turn: AtomicUsize,
    /// Addresses that refused a connection, passed over until the instant given.
    down: Mutex<Vec<(SocketAddr, Instant)>>,
}

impl Endpoint {
    /// An endpoint for `url`, waited on as `timeouts` say.
    pub(crate) fn new(url: OriginUrl, timeouts: TimeoutsConfig) -> Self {
        Endpoint {
            url,
            timeouts,
            dns: Mutex::new(None),
            turn: AtomicUsize::new(0),
            down: Mutex::new(Vec::new()),
        }
    }

    /// The address of turn `turn` among those not passed over (any, if all are).
    fn pick(&self, addrs: &[SocketAddr], turn: usize) -> SocketAddr {
        let any = addrs[turn % addrs.len()];
        let Ok(down) = self.down.lock() else {
            return any;
        };
        // The common case, no address passed over: nothing to filter, nothing allocated.
        if down.is_empty() {
            return any;
        }
        let now = Instant::now();
        let up: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| !down.iter().any(|(d, until)| d == a && now < *until))
            .collect();
        up.get(turn % up.len().max(1)).copied().unwrap_or(any)
    }

    /// The peer's address refused a connection: it is passed over for a while. Whether
    /// another address of this endpoint is still up (worth a try at once).
    pub(crate) fn address_failed(&self, peer: &HttpPeer) -> bool {
        let pingora::protocols::l4::socket::SocketAddr::Inet(failed) = peer._address else {
            return false;
        };
        let Ok(mut down) = self.down.lock() else {
            return false;
        };
        let now = Instant::now();
        down.retain(|(a, until)| *a != failed && now < *until);
        down.push((failed, now + ADDRESS_DOWN_FOR));
        let addrs = self
            .dns
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|(_, a)| a.clone()))
            .unwrap_or_default();
        addrs
            .iter()
            .any(|a| !down.iter().any(|(d, until)| d == a && now < *until))
    }

    /// A peer for the endpoint, resolving its name at most every [`DNS_TTL`]; successive
    /// peers take the resolved addresses in turn, so every one of them is used.
    pub(crate) async fn peer(&self) -> Result<HttpPeer, ConnectError> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let cached = self.dns.lock().ok().and_then(|g| {
            g.as_ref()
                .filter(|(at, addrs)| at.elapsed() < DNS_TTL && !addrs.is_empty())
                .map(|(_, addrs)| self.pick(addrs, turn))
        });
        let addr = match cached {
            Some(a) => a,
            None => {
                let host = &self.url.host;
                let addrs: Vec<SocketAddr> =
                    tokio::net::lookup_host((host.as_str(), self.url.port))
                        .await
                        .map_err(|source| ConnectError::Resolve {
                            host: host.clone(),
                            source,
                        })?
                        .collect();
                if addrs.is_empty() {
                    return Err(ConnectError::NoAddress(host.clone()));
                }
                let addr = self.pick(&addrs, turn);
                if let Ok(mut g) = self.dns.lock() {
                    *g = Some((Instant::now(), addrs));
                }
                addr
            }
        };
        let mut peer = HttpPeer::new(addr, self.url.tls, self.url.host.clone());
        let (o, t) = (&mut peer.options, &self.timeouts);
        o.connection_timeout = Some(t.connect.0);
        // The TCP connect and the TLS handshake each get the connect timeout.
        o.total_connection_timeout = Some(t.connect.0.saturating_mul(2));
        o.read_timeout = Some(t.read.0);
        o.write_timeout = Some(t.write.0);
        o.idle_timeout = Some(t.idle.0);
        Ok(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_origins() {
        let o = OriginUrl::parse("https://example.org").unwrap();
        assert_eq!((o.tls, o.port, o.base_path.as_str()), (true, 443, "/"));
        assert_eq!(o.host_header(), "example.org");
        let o = OriginUrl::parse("http://[::1]:8081/x").unwrap();
        assert_eq!(o.host, "::1");
        assert_eq!(o.host_header(), "[::1]:8081");
        assert_eq!(o.authority_url(), "http://[::1]:8081");
        assert!(matches!(
            OriginUrl::parse("ftp://x/"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            OriginUrl::parse("http://u:p@x/"),
            Err(UrlError::Credentials(_))
        ));
        assert!(matches!(
            OriginUrl::parse("not a url"),
            Err(UrlError::Syntax { .. })
        ));
    }

    #[test]
    fn every_address_is_used_and_a_refusing_one_passed_over() {
        let e = Endpoint::new(
            OriginUrl::parse("http://origin.test:8080/").unwrap(),
            TimeoutsConfig::default(),
        );
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.2:8080".parse().unwrap(),
        );
        *e.dns.lock().unwrap() = Some((Instant::now(), vec![a, b]));
        let picks: Vec<_> = (0..4).map(|t| e.pick(&[a, b], t)).collect();
        assert_eq!(picks, [a, b, a, b]);
        let peer = HttpPeer::new(a, false, "origin.test".into());
        assert!(e.address_failed(&peer), "the other address is up");
        assert!((0..4).all(|t| e.pick(&[a, b], t) == b));
        let peer = HttpPeer::new(b, false, "origin.test".into());
        assert!(!e.address_failed(&peer), "no address left up");
        // All down: any is tried rather than none.
        assert!([a, b].contains(&e.pick(&[a, b], 0)));
    }
}
