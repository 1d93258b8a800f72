//! HTTP dates (RFC 9110 §5.6.7) and Unix seconds: the one clock stored records and
//! freshness arithmetic use.

use std::time::SystemTime;

/// An HTTP date, surrounding whitespace ignored.
pub fn http_date(v: &[u8]) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(v).ok()?.trim()).ok()
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The current time in Unix seconds.
pub fn unix_now() -> u64 {
    unix(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_unix_seconds() {
        let t = http_date(b" Sun, 06 Nov 1994 08:49:37 GMT ").unwrap();
        assert_eq!(unix(t), 784111777);
        assert_eq!(http_date(b"yesterday"), None);
        assert_eq!(
            unix(SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(5)),
            0
        );
    }
}
