//! HTTP dates (RFC 9110 §5.6.7) and Unix seconds: the one clock stored records and
//! freshness arithmetic use.

use std::time::SystemTime;

/// Longest date Strata reads: the three formats are at most 38 bytes (RFC 850 with "Wednesday").
const MAX_DATE: usize = 64;

/// An HTTP date in any of the three formats a recipient must accept (IMF-fixdate, the
/// obsolete RFC 850 and asctime forms), surrounding whitespace ignored and day, month and
/// zone names compared without regard to case.
pub fn http_date(v: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(v).ok()?.trim();
    if s.len() > MAX_DATE {
        return None;
    }
    httpdate::parse_http_date(&canonical_case(s)).ok()
}

/// The date with its names in the case the parser expects: "GMT" upper-case, day and month
/// names capitalised ("sUN" → "Sun", "NOVEMBER" is no month and stays invalid).
fn canonical_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word_start = true;
    for c in s.chars() {
        if c.is_ascii_alphabetic() {
            out.push(if word_start {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            });
            word_start = false;
        } else {
            out.push(c);
            word_start = true;
        }
    }
    out.replace("Gmt", "GMT")
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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

    #[test]
    fn obsolete_formats_and_any_case_are_accepted() {
        for v in [
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "sun, 06 nov 1994 08:49:37 gmt",
            "SUN, 06 NOV 1994 08:49:37 GMT",
            "SUNDAY, 06-NOV-94 08:49:37 GMT",
            "sun nov  6 08:49:37 1994",
        ] {
            let t = http_date(v.as_bytes()).unwrap_or_else(|| panic!("{v} rejected"));
            assert_eq!(unix(t), 784111777, "{v}");
        }
        for v in [
            "0",
            "-1",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 31 Feb 1994 08:49:37 GMT",
        ] {
            assert_eq!(http_date(v.as_bytes()), None, "{v} accepted");
        }
        assert_eq!(http_date(&[b'a'; 200]), None);
    }
}
