//! Several origin servers behind one route (`routes[].origins`): a weighted choice among the
//! healthy ones, a server that cannot be reached skipped at once (passive marking), and active
//! health checks (`routes[].health_check`) that take a server out after `fall` failed probes
//! in a row and back after `rise` good ones.
//!
//! Without health checks a server marked down by a failed connection is tried again after
//! [`DOWN_FOR`]. When every server is down, one is tried anyway: the route's answer is then the
//! origin's failure (stale-if-error content where the rules allow, else 502), and a server
//! that came back is found without waiting for a probe.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::Method;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::config::HealthCheckConfig;
use crate::http::date::unix_now;
use crate::origin::endpoint::Endpoint;

/// How long a server that refused a connection is passed over, without health checks.
pub(crate) const DOWN_FOR: Duration = Duration::from_secs(10);

/// One origin server of a route.
#[derive(Debug)]
pub(crate) struct Server {
    /// Where it is.
    pub(crate) endpoint: Endpoint,
    /// `routes[].origins[].weight`.
    weight: u32,
    /// Marked down by the health checks.
    unhealthy: AtomicBool,
    /// Passed over until this many seconds after the epoch (a failed connection).
    down_until: AtomicU64,
    /// Probes in a row that failed (or succeeded, while unhealthy).
    streak: AtomicU32,
}

impl Server {
    /// Whether requests may go to it now.
    pub(crate) fn is_up(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
            && self.down_until.load(Ordering::Relaxed) <= unix_now()
    }
}

/// The servers of a route.
#[derive(Debug)]
pub(crate) struct Servers {
    /// In the configured order; the first names the route's keys and its default `Host`.
    pub(crate) list: Vec<Server>,
    /// `routes[].health_check`.
    health: Option<HealthCheckConfig>,
    /// `routes[].retries`: more servers tried when one cannot be reached.
    pub(crate) retries: usize,
    /// Turns of the weighted choice.
    turn: AtomicUsize,
}

impl Servers {
    /// The servers of a route, with their weights.
    pub(crate) fn new(
        list: Vec<(Endpoint, u32)>,
        health: Option<HealthCheckConfig>,
        retries: usize,
    ) -> Self {
        Servers {
            list: list
                .into_iter()
                .map(|(endpoint, weight)| Server {
                    endpoint,
                    weight: weight.max(1),
                    unhealthy: AtomicBool::new(false),
                    down_until: AtomicU64::new(0),
                    streak: AtomicU32::new(0),
                })
                .collect(),
            health,
            retries,
            turn: AtomicUsize::new(0),
        }
    }

    /// The first server, whose URL names the route.
    pub(crate) fn primary(&self) -> &Endpoint {
        &self.list[0].endpoint
    }

    /// The next server to try, in weighted turns among those up and not `tried`; when none is
    /// up, the first not tried.
    pub(crate) fn choose(&self, tried: &[usize]) -> Option<usize> {
        let open = |i: &usize| !tried.contains(i);
        let up: Vec<usize> = (0..self.list.len())
            .filter(open)
            .filter(|&i| self.list[i].is_up())
            .collect();
        if up.is_empty() {
            return (0..self.list.len()).find(open);
        }
        let total: u64 = up.iter().map(|&i| self.list[i].weight as u64).sum();
        let mut at = self.turn.fetch_add(1, Ordering::Relaxed) as u64 % total.max(1);
        for &i in &up {
            let w = self.list[i].weight as u64;
            if at < w {
                return Some(i);
            }
            at -= w;
        }
        up.first().copied()
    }

    /// A connection to server `i` failed: it is passed over for a while.
    pub(crate) fn unreachable(&self, i: usize) {
        if let Some(s) = self.list.get(i) {
            s.down_until
                .store(unix_now() + DOWN_FOR.as_secs(), Ordering::Relaxed);
            tracing::warn!(origin = %s.endpoint.url.authority_url(), "origin server unreachable; passed over");
        }
    }

    /// Server `i` answered: whatever a failed connection said, it is reachable.
    pub(crate) fn reached(&self, i: usize) {
        if let Some(s) = self.list.get(i) {
            if s.down_until.load(Ordering::Relaxed) != 0 {
                s.down_until.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Starts the health checks of these servers, if configured, on a thread of their own
    /// that ends when the servers are dropped (the route replaced by a reload).
    pub(crate) fn start_health_checks(self: &Arc<Self>, ca_file: Option<std::path::PathBuf>) {
        let Some(h) = self.health.clone() else {
            return;
        };
        let servers = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("strata-health".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "health checks not started");
                        return;
                    }
                };
                rt.block_on(check_forever(servers, h, ca_file));
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "health checks not started");
        }
    }
}

/// Probes every server each interval until the servers are gone.
async fn check_forever(
    servers: Weak<Servers>,
    h: HealthCheckConfig,
    ca_file: Option<std::path::PathBuf>,
) {
    // A connector of this thread's own: connections belong to the runtime that made them.
    let mut opts = pingora::connectors::ConnectorOptions::new(0);
    opts.ca_file = ca_file.map(|p| p.to_string_lossy().into_owned());
    let connector = Connector::new(Some(opts));
    loop {
        tokio::time::sleep(h.interval.0).await;
        let Some(servers) = servers.upgrade() else {
            return;
        };
        for s in &servers.list {
            let ok = probe(&connector, &s.endpoint, &h).await;
            judge(s, ok, &h);
        }
    }
}

/// Applies one probe's outcome to a server's streak and state.
fn judge(s: &Server, ok: bool, h: &HealthCheckConfig) {
    let unhealthy = s.unhealthy.load(Ordering::Relaxed);
    // The streak counts what would change the state: failures while healthy, successes
    // while not.
    if ok == unhealthy {
        let n = s.streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if unhealthy { h.rise } else { h.fall };
        if n >= needed {
            s.unhealthy.store(!unhealthy, Ordering::Relaxed);
            s.streak.store(0, Ordering::Relaxed);
            if ok {
                s.down_until.store(0, Ordering::Relaxed);
            }
            let origin = s.endpoint.url.authority_url();
            if ok {
                tracing::warn!(%origin, probes = n, "origin server healthy again");
            } else {
                tracing::error!(%origin, probes = n, "origin server unhealthy; taken out");
            }
        }
    } else {
        s.streak.store(0, Ordering::Relaxed);
    }
}

/// One `GET` of the health path: healthy when the answer comes within the timeout and is
/// not a server error.
async fn probe(connector: &Connector, e: &Endpoint, h: &HealthCheckConfig) -> bool {
    let attempt = async {
        let peer: HttpPeer = e.peer().await.ok()?;
        let mut req = RequestHeader::build(Method::GET, h.path.as_bytes(), None).ok()?;
        req.insert_header(http::header::HOST, e.url.host_header())
            .ok()?;
        req.insert_header(http::header::CONNECTION, "close").ok()?;
        let (mut session, _) = connector.get_http_session(&peer).await.ok()?;
        // Not client.rs's `exchange`: that room uses this one to choose servers (no cycle).
        session.write_request_header(Box::new(req)).await.ok()?;
        session.finish_request_body().await.ok()?;
        session.read_response_header().await.ok()?;
        let status = session.response_header()?.status;
        session.shutdown().await;
        Some(!status.is_server_error())
    };
    matches!(
        tokio::time::timeout(h.timeout.0, attempt).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dur, TimeoutsConfig};
    use crate::origin::endpoint::OriginUrl;

    fn servers(weights: &[u32]) -> Servers {
        let list = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let url = OriginUrl::parse(&format!("http://127.0.0.1:{}/", 9000 + i)).unwrap();
                (Endpoint::new(url, TimeoutsConfig::default()), w)
            })
            .collect();
        Servers::new(list, None, 1)
    }

    #[test]
    fn turns_follow_the_weights_and_skip_servers_down() {
        let s = servers(&[3, 1]);
        let mut n = [0; 2];
        for _ in 0..400 {
            n[s.choose(&[]).unwrap()] += 1;
        }
        assert_eq!(n, [300, 100]);
        s.unreachable(0);
        assert!((0..20).all(|_| s.choose(&[]) == Some(1)));
        // Tried already: the other one, even if down; none left: nothing.
        assert_eq!(s.choose(&[1]), Some(0));
        assert_eq!(s.choose(&[0, 1]), None);
        s.reached(0);
        assert!((0..8).any(|_| s.choose(&[]) == Some(0)));
    }

    #[test]
    fn health_needs_fall_failures_to_take_out_and_rise_successes_to_bring_back() {
        let s = servers(&[1]);
        let h = HealthCheckConfig {
            path: "/".into(),
            interval: Dur(Duration::from_secs(1)),
            timeout: Dur(Duration::from_secs(1)),
            fall: 2,
            rise: 3,
        };
        let server = &s.list[0];
        judge(server, false, &h);
        judge(server, true, &h);
        judge(server, false, &h);
        assert!(server.is_up(), "failures not in a row took it out");
        judge(server, false, &h);
        assert!(!server.is_up());
        judge(server, true, &h);
        judge(server, true, &h);
        assert!(!server.is_up());
        judge(server, true, &h);
        assert!(server.is_up());
    }
}
