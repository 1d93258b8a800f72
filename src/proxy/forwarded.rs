//! Telling origins who the client was on requests passed through (`forwarded_headers`):
//! `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` (RFC 7239).
//!
//! Fills are not a client's: they are shared by everyone who asks, so they carry none of this.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use pingora::http::RequestHeader;

pub(crate) use crate::config::ForwardedMode;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The `for=` node of `Forwarded` (an IPv6 address quoted in brackets, RFC 7239 §6).
fn node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// The values of `name` joined as one list (several field lines are one, RFC 9110 §5.3).
fn joined(req: &RequestHeader, name: &HeaderName) -> Option<String> {
    let v: Vec<&str> = req
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!v.is_empty()).then(|| v.join(", "))
}

/// Sets the forwarding headers of a request from `client` over `proto`, as `mode` says:
/// `append` adds to what the client sent, `replace` drops it (a client can claim anything),
/// `off` leaves the request as it came.
pub(crate) fn apply(
    mode: ForwardedMode,
    client: Option<IpAddr>,
    proto: &str,
    req: &mut RequestHeader,
) -> pingora::Result<()> {
    let Some(ip) = client else {
        return Ok(());
    };
    let (xff, fwd, xfp) = match mode {
        ForwardedMode::Off => return Ok(()),
        ForwardedMode::Append => (
            joined(req, &X_FORWARDED_FOR),
            joined(req, &header::FORWARDED),
            joined(req, &X_FORWARDED_PROTO),
        ),
        ForwardedMode::Replace => (None, None, None),
    };
    let add = |old: Option<String>, new: String| match old {
        Some(o) => format!("{o}, {new}"),
        None => new,
    };
    req.insert_header(X_FORWARDED_FOR, add(xff, ip.to_string()))?;
    req.insert_header(
        header::FORWARDED,
        add(fwd, format!("for={};proto={proto}", node(ip))),
    )?;
    // The first proxy's view of the scheme is the one that counts.
    req.insert_header(X_FORWARDED_PROTO, xfp.unwrap_or_else(|| proto.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in pairs {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get(r: &RequestHeader, n: &str) -> String {
        r.headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn modes() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let sent = [
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ];
        let mut r = req(&sent);
        apply(ForwardedMode::Append, Some(ip), "http", &mut r).unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), "10.0.0.1, 192.0.2.7");
        assert_eq!(
            get(&r, "forwarded"),
            "for=10.0.0.1, for=192.0.2.7;proto=http"
        );
        assert_eq!(get(&r, "x-forwarded-proto"), "https");
        let mut r = req(&sent);
        apply(ForwardedMode::Replace, Some(ip), "http", &mut r).unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), "192.0.2.7");
        assert_eq!(get(&r, "forwarded"), "for=192.0.2.7;proto=http");
        assert_eq!(get(&r, "x-forwarded-proto"), "http");
        let mut r = req(&sent);
        apply(ForwardedMode::Off, Some(ip), "http", &mut r).unwrap();
        assert_eq!(get(&r, "x-forwarded-for"), "10.0.0.1");
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let mut r = req(&[]);
        apply(ForwardedMode::Replace, Some(v6), "http", &mut r).unwrap();
        assert_eq!(get(&r, "forwarded"), "for=\"[2001:db8::1]\";proto=http");
    }
}
