//! HTTP caching semantics (RFC 9111, RFC 9110 conditionals, RFC 5861, RFC 9211 Cache-Status),
//! table-driven against a controllable origin. Each case runs on its own path and states, for
//! every request, the status, the `Cache-Status` (without its `ttl`) and how many requests the
//! origin has seen for that path so far.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;

type Check = Arc<dyn Fn(&reqwest::Response) -> Result<(), String> + Send + Sync>;
type Mutation = Arc<dyn Fn(&TestOrigin, &str) + Send + Sync>;

#[derive(Default)]
struct Step {
    method: &'static str,
    headers: Vec<(String, String)>,
    before: Option<Mutation>,
    wait_origin: Option<usize>,
    status: u16,
    cs: String,
    origin: usize,
    check: Option<Check>,
}

struct Case {
    name: &'static str,
    obj: Object,
    steps: Vec<Step>,
}

fn case(name: &'static str, obj: Object) -> Case {
    Case {
        name,
        obj,
        steps: vec![],
    }
}

impl Case {
    fn req(
        mut self,
        method: &'static str,
        headers: &[(&str, &str)],
        status: u16,
        cs: &str,
        origin: usize,
    ) -> Self {
        self.steps.push(Step {
            method,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            status,
            cs: cs.to_string(),
            origin,
            ..Step::default()
        });
        self
    }
    fn get(self, headers: &[(&str, &str)], status: u16, cs: &str, origin: usize) -> Self {
        self.req("GET", headers, status, cs, origin)
    }
    /// Changes the origin before the next step.
    fn then(mut self, f: impl Fn(&TestOrigin, &str) + Send + Sync + 'static) -> Self {
        self.steps.push(Step {
            before: Some(Arc::new(f)),
            ..Step::default()
        });
        self
    }
    /// Waits until the origin has seen `n` requests for the path (background work).
    fn wait_origin(mut self, n: usize) -> Self {
        self.steps.push(Step {
            wait_origin: Some(n),
            ..Step::default()
        });
        self
    }
    /// Repeats a GET until its Cache-Status is `cs` (work finishing in the background, which
    /// the client cannot observe otherwise); bounded.
    fn eventually(mut self, cs: &str, origin: usize) -> Self {
        self.steps.push(Step {
            method: "EVENTUALLY",
            status: 200,
            cs: cs.to_string(),
            origin,
            ..Step::default()
        });
        self
    }

    /// An extra assertion on the last request's response.
    fn check(
        mut self,
        f: impl Fn(&reqwest::Response) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        if let Some(s) = self.steps.last_mut() {
            s.check = Some(Arc::new(f));
        }
        self
    }
}

fn http_date(offset_secs: i64) -> String {
    let t = if offset_secs >= 0 {
        SystemTime::now() + Duration::from_secs(offset_secs as u64)
    } else {
        SystemTime::now() - Duration::from_secs((-offset_secs) as u64)
    };
    httpdate::fmt_http_date(t)
}

fn obj() -> Object {
    Object::new("body")
}

fn bare() -> Object {
    let mut o = obj();
    o.bare = true;
    o
}

fn status(code: u16) -> Object {
    let mut o = if code == 204 { Object::new("") } else { obj() };
    o.status = code;
    o
}

/// A check that the response's `Cache-Status` reports a ttl within `lo..=hi`.
fn ttl_within(lo: i64, hi: i64) -> impl Fn(&reqwest::Response) -> Result<(), String> {
    move |r| {
        let cs = r.headers()["cache-status"].to_str().unwrap_or("");
        let ttl: i64 = cs
            .rsplit("ttl=")
            .next()
            .unwrap_or("")
            .parse()
            .unwrap_or(i64::MIN);
        (lo..=hi)
            .contains(&ttl)
            .then_some(())
            .ok_or(format!("{cs}: ttl not within {lo}..={hi}"))
    }
}

fn header_is(
    name: &'static str,
    want: &'static str,
) -> impl Fn(&reqwest::Response) -> Result<(), String> {
    move |r| {
        let got = r
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        (got == want)
            .then_some(())
            .ok_or(format!("{name}: {got:?}, expected {want:?}"))
    }
}

async fn run(node: &Strata, origin: &TestOrigin, cases: Vec<Case>, prefix: &str) -> usize {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut failures = Vec::new();
    let mut count = 0;
    for (i, c) in cases.into_iter().enumerate() {
        count += 1;
        let path = format!("{prefix}{i}");
        origin.put(&path, c.obj.clone());
        for (n, step) in c.steps.iter().enumerate() {
            if let Some(f) = &step.before {
                f(origin, &path);
                continue;
            }
            if let Some(want) = step.wait_origin {
                if !origin.wait_hits(&path, want, Duration::from_secs(10)).await {
                    failures.push(format!(
                        "{}: step {n}: origin never saw {want} requests",
                        c.name
                    ));
                }
                continue;
            }
            if step.method == "EVENTUALLY" {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    let (s, cs, _) = get(&node.url(&path)).await;
                    if (s, cs.as_str(), origin.hits(&path))
                        == (step.status, step.cs.as_str(), step.origin)
                    {
                        break;
                    }
                    if std::time::Instant::now() > deadline {
                        failures.push(format!("{}: step {n}: never became {:?}", c.name, step.cs));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                continue;
            }
            let method = reqwest::Method::from_bytes(step.method.as_bytes()).unwrap();
            let mut rb = client.request(method, node.url(&path));
            for (k, v) in &step.headers {
                rb = rb.header(k, v);
            }
            let r = rb.send().await.unwrap();
            let hits = if step.origin == ANY {
                ANY
            } else {
                origin.hits(&path)
            };
            let got = (r.status().as_u16(), cache_status(&r), hits);
            let want = (step.status, step.cs.clone(), step.origin);
            if got != want {
                failures.push(format!("{}: step {n}: got {got:?}, want {want:?}", c.name));
            } else if let Some(check) = &step.check {
                if let Err(e) = check(&r) {
                    failures.push(format!("{}: step {n}: {e}", c.name));
                }
            }
            let _ = r.bytes().await;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
    count
}

const STORED: &str = "strata; fwd=uri-miss; stored";
const NO_LIFETIME: &str = "strata; fwd=uri-miss; detail=no-lifetime";
/// Any origin count (work in the background makes it racy at that step).
const ANY: usize = usize::MAX;
const HIT: &str = "strata; hit";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storability() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let mut cases = vec![];
    for code in [200u16, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
        cases.push(
            case("cacheable by default (with max-age)", status(code))
                .get(&[], code, STORED, 1)
                .get(&[], code, HIT, 1),
        );
    }
    for code in [302u16, 307] {
        cases.push(
            case(
                "cacheable with explicit freshness",
                status(code).header("cache-control", "max-age=60"),
            )
            .get(&[], code, STORED, 1)
            .get(&[], code, HIT, 1),
        );
    }
    let mut redirect = status(302);
    redirect.bare = true;
    cases.push(
        case("302 without freshness is not stored", redirect)
            .get(&[], 302, "strata; fwd=uri-miss; detail=status", 1)
            .get(&[], 302, "strata; fwd=uri-miss; detail=status", 2),
    );
    for code in [400u16, 403, 500, 503] {
        cases.push(
            case(
                "any final status with explicit freshness is stored",
                status(code),
            )
            .get(&[], code, STORED, 1)
            .get(&[], code, HIT, 1),
        );
    }
    for code in [500u16, 503, 403] {
        let mut o = status(code);
        o.bare = true;
        cases.push(
            case(
                "a status that is not heuristically cacheable needs freshness",
                o,
            )
            .get(&[], code, "strata; fwd=uri-miss; detail=status", 1)
            .get(&[], code, "strata; fwd=uri-miss; detail=status", 2),
        );
    }
    for (name, cc, why) in [
        ("no-store", "no-store", "no-store"),
        ("private", "private, max-age=60", "private"),
        (
            "no-store wins over public",
            "public, max-age=60, no-store",
            "no-store",
        ),
    ] {
        let detail = format!("strata; fwd=uri-miss; detail={why}");
        cases.push(
            case(name, obj().header("cache-control", cc))
                .get(&[], 200, &detail, 1)
                .get(&[], 200, &detail, 2),
        );
    }
    cases.push(
        case(
            "set-cookie responses are not shared",
            obj().header("set-cookie", "s=1"),
        )
        .get(&[], 200, "strata; fwd=uri-miss; detail=set-cookie", 1)
        .get(&[], 200, "strata; fwd=uri-miss; detail=set-cookie", 2),
    );
    cases.push(
        case("request no-store", obj())
            .get(
                &[("cache-control", "no-store")],
                200,
                "strata; fwd=uri-miss; detail=no-store",
                1,
            )
            .get(&[], 200, STORED, 2)
            .get(&[], 200, HIT, 2),
    );
    let auth = ("authorization", "Bearer x");
    let not_shared = "strata; fwd=uri-miss; detail=authorization";
    cases.push(
        case(
            "a response to Authorization without public, s-maxage or must-revalidate is not stored",
            obj(),
        )
        .get(&[auth], 200, not_shared, 1)
        .get(&[auth], 200, not_shared, 2)
        .get(&[], 200, STORED, 3)
        // Strata's choice: a stored response that does not say it may be shared with
        // credentials does not answer them.
        .get(&[auth], 200, "strata; fwd=bypass", 4),
    );
    for cc in [
        "public, max-age=3600",
        "s-maxage=3600",
        "must-revalidate, max-age=3600",
    ] {
        cases.push(
            case(
                "a response to Authorization that may be shared is stored and reused",
                obj().header("cache-control", cc),
            )
            .get(&[auth], 200, STORED, 1)
            .get(&[auth], 200, HIT, 1)
            .get(&[("authorization", "Bearer y")], 200, HIT, 1)
            .get(&[], 200, HIT, 1),
        );
    }
    cases.push(
        case(
            "public without lifetime or validators is not worth storing",
            bare().header("cache-control", "public"),
        )
        .get(&[], 200, NO_LIFETIME, 1)
        .get(&[], 200, NO_LIFETIME, 2),
    );
    let mut nf = status(404);
    nf.bare = true;
    cases.push(
        case("404 without freshness is not stored", nf)
            .get(&[], 404, NO_LIFETIME, 1)
            .get(&[], 404, NO_LIFETIME, 2),
    );
    cases.push(
        case("a HEAD miss is fetched as a GET and stored", obj())
            .req("HEAD", &[], 200, STORED, 1)
            .check(header_is("content-length", "4"))
            .req("HEAD", &[], 200, HIT, 1)
            .get(&[], 200, HIT, 1),
    );
    cases.push(
        case("a HEAD of an unstorable response stores nothing", bare())
            .req("HEAD", &[], 200, NO_LIFETIME, 1)
            .req("HEAD", &[], 200, NO_LIFETIME, 2),
    );
    let n = run(&node, &origin, cases, "/st").await;
    assert!(n >= 30);
    // The origin saw the client's credentials on the fills they shaped, and only there.
    let seen = origin.seen();
    let with_auth = |p: &str| {
        seen.iter()
            .filter(|s| s.path == p && s.headers.contains_key("authorization"))
            .count()
    };
    let first_auth_case = seen
        .iter()
        .filter(|s| s.headers.contains_key("authorization"))
        .map(|s| s.path.clone())
        .next()
        .expect("no fill carried Authorization");
    assert_eq!(with_auth(&first_auth_case), 3, "{first_auth_case}");
    assert!(
        seen.iter().all(|s| s.method == "GET"),
        "a HEAD reached the origin as HEAD"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let cases = vec![
        case(
            "s-maxage wins over max-age (fresh)",
            obj().header("cache-control", "s-maxage=3600, max-age=0"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1),
        case(
            "s-maxage wins over max-age (stale)",
            obj().header("cache-control", "s-maxage=0, max-age=3600"),
        )
        .get(&[], 200, NO_LIFETIME, 1)
        .get(&[], 200, NO_LIFETIME, 2),
        case(
            "max-age wins over Expires",
            obj()
                .header("cache-control", "max-age=3600")
                .header("expires", &http_date(-3600)),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1),
        case(
            "Expires in the future",
            obj().header("expires", &http_date(3600)),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1),
        case(
            "Expires in the past",
            obj().header("expires", &http_date(-60)),
        )
        .get(&[], 200, NO_LIFETIME, 1)
        .get(&[], 200, NO_LIFETIME, 2),
        case(
            "an invalid Expires means stale",
            obj().header("expires", "0"),
        )
        .get(&[], 200, NO_LIFETIME, 1)
        .get(&[], 200, NO_LIFETIME, 2),
        case(
            "Age beyond max-age: stale on arrival",
            obj()
                .header("cache-control", "max-age=60")
                .header("age", "100"),
        )
        .get(&[], 200, NO_LIFETIME, 1)
        .get(&[], 200, NO_LIFETIME, 2),
        case(
            "Age is carried and grows",
            obj()
                .header("cache-control", "max-age=3600")
                .header("age", "10"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1)
        .check(|r| {
            let age: u64 = r.headers()["age"].to_str().unwrap().parse().unwrap();
            (10..20)
                .contains(&age)
                .then_some(())
                .ok_or(format!("age {age}"))
        }),
        case(
            "Date in the past counts towards age",
            obj()
                .header("cache-control", "max-age=60")
                .header("date", &http_date(-100)),
        )
        .get(&[], 200, NO_LIFETIME, 1)
        .get(&[], 200, NO_LIFETIME, 2),
        case(
            "heuristic freshness from an old Last-Modified",
            bare().header("last-modified", &http_date(-10 * 86400)),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1),
        case(
            "no heuristic lifetime for a new Last-Modified: revalidated by date",
            bare().header("last-modified", &http_date(-1)),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, "strata; fwd=stale; fwd-status=304", 2),
        case(
            "a hit reports its remaining ttl",
            obj().header("cache-control", "max-age=3600"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1)
        .check(ttl_within(3590, 3600)),
    ];
    run(&node, &origin, cases, "/fr").await;
}

fn tagged() -> Object {
    obj()
        .header("etag", "\"v1\"")
        .header("cache-control", "max-age=3600")
}

fn stale_tagged(extra_cc: &str) -> Object {
    obj()
        .header("etag", "\"v1\"")
        .header("cache-control", &format!("max-age=60{extra_cc}"))
        .header("age", "100")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_directives() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let forced = "strata; fwd=request; fwd-status=304";
    let revalidated = "strata; fwd=stale; fwd-status=304";
    let cases = vec![
        case("no-cache forces validation", tagged())
            .get(&[], 200, STORED, 1)
            .get(&[("cache-control", "no-cache")], 200, forced, 2),
        case("Pragma: no-cache (no Cache-Control)", tagged())
            .get(&[], 200, STORED, 1)
            .get(&[("pragma", "no-cache")], 200, forced, 2),
        case("Pragma is ignored beside Cache-Control", tagged())
            .get(&[], 200, STORED, 1)
            .get(
                &[("pragma", "no-cache"), ("cache-control", "max-age=3600")],
                200,
                HIT,
                1,
            ),
        case(
            "max-age=0 refuses a response of any age",
            tagged().header("age", "5"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[("cache-control", "max-age=0")], 200, forced, 2),
        case("max-age above the age is satisfied", tagged())
            .get(&[], 200, STORED, 1)
            .get(&[("cache-control", "max-age=100")], 200, HIT, 1),
        case("max-stale accepts any staleness", stale_tagged(""))
            .get(&[], 200, STORED, 1)
            .get(&[("cache-control", "max-stale")], 200, HIT, 1),
        case("max-stale within bounds", stale_tagged(""))
            .get(&[], 200, STORED, 1)
            .get(&[("cache-control", "max-stale=1000")], 200, HIT, 1),
        case("max-stale exceeded", stale_tagged(""))
            .get(&[], 200, STORED, 1)
            .get(&[("cache-control", "max-stale=10")], 200, revalidated, 2),
        case(
            "must-revalidate beats max-stale",
            stale_tagged(", must-revalidate"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[("cache-control", "max-stale")], 200, revalidated, 2),
        case(
            "proxy-revalidate beats max-stale in a shared cache",
            stale_tagged(", proxy-revalidate"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[("cache-control", "max-stale")], 200, revalidated, 2),
        case("min-fresh satisfied", tagged())
            .get(&[], 200, STORED, 1)
            .get(&[("cache-control", "min-fresh=100")], 200, HIT, 1),
        case("min-fresh not satisfied", tagged())
            .get(&[], 200, STORED, 1)
            .get(&[("cache-control", "min-fresh=7200")], 200, forced, 2),
        case("only-if-cached on a miss is a 504", tagged()).get(
            &[("cache-control", "only-if-cached")],
            504,
            "strata; fwd=uri-miss; detail=only-if-cached",
            0,
        ),
        case("only-if-cached on a fresh response", tagged())
            .get(&[], 200, STORED, 1)
            .get(&[("cache-control", "only-if-cached")], 200, HIT, 1),
        case(
            "only-if-cached on a stale response is a 504",
            stale_tagged(""),
        )
        .get(&[], 200, STORED, 1)
        .get(
            &[("cache-control", "only-if-cached")],
            504,
            "strata; fwd=stale; detail=only-if-cached",
            1,
        ),
    ];
    run(&node, &origin, cases, "/rd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let revalidated = "strata; fwd=stale; fwd-status=304";
    let cases = vec![
        case("stale with an ETag: If-None-Match, 304", stale_tagged(""))
            .get(&[], 200, STORED, 1)
            .get(&[], 200, revalidated, 2)
            .check(header_is("etag", "\"v1\"")),
        case(
            "stale with Last-Modified only: If-Modified-Since, 304",
            obj()
                .header("cache-control", "max-age=0")
                .header("last-modified", &http_date(-3600)),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, revalidated, 2),
        case(
            "stale on arrival without validators: not stored",
            obj().header("cache-control", "max-age=0"),
        )
        .get(&[], 200, NO_LIFETIME, 1)
        .get(&[], 200, NO_LIFETIME, 2),
        case(
            "a 304 updates stored headers and freshness",
            obj()
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=0")
                .header("x-rev", "1"),
        )
        .get(&[], 200, STORED, 1)
        .then(|o, p| {
            o.put(
                p,
                obj()
                    .header("etag", "\"v1\"")
                    .header("cache-control", "max-age=3600")
                    .header("x-rev", "2"),
            )
        })
        .get(&[], 200, revalidated, 2)
        .check(header_is("x-rev", "2"))
        .get(&[], 200, HIT, 2)
        .check(header_is("x-rev", "2")),
        case(
            "response no-cache: validated every time",
            obj()
                .header("etag", "\"v1\"")
                .header("cache-control", "no-cache, max-age=3600"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, revalidated, 2)
        .get(&[], 200, revalidated, 3),
        case(
            "must-revalidate when stale",
            stale_tagged(", must-revalidate"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, revalidated, 2),
        case("a changed object replaces the stale one", stale_tagged(""))
            .get(&[], 200, STORED, 1)
            .then(|o, p| {
                o.put(
                    p,
                    Object::new("new body")
                        .header("etag", "\"v2\"")
                        .header("cache-control", "max-age=3600"),
                )
            })
            .get(&[], 200, "strata; fwd=stale; fwd-status=200; stored", 2)
            .check(header_is("etag", "\"v2\""))
            .get(&[], 200, HIT, 2)
            .check(header_is("etag", "\"v2\"")),
    ];
    run(&node, &origin, cases, "/va").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_costs_no_body_bytes() {
    let origin = TestOrigin::start().await;
    let body = random_bytes(3 << 20, 5);
    origin.put(
        "/big",
        Object::new(body.clone())
            .header("etag", "\"big\"")
            .header("cache-control", "max-age=0"),
    );
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let (_, cs, b) = get(&node.url("/big")).await;
    assert_eq!((cs.as_str(), b == body), (STORED, true));
    let sent = origin.body_bytes();
    let (_, cs, b) = get(&node.url("/big")).await;
    assert_eq!(cs, "strata; fwd=stale; fwd-status=304");
    assert!(b == body);
    assert_eq!(
        origin.body_bytes(),
        sent,
        "a 304 revalidation must not move body bytes"
    );
    let last = origin.seen().into_iter().last().unwrap();
    assert_eq!(
        last.headers.get("if-none-match").map(String::as_str),
        Some("\"big\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_preconditions() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let pre = || {
        obj()
            .header("etag", "\"e1\"")
            .header("last-modified", &http_date(-86400))
            .header("cache-control", "max-age=3600")
    };
    let now = http_date(0);
    let old = http_date(-2 * 86400);
    let primed = |name| case(name, pre()).get(&[], 200, STORED, 1);
    let cases = vec![
        primed("If-None-Match matching: 304").get(&[("if-none-match", "\"e1\"")], 304, HIT, 1),
        primed("If-None-Match not matching: 200").get(&[("if-none-match", "\"zz\"")], 200, HIT, 1),
        primed("If-None-Match *: 304").get(&[("if-none-match", "*")], 304, HIT, 1),
        primed("If-None-Match weak comparison: 304").get(
            &[("if-none-match", "W/\"e1\"")],
            304,
            HIT,
            1,
        ),
        primed("If-Modified-Since after Last-Modified: 304").get(
            &[("if-modified-since", now.as_str())],
            304,
            HIT,
            1,
        ),
        primed("If-Modified-Since before Last-Modified: 200").get(
            &[("if-modified-since", old.as_str())],
            200,
            HIT,
            1,
        ),
        primed("If-None-Match takes precedence over If-Modified-Since").get(
            &[
                ("if-none-match", "\"zz\""),
                ("if-modified-since", now.as_str()),
            ],
            200,
            HIT,
            1,
        ),
        primed("If-Match not matching: 412").get(&[("if-match", "\"zz\"")], 412, HIT, 1),
        primed("If-Match matching: 200").get(&[("if-match", "\"e1\"")], 200, HIT, 1),
        primed("If-Unmodified-Since before Last-Modified: 412").get(
            &[("if-unmodified-since", old.as_str())],
            412,
            HIT,
            1,
        ),
        primed("HEAD with If-None-Match: 304").req(
            "HEAD",
            &[("if-none-match", "\"e1\"")],
            304,
            HIT,
            1,
        ),
        case(
            "a conditional miss fills the cache, then answers 304",
            pre(),
        )
        .get(&[("if-none-match", "\"e1\"")], 304, STORED, 1)
        .eventually(HIT, 1),
    ];
    run(&node, &origin, cases, "/cp").await;
    // The conditional miss was sent to the origin without the client's validators.
    let miss = origin
        .seen()
        .into_iter()
        .find(|s| s.path == "/cp11")
        .unwrap();
    assert!(!miss.headers.contains_key("if-none-match"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let vmiss = "strata; fwd=vary-miss; stored";
    let gz = ("accept-encoding", "gzip");
    let cases = vec![
        case(
            "one variant per Accept-Encoding",
            obj().header("vary", "Accept-Encoding"),
        )
        .get(&[gz], 200, STORED, 1)
        .get(&[], 200, vmiss, 2)
        .get(&[gz], 200, HIT, 2)
        .get(&[], 200, HIT, 2),
        case(
            "Vary: * is never served from cache",
            obj().header("vary", "*"),
        )
        .get(&[], 200, "strata; fwd=uri-miss; detail=vary-star", 1)
        .get(&[], 200, "strata; fwd=uri-miss; detail=vary-star", 2),
        case(
            "two varying headers",
            obj().header("vary", "accept-encoding, accept-language"),
        )
        .get(&[gz, ("accept-language", "en")], 200, STORED, 1)
        .get(&[gz, ("accept-language", "fr")], 200, vmiss, 2)
        .get(&[gz, ("accept-language", "en")], 200, HIT, 2),
        case(
            "values are compared as sent (no normalisation)",
            obj().header("vary", "accept-encoding"),
        )
        .get(&[("accept-encoding", "gzip, br")], 200, STORED, 1)
        .get(&[("accept-encoding", "gzip,br")], 200, vmiss, 2)
        .get(&[("accept-encoding", "gzip, br")], 200, HIT, 2),
        case(
            "a non-varying header does not matter",
            obj().header("vary", "accept-encoding"),
        )
        .get(&[gz, ("accept-language", "en")], 200, STORED, 1)
        .get(&[gz, ("accept-language", "fr")], 200, HIT, 1),
    ];
    run(&node, &origin, cases, "/vy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_and_stale_if_error() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let swr = "strata; hit; detail=stale-while-revalidate";
    let sie = "strata; fwd=stale; fwd-status=500; detail=stale-if-error";
    let failing = |o: &TestOrigin, p: &str| {
        let mut e = Object::new("down");
        e.status = 500;
        e.bare = true;
        o.put(p, e);
    };
    let cases = vec![
        case(
            "stale-while-revalidate serves stale and revalidates once in the background",
            stale_tagged(", stale-while-revalidate=60"),
        )
        .get(&[], 200, STORED, 1)
        .then(|o, p| o.put(p, tagged()))
        .get(&[], 200, swr, ANY)
        .wait_origin(2)
        .eventually(HIT, 2),
        case(
            "beyond the stale-while-revalidate window: revalidated first",
            stale_tagged(", stale-while-revalidate=10"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, "strata; fwd=stale; fwd-status=304", 2),
        case(
            "stale-if-error serves stale when the origin fails",
            stale_tagged(", stale-if-error=60"),
        )
        .get(&[], 200, STORED, 1)
        .then(failing)
        .get(&[], 200, sie, 2),
        case(
            "without stale-if-error the failure is passed on",
            stale_tagged(""),
        )
        .get(&[], 200, STORED, 1)
        .then(failing)
        .get(&[], 500, "strata; fwd=stale; detail=status", 2),
        case("stale-if-error from the request", stale_tagged(""))
            .get(&[], 200, STORED, 1)
            .then(failing)
            .get(&[("cache-control", "stale-if-error=60")], 200, sie, 2),
        case(
            "must-revalidate forbids stale-if-error",
            stale_tagged(", must-revalidate, stale-if-error=60"),
        )
        .get(&[], 200, STORED, 1)
        .then(failing)
        .get(&[], 500, "strata; fwd=stale; detail=status", 2),
    ];
    run(&node, &origin, cases, "/sw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_by_unsafe_methods() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    let mut cases = vec![];
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        cases.push(
            case("a successful unsafe request invalidates its target", obj())
                .get(&[], 200, STORED, 1)
                .req(m, &[], 200, "strata; fwd=method", 2)
                .get(&[], 200, STORED, 3),
        );
    }
    cases.push(
        case("a failed unsafe request does not invalidate", obj())
            .get(&[], 200, STORED, 1)
            .req(
                "POST",
                &[("x-respond-status", "500")],
                500,
                "strata; fwd=method",
                2,
            )
            .get(&[], 200, HIT, 2),
    );
    run(&node, &origin, cases, "/iv").await;

    // Location and Content-Location on the same origin are invalidated too; other hosts are not.
    for p in ["/loc/a", "/loc/b", "/loc/c", "/loc/d"] {
        origin.put(p, obj());
        assert_eq!(get(&node.url(p)).await.1, STORED);
    }
    let client = reqwest::Client::new();
    let post = |headers: Vec<(&'static str, String)>| {
        let mut rb = client.post(node.url("/loc/a"));
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        rb.send()
    };
    post(vec![("x-respond-location", "/loc/b".into())])
        .await
        .unwrap();
    post(vec![("x-respond-content-location", "c".into())])
        .await
        .unwrap();
    post(vec![(
        "x-respond-location",
        "http://elsewhere.example/loc/d".into(),
    )])
    .await
    .unwrap();
    assert_eq!(
        get(&node.url("/loc/b")).await.1,
        STORED,
        "Location invalidated"
    );
    assert_eq!(
        get(&node.url("/loc/c")).await.1,
        STORED,
        "Content-Location invalidated"
    );
    assert_eq!(
        get(&node.url("/loc/d")).await.1,
        HIT,
        "another origin's URL untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_overrides_and_collapsed_forwarding() {
    let origin = TestOrigin::start().await;
    let mut cfg = NodeConfig::new(&origin.url());
    let url = origin.url();
    cfg.routes = [
        format!(
            "  - name: ttl\n    path_prefix: /ttl/\n    origin: {url}ttl/\n    default_ttl: 1h\n"
        ),
        format!("  - name: ignore\n    path_prefix: /ignore/\n    origin: {url}ignore/\n"),
        "    default_ttl: 1h\n    ignore_cache_control: true\n".to_string(),
        format!("  - name: plain\n    path_prefix: /\n    origin: {url}\n"),
    ]
    .concat();
    let node = Strata::start(&cfg);
    let cases = vec![
        case(
            "default_ttl gives a lifetime to responses without one",
            bare(),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1),
        case(
            "default_ttl does not override an explicit lifetime",
            obj().header("cache-control", "max-age=0"),
        )
        .get(&[], 200, NO_LIFETIME, 1)
        .get(&[], 200, NO_LIFETIME, 2),
    ];
    run(&node, &origin, cases, "/ttl/c").await;
    let cases = vec![
        case(
            "ignore_cache_control stores despite no-store",
            obj().header("cache-control", "no-store"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1),
        case(
            "ignore_cache_control disregards max-age=0",
            obj().header("cache-control", "max-age=0"),
        )
        .get(&[], 200, STORED, 1)
        .get(&[], 200, HIT, 1),
    ];
    run(&node, &origin, cases, "/ignore/c").await;

    // Two clients at once for a cold object: one fetch; the second is collapsed into it.
    let mut slow = obj();
    slow.delay = Duration::from_millis(300);
    origin.put("/together", slow);
    let url = node.url("/together");
    let (a, b) = tokio::join!(get(&url), async {
        origin
            .wait_hits("/together", 1, Duration::from_secs(5))
            .await;
        get(&url).await
    });
    let mut statuses = [a.1, b.1];
    statuses.sort();
    assert_eq!(
        statuses,
        [
            "strata; fwd=uri-miss; collapsed".to_string(),
            STORED.to_string()
        ]
    );
    assert_eq!(origin.hits("/together"), 1);
}

#[path = "rfc9111/second_pass.rs"]
mod second_pass;
