//! The access line written by hand, in the text and JSON layouts of the node's other log lines,
//! straight into the log writer's buffer.
//!
//! A hit on one core is a few tens of microseconds; formatting its line through the log
//! subscriber's field visitors cost about a tenth of that (profiled on hot hits). The fields
//! are known here, so the line is written in one pass. Durations are in milliseconds to the
//! microsecond (`0.466`, not `0.46607099999999996`).

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The layout of the node's log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `2026-12-01T19:07:12.571881Z  INFO access: access request_id=1 client=… …`
    Text,
    /// `{"timestamp":"…","level":"INFO","fields":{"message":"access",…},"target":"access"}`
    Json,
}

/// What takes a whole line.
type WriteLine = dyn Fn(&[u8]) + Send + Sync;

/// Where access lines go: the log writer's buffer, in the node's layout.
struct Sink {
    layout: Layout,
    write: Box<WriteLine>,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends access lines, in `layout`, to `write` (one call per whole line), instead of through
/// the log subscriber. The first call wins; later ones are ignored.
pub(crate) fn install(layout: Layout, write: impl Fn(&[u8]) + Send + Sync + 'static) {
    let _ = SINK.set(Sink {
        layout,
        write: Box::new(write),
    });
}

/// One request's access line.
pub(crate) struct AccessLine<'a> {
    pub(crate) request_id: u64,
    pub(crate) client: Option<SocketAddr>,
    pub(crate) method: &'a str,
    /// The path only: a query may carry a token.
    pub(crate) path: &'a str,
    /// 0 when no response was written.
    pub(crate) status: u16,
    pub(crate) bytes: usize,
    /// From arrival to the end, in microseconds.
    pub(crate) duration_us: u64,
    /// From arrival to the response header, in microseconds.
    pub(crate) ttfb_us: Option<u64>,
    pub(crate) route: &'a str,
    pub(crate) cache: &'a str,
    pub(crate) origin_status: Option<u16>,
    pub(crate) user_agent: &'a str,
    pub(crate) error: Option<&'a str>,
}

thread_local! {
    /// The line being written: one buffer per thread, kept between requests.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl AccessLine<'_> {
    /// Writes the line: to the installed sink, or else through the log subscriber (target
    /// `access`). The subscriber's filter decides either way (`access=off` silences it).
    pub(crate) fn emit(&self) {
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        LINE.with(|line| {
            // A line being written on this thread (a panic while formatting) is left alone.
            let Ok(mut buf) = line.try_borrow_mut() else {
                return;
            };
            buf.clear();
            match SINK.get() {
                Some(sink) => {
                    match sink.layout {
                        Layout::Text => {
                            push_timestamp(&mut buf, SystemTime::now());
                            buf.extend_from_slice(b"  INFO access: access ");
                            self.text_fields(&mut buf);
                            buf.push(b'\n');
                        }
                        Layout::Json => {
                            buf.extend_from_slice(b"{\"timestamp\":\"");
                            push_timestamp(&mut buf, SystemTime::now());
                            buf.extend_from_slice(b"\",\"level\":\"INFO\",");
                            self.json_fields(&mut buf);
                            buf.extend_from_slice(b",\"target\":\"access\"}\n");
                        }
                    }
                    (sink.write)(&buf);
                }
                None => {
                    self.text_fields(&mut buf);
                    tracing::info!(target: "access", "access {}", String::from_utf8_lossy(&buf));
                }
            }
        });
    }

    /// The fields, in their order, in either layout.
    fn fields(&self, f: &mut Fields<'_>) {
        f.int("request_id", self.request_id);
        f.addr("client", self.client);
        f.word("method", self.method);
        f.word("path", self.path);
        f.int("status", self.status.into());
        f.int("bytes", self.bytes as u64);
        f.ms("duration_ms", self.duration_us);
        if let Some(t) = self.ttfb_us {
            f.ms("ttfb_ms", t);
        }
        f.word("route", self.route);
        f.word("cache", self.cache);
        if let Some(s) = self.origin_status {
            f.int("origin_status", s.into());
        }
        f.text("user_agent", self.user_agent);
        if let Some(e) = self.error {
            f.text("error", e);
        }
    }

    /// `key=value` pairs separated by spaces; free text (user agent, error) quoted and escaped.
    fn text_fields(&self, out: &mut Vec<u8>) {
        self.fields(&mut Fields {
            out,
            layout: Layout::Text,
            first: true,
        });
    }

    /// `"fields":{…}`; absent optional fields are left out.
    fn json_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"fields\":{\"message\":\"access\"");
        self.fields(&mut Fields {
            out,
            layout: Layout::Json,
            first: false,
        });
        out.push(b'}');
    }
}

/// Writes a line's fields: `key=value` pairs in text, `"key":value` members in JSON.
struct Fields<'o> {
    out: &'o mut Vec<u8>,
    layout: Layout,
    /// No separator before the next key.
    first: bool,
}

impl Fields<'_> {
    fn key(&mut self, key: &str) {
        let first = std::mem::take(&mut self.first);
        match self.layout {
            Layout::Text => {
                if !first {
                    self.out.push(b' ');
                }
                self.out.extend_from_slice(key.as_bytes());
                self.out.push(b'=');
            }
            Layout::Json => {
                if !first {
                    self.out.push(b',');
                }
                self.out.push(b'"');
                self.out.extend_from_slice(key.as_bytes());
                self.out.extend_from_slice(b"\":");
            }
        }
    }

    fn int(&mut self, key: &str, n: u64) {
        self.key(key);
        push_int(self.out, n);
    }

    fn ms(&mut self, key: &str, us: u64) {
        self.key(key);
        push_ms(self.out, us);
    }

    /// A word (method, path, route, cache status): bare in text, a string in JSON.
    fn word(&mut self, key: &str, s: &str) {
        self.key(key);
        match self.layout {
            Layout::Text => self.out.extend_from_slice(s.as_bytes()),
            Layout::Json => json_str(self.out, s),
        }
    }

    /// Free text (user agent, error): quoted and escaped in either layout.
    fn text(&mut self, key: &str, s: &str) {
        self.key(key);
        match self.layout {
            Layout::Text => quoted(self.out, s),
            Layout::Json => json_str(self.out, s),
        }
    }

    /// An address, empty when unknown: bare in text, a string in JSON (it needs no escape).
    fn addr(&mut self, key: &str, a: Option<SocketAddr>) {
        self.key(key);
        let json = self.layout == Layout::Json;
        if json {
            self.out.push(b'"');
        }
        match a {
            Some(SocketAddr::V4(a)) => {
                for (i, octet) in a.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        self.out.push(b'.');
                    }
                    push_int(self.out, octet.into());
                }
                self.out.push(b':');
                push_int(self.out, a.port().into());
            }
            Some(a) => {
                let _ = write!(self.out, "{a}");
            }
            None => {}
        }
        if json {
            self.out.push(b'"');
        }
    }
}

thread_local! {
    /// The second a line was last stamped in, and its stamp up to the fraction
    /// (`2026-12-01T19:07:12.`): formatted once a second, not once a line.
    static SECOND: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// `at` in RFC 3339 with microseconds (`2026-12-01T19:07:12.571881Z`), as the log subscriber
/// stamps its lines.
fn push_timestamp(out: &mut Vec<u8>, at: SystemTime) {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            let whole = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let stamp = humantime::format_rfc3339_seconds(whole).to_string();
            // `…:12Z` becomes `…:12.`: the fraction and the zone follow per line.
            second.1.clear();
            second
                .1
                .extend_from_slice(stamp.trim_end_matches('Z').as_bytes());
            second.1.push(b'.');
            second.0 = secs;
        }
        out.extend_from_slice(&second.1);
    });
    push_digits::<6>(out, since.subsec_micros().into());
    out.push(b'Z');
}

/// The last `N` decimal digits of `n`, zero-padded (`push_digits::<3>(out, 7)` → `007`).
fn push_digits<const N: usize>(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [b'0'; N];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits);
}

/// `n` in decimal.
fn push_int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Microseconds as milliseconds with three decimals (`466` → `0.466`).
fn push_ms(out: &mut Vec<u8>, us: u64) {
    push_int(out, us / 1000);
    out.push(b'.');
    push_digits::<3>(out, us % 1000);
}

/// `s` quoted, with Rust's escapes (`"` → `\"`, control bytes as `\n` or `\u{1b}`).
fn quoted(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

/// `s` as a JSON string, escaped.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> AccessLine<'static> {
        AccessLine {
            request_id: 7,
            client: Some("127.0.0.1:5000".parse().unwrap()),
            method: "GET",
            path: "/a/b",
            status: 200,
            bytes: 5166,
            duration_us: 466,
            ttfb_us: Some(12_400),
            route: "origin",
            cache: "strata; hit",
            origin_status: None,
            user_agent: "ua \"quoted\" \\ back\n",
            error: Some("WriteError"),
        }
    }

    #[test]
    fn text_fields_are_key_value_pairs_with_free_text_quoted() {
        let mut out = Vec::new();
        line().text_fields(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "request_id=7 client=127.0.0.1:5000 method=GET path=/a/b status=200 bytes=5166 \
             duration_ms=0.466 ttfb_ms=12.400 route=origin cache=strata; hit \
             user_agent=\"ua \\\"quoted\\\" \\\\ back\\n\" error=\"WriteError\""
        );
    }

    #[test]
    fn free_text_is_quoted_as_rust_debug_quotes_it_and_times_keep_three_decimals() {
        for s in [
            "",
            "curl/8.5.0",
            "a \"b\" \\ c",
            "tab\there",
            "é ü",
            "\u{1b}[31m",
            "~ !",
        ] {
            let mut out = Vec::new();
            quoted(&mut out, s);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{s:?}"));
        }
        for (us, text) in [
            (0, "0.000"),
            (7, "0.007"),
            (1_050, "1.050"),
            (1_234_567, "1234.567"),
        ] {
            let mut out = Vec::new();
            push_ms(&mut out, us);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn timestamps_match_the_subscribers_and_addresses_their_display() {
        for at in [
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_764_616_032_000_007),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_764_616_032_999_999),
            // The next second: the cached stamp is formatted again.
            SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_764_616_033_100_000),
        ] {
            let mut out = Vec::new();
            push_timestamp(&mut out, at);
            let want = humantime::format_rfc3339_micros(at).to_string();
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        for a in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.2.30.4:80",
            "[::1]:443",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut out = Vec::new();
            Fields {
                out: &mut out,
                layout: Layout::Text,
                first: true,
            }
            .addr("client", Some(a));
            assert_eq!(String::from_utf8(out).unwrap(), format!("client={a}"));
        }
    }

    #[test]
    fn json_fields_parse_back_to_the_same_values() {
        let mut out = b"{".to_vec();
        let mut l = line();
        l.client = None;
        l.ttfb_us = None;
        l.origin_status = Some(304);
        l.json_fields(&mut out);
        out.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let f = &v["fields"];
        assert_eq!(f["message"], "access");
        assert_eq!(f["request_id"], 7);
        assert_eq!(f["client"], "");
        assert_eq!(f["path"], "/a/b");
        assert_eq!(f["duration_ms"], 0.466);
        assert!(f.get("ttfb_ms").is_none(), "{v}");
        assert_eq!(f["origin_status"], 304);
        assert_eq!(f["cache"], "strata; hit");
        assert_eq!(f["user_agent"], "ua \"quoted\" \\ back\n");
        assert_eq!(f["error"], "WriteError");
    }
}
