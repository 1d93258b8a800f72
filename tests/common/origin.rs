//! An in-process HTTP origin with controllable objects, counting what it serves.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const CHUNK: usize = 64 * 1024;

/// Where an object's bytes come from.
#[derive(Clone)]
pub(crate) enum Body {
    /// Held in memory.
    Static(Bytes),
    /// Computed from a seed at any offset (large objects without the memory).
    Generated { len: u64, seed: u64 },
}

impl Body {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Body::Static(b) => b.len() as u64,
            Body::Generated { len, .. } => *len,
        }
    }

    /// Bytes `[start, end)`.
    pub(crate) fn range(&self, start: u64, end: u64) -> Bytes {
        match self {
            Body::Static(b) => b.slice(start as usize..end as usize),
            Body::Generated { seed, .. } => generated(*seed, start, end),
        }
    }
}

/// Bytes `[start, end)` of the generated object `seed`: word i is splitmix64(seed, i).
pub(crate) fn generated(seed: u64, start: u64, end: u64) -> Bytes {
    let mut out = Vec::with_capacity((end - start) as usize + 16);
    let first_word = start / 8;
    let last_word = end.div_ceil(8);
    for w in first_word..last_word {
        let mut z = seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(w.wrapping_mul(0xBF58_476D_1CE4_E5B9));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    let skip = (start - first_word * 8) as usize;
    Bytes::from(out).slice(skip..skip + (end - start) as usize)
}

/// One object the origin serves.
#[derive(Clone)]
pub(crate) struct Object {
    pub(crate) body: Body,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) status: u16,
    /// Pause before the body starts.
    pub(crate) delay: Duration,
    /// Pause between body chunks (a slow origin).
    pub(crate) chunk_delay: Duration,
    /// Send only this many body bytes, then drop the connection.
    pub(crate) truncate_at: Option<usize>,
    /// Omit Content-Length (chunked encoding).
    pub(crate) chunked: bool,
    /// Answer 200 with the whole body to ranged requests.
    pub(crate) ignore_range: bool,
    /// Answer a ranged request from this byte on (to the end asked for): a range of the
    /// origin's own choosing.
    pub(crate) range_from: Option<u64>,
    /// Send no `Cache-Control: max-age=3600` when the object states no freshness of its own.
    pub(crate) bare: bool,
}

impl Object {
    pub(crate) fn new(body: impl Into<Bytes>) -> Self {
        Self::with_body(Body::Static(body.into()))
    }

    /// A large deterministic object (see [`generated`]).
    pub(crate) fn generated(len: u64, seed: u64) -> Self {
        Self::with_body(Body::Generated { len, seed })
    }

    fn with_body(body: Body) -> Self {
        Object {
            body,
            headers: vec![],
            status: 200,
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            truncate_at: None,
            chunked: false,
            ignore_range: false,
            range_from: None,
            bare: false,
        }
    }

    pub(crate) fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// A request the origin saw.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Path and query as requested.
    pub(crate) target: String,
    pub(crate) headers: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    objects: Mutex<HashMap<String, Object>>,
    seen: Mutex<Vec<Seen>>,
    body_bytes: AtomicU64,
    /// Bodies whose connection went away before they were sent whole.
    abandoned: AtomicU64,
    /// Connections accepted.
    connections: AtomicU64,
    abandoned_event: tokio::sync::Notify,
    seen_event: tokio::sync::Notify,
}

/// The running origin.
#[derive(Clone)]
pub(crate) struct TestOrigin {
    pub(crate) addr: SocketAddr,
    state: Arc<State>,
}

/// Deterministic pseudo-random bytes (xorshift), so bodies are incompressible and reproducible.
pub(crate) fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

impl TestOrigin {
    pub(crate) async fn start() -> TestOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                st.connections.fetch_add(1, Ordering::Relaxed);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        TestOrigin { addr, state }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub(crate) fn put(&self, path: &str, obj: Object) {
        self.state
            .objects
            .lock()
            .unwrap()
            .insert(path.to_string(), obj);
    }

    /// Requests seen for `path`.
    pub(crate) fn hits(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Body bytes sent so far.
    pub(crate) fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Bodies cut short because the client (the proxy) went away.
    pub(crate) fn abandoned(&self) -> u64 {
        self.state.abandoned.load(Ordering::Relaxed)
    }

    /// Waits until `path` has been requested `n` times; false on timeout.
    pub(crate) async fn wait_hits(&self, path: &str, n: usize, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.state.seen_event.notified();
                if self.hits(path) >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Waits until some body has been cut short; false on timeout.
    pub(crate) async fn wait_abandoned(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let n = self.state.abandoned_event.notified();
                if self.abandoned() > 0 {
                    return;
                }
                n.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

type RespBody = BoxBody<Bytes, std::io::Error>;

fn full(status: u16, body: &'static str) -> Response<RespBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

/// A single `bytes=a-b` / `a-` / `-n` range against `len`; `None` when absent or unusable.
fn requested_range(req: &Request<hyper::body::Incoming>, len: u64) -> Option<(u64, u64)> {
    let v = req.headers().get("range")?.to_str().ok()?;
    let spec = v.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (len.checked_sub(n.min(len))?, len.checked_sub(1)?)
    } else {
        let s: u64 = a.parse().ok()?;
        let e = if b.is_empty() {
            len - 1
        } else {
            b.parse::<u64>().ok()?.min(len - 1)
        };
        (s, e)
    };
    (start <= end && start < len).then_some((start, end))
}

/// Whether the request's If-Range (if any) matches the object: an entity-tag strongly, a date
/// exactly.
fn if_range_matches(req: &Request<hyper::body::Incoming>, obj: &Object) -> bool {
    let Some(ir) = req.headers().get("if-range").and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let header = |n: &str| {
        obj.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.trim().to_string())
    };
    let ir = ir.trim();
    if ir.starts_with("W/") {
        return false;
    }
    if ir.starts_with('"') {
        return header("etag").is_some_and(|e| !e.starts_with("W/") && e == ir);
    }
    header("last-modified").is_some_and(|lm| lm == ir)
}

/// A 304 when the request's validators match the object (as a real origin answers them).
fn not_modified(req: &Request<hyper::body::Incoming>, obj: &Object) -> Option<Response<RespBody>> {
    if obj.status != 200 {
        return None;
    }
    let header = |n: &str| {
        obj.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let req_h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let matched = match (req_h("if-none-match"), header("etag")) {
        (Some(inm), Some(etag)) => {
            let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
            inm.split(',')
                .any(|t| t.trim() == "*" || strip(t) == strip(&etag))
        }
        (Some(_), None) => false,
        (None, _) => match (req_h("if-modified-since"), header("last-modified")) {
            (Some(ims), Some(lm)) => match (
                httpdate::parse_http_date(ims),
                httpdate::parse_http_date(&lm),
            ) {
                (Ok(ims), Ok(lm)) => lm <= ims,
                _ => false,
            },
            _ => false,
        },
    };
    if !matched {
        return None;
    }
    let mut r = full(304, "");
    append_headers(r.headers_mut(), &obj.headers);
    Some(r)
}

/// Counts a body's bytes, and notes when it is dropped before its end.
struct Tracker {
    st: Arc<State>,
    done: bool,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.done {
            self.st.abandoned.fetch_add(1, Ordering::Relaxed);
            self.st.abandoned_event.notify_waiters();
        }
    }
}

async fn handle(
    st: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let path = req.uri().path().to_string();
    st.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        target: req
            .uri()
            .path_and_query()
            .map_or(path.clone(), |p| p.as_str().to_string()),
        // Several field lines of one name are one value, joined as RFC 9110 §5.3 says.
        headers: req
            .headers()
            .keys()
            .map(|k| {
                let values: Vec<_> = req
                    .headers()
                    .get_all(k)
                    .iter()
                    .map(|v| v.to_str().unwrap_or(""))
                    .collect();
                (k.to_string(), values.join(", "))
            })
            .collect(),
    });
    st.seen_event.notify_waiters();
    if !matches!(*req.method(), hyper::Method::GET | hyper::Method::HEAD) {
        // Unsafe methods: answer as the test asks through x-respond-* request headers.
        let get = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let status = get("x-respond-status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        let mut r = full(status, "done\n");
        for (from, to) in [
            ("x-respond-location", "location"),
            ("x-respond-content-location", "content-location"),
        ] {
            if let Some(v) = get(from) {
                r.headers_mut().insert(to, v.parse().unwrap());
            }
        }
        return Ok(r);
    }
    let obj = st.objects.lock().unwrap().get(&path).cloned();
    let Some(obj) = obj else {
        return Ok(full(404, "not found\n"));
    };
    if let Some(r) = not_modified(&req, &obj) {
        return Ok(r);
    }
    if !obj.delay.is_zero() {
        tokio::time::sleep(obj.delay).await;
    }
    let len = obj.body.len();
    // RFC 9110 §13.1.5: a Range whose If-Range does not match is ignored (the whole object).
    let if_range_ok = if_range_matches(&req, &obj);
    let range = if obj.ignore_range || obj.status != 200 || !if_range_ok {
        None
    } else {
        requested_range(&req, len)
            .map(|(s, e)| (obj.range_from.filter(|&f| f <= e).unwrap_or(s), e))
    };
    if req.headers().contains_key("range")
        && range.is_none()
        && !obj.ignore_range
        && if_range_ok
        && len > 0
    {
        if let Some(v) = req.headers().get("range").and_then(|v| v.to_str().ok()) {
            if let Some(s) = v.strip_prefix("bytes=").and_then(|s| s.split('-').next()) {
                if s.parse::<u64>().is_ok_and(|s| s >= len) {
                    let mut r = full(416, "");
                    r.headers_mut()
                        .insert("content-range", format!("bytes */{len}").parse().unwrap());
                    return Ok(r);
                }
            }
        }
    }
    let (start, end) = range.unwrap_or((0, len.saturating_sub(1)));
    let body_len = if len == 0 { 0 } else { end - start + 1 };
    let is_head = req.method() == hyper::Method::HEAD;
    let send_len = obj
        .truncate_at
        .map_or(body_len, |t| (t as u64).min(body_len));
    let truncated = obj.truncate_at.is_some();
    let body = obj.body.clone();
    let chunk_delay = obj.chunk_delay;
    let mut tracker = Tracker {
        st: st.clone(),
        done: is_head || send_len == 0,
    };
    let stream = futures_util::stream::unfold(0u64, move |off| {
        let body = body.clone();
        let st = tracker.st.clone();
        let finished = off >= send_len || is_head;
        if finished {
            tracker.done = true;
        }
        let last_error = finished && truncated && !is_head;
        async move {
            if finished {
                if last_error && off != u64::MAX {
                    return Some((Err(std::io::Error::other("truncated on purpose")), u64::MAX));
                }
                return None;
            }
            if !chunk_delay.is_zero() {
                tokio::time::sleep(chunk_delay).await;
            }
            let n = (CHUNK as u64).min(send_len - off);
            let data = body.range(start + off, start + off + n);
            st.body_bytes.fetch_add(n, Ordering::Relaxed);
            Some((Ok(Frame::data(data)), off + n))
        }
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    *resp.status_mut() =
        StatusCode::from_u16(if range.is_some() { 206 } else { obj.status }).unwrap();
    append_headers(resp.headers_mut(), &obj.headers);
    let states_freshness = obj
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("cache-control") || k.eq_ignore_ascii_case("expires"));
    if !obj.bare && !states_freshness {
        resp.headers_mut()
            .insert("cache-control", "max-age=3600".parse().unwrap());
    }
    if range.is_some() {
        resp.headers_mut().insert(
            "content-range",
            format!("bytes {start}-{end}/{len}").parse().unwrap(),
        );
    }
    if !obj.chunked {
        resp.headers_mut()
            .insert(hyper::header::CONTENT_LENGTH, body_len.into());
    }
    resp.headers_mut()
        .insert("accept-ranges", "bytes".parse().unwrap());
    Ok(resp)
}

/// Appends an object's configured headers to a response.
fn append_headers(map: &mut hyper::HeaderMap, headers: &[(String, String)]) {
    for (k, v) in headers {
        map.append(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
}

/// An origin on a raw socket that answers every connection with a close-delimited 200 whose
/// body it cuts after `sent` of the bytes; counts connections.
pub(crate) fn close_delimited_origin(
    body: &'static [u8],
    sent: usize,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let head =
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=3600\r\nConnection: close\r\n\r\n";
            let _ = std::io::Write::write_all(&mut s, head.as_bytes());
            let _ = std::io::Write::write_all(&mut s, &body[..sent]);
        }
    });
    (addr, count)
}
