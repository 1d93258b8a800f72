//! An in-process HTTP origin with controllable objects, counting what it serves.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One object the origin serves.
#[derive(Clone)]
pub struct Object {
    pub body: Bytes,
    pub headers: Vec<(String, String)>,
    pub status: u16,
    /// Pause before the body starts.
    pub delay: Duration,
    /// Send only this many body bytes, then drop the connection.
    pub truncate_at: Option<usize>,
    /// Omit Content-Length (chunked encoding).
    pub chunked: bool,
}

impl Object {
    pub fn new(body: impl Into<Bytes>) -> Self {
        Object {
            body: body.into(),
            headers: vec![],
            status: 200,
            delay: Duration::ZERO,
            truncate_at: None,
            chunked: false,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// A request the origin saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    objects: Mutex<HashMap<String, Object>>,
    seen: Mutex<Vec<Seen>>,
    body_bytes: AtomicU64,
}

/// The running origin.
#[derive(Clone)]
pub struct TestOrigin {
    pub addr: SocketAddr,
    state: Arc<State>,
}

/// Deterministic pseudo-random bytes (xorshift), so bodies are incompressible and reproducible.
pub fn random_bytes(len: usize, seed: u64) -> Bytes {
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
    pub async fn start() -> TestOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
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

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn put(&self, path: &str, obj: Object) {
        self.state
            .objects
            .lock()
            .unwrap()
            .insert(path.to_string(), obj);
    }

    /// Requests seen for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .count()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Body bytes sent so far.
    pub fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::Relaxed)
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: u16, body: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

async fn handle(
    st: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    st.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
    });
    let obj = st.objects.lock().unwrap().get(&path).cloned();
    let Some(obj) = obj else {
        return Ok(full(404, "not found\n"));
    };
    if !obj.delay.is_zero() {
        tokio::time::sleep(obj.delay).await;
    }
    let is_head = req.method() == hyper::Method::HEAD;
    let body = obj.body.clone();
    let send_len = obj.truncate_at.unwrap_or(body.len()).min(body.len());
    let truncated = obj.truncate_at.is_some();
    let counter = st.clone();
    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = if is_head {
        vec![]
    } else {
        let mut v: Vec<_> = (0..send_len)
            .step_by(64 * 1024)
            .map(|s| Ok(Frame::data(body.slice(s..(s + 64 * 1024).min(send_len)))))
            .collect();
        if truncated {
            v.push(Err(std::io::Error::other("truncated on purpose")));
        }
        v
    };
    let stream = stream::iter(chunks.into_iter().inspect(move |c| {
        if let Some(d) = c.as_ref().ok().and_then(|f| f.data_ref()) {
            counter
                .body_bytes
                .fetch_add(d.len() as u64, Ordering::Relaxed);
        }
    }));
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    *resp.status_mut() = StatusCode::from_u16(obj.status).unwrap();
    for (k, v) in &obj.headers {
        resp.headers_mut().append(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    if !obj.chunked {
        resp.headers_mut()
            .insert(hyper::header::CONTENT_LENGTH, body.len().into());
    }
    Ok(resp)
}
