//! The stored record of a cached response, and its codec.
//!
//! An HTTP object is laid onto the key/value cache as one metadata record plus one value per
//! slice (keys in [`super::key`]); a response that varies puts a Vary record at the URL's key
//! and its variants at keys derived from the request headers it names.
//!
//! Every field is little-endian and length-prefixed, read on every hit, so no text format.
//! An object record (`SOM3`; `SOM2`, read only, is the same with "stored at" in seconds):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `SOM2` |
//! | 2 | status |
//! | 4 | slice size |
//! | 8 | length |
//! | 16 | object id |
//! | 8 | stored at (Unix milliseconds) |
//! | 2 | header count n, then n × (2 name length, name, 4 value length, value) |
//! | 4 | policy length, then the policy (below) |
//!
//! The policy (format 1): 1 format, 8 response time, 8 initial age, 8 lifetime, 2 status,
//! 1 flags (bit 0 explicit, bit 1 validators), 2 directive count, then per directive 1 name
//! length, name, 1 has-value, and if it has one 2 value length and value.
//!
//! A Vary record (`SVR1`): 4 magic, 2 name count, then per name 2 length and the name.

use std::sync::{Arc, OnceLock};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{header, HeaderMap};
use pingora::http::ResponseHeader;

use crate::cache::key::slice_key;
use crate::http::conditional::is_strong_etag;
use crate::http::freshness::Policy;
use crate::http::headers::end_to_end;

const OBJECT_MAGIC: &[u8; 4] = b"SOM3";
/// The previous object record, whose "stored at" counted seconds; read, never written.
const OBJECT_MAGIC_SECONDS: &[u8; 4] = b"SOM2";
const VARY_MAGIC: &[u8; 4] = b"SVR1";

/// The stored description of one cached response.
#[derive(Debug, Clone)]
pub(crate) struct ObjectMeta {
    /// Response status.
    pub(crate) status: u16,
    /// End-to-end response headers as the origin sent them (no hop-by-hop, no Content-Length).
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// Body length in bytes.
    pub(crate) length: u64,
    /// Bytes per slice (the last slice may be shorter).
    pub(crate) slice_size: u32,
    /// Identity of this version's slices: a changed object never reads another version's slices.
    pub(crate) id: u128,
    /// Unix milliseconds when it was stored (or last revalidated): purge rules compare it.
    pub(crate) stored_at_ms: u64,
    /// Its caching policy.
    pub(crate) policy: Policy,
    /// The response header of an answer with the whole body, built by the first hit of this
    /// decoding and cloned by the later ones (see `cache::memo`).
    pub(crate) full_header: HeaderCell,
}

/// A response header built once from a record. A clone of the record starts without it: a
/// record is cloned to be changed (a revalidation's new fields), and must not keep a header
/// built from the old ones.
#[derive(Default)]
pub(crate) struct HeaderCell(OnceLock<Box<ResponseHeader>>);

impl Clone for HeaderCell {
    fn clone(&self) -> Self {
        HeaderCell::default()
    }
}

impl std::fmt::Debug for HeaderCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "built"
        } else {
            "empty"
        })
    }
}

impl HeaderCell {
    /// The header kept, else the one `build` makes (kept for next time).
    pub(crate) fn get_or_build(
        &self,
        build: impl FnOnce() -> pingora::Result<ResponseHeader>,
    ) -> pingora::Result<ResponseHeader> {
        if let Some(h) = self.0.get() {
            return Ok(ResponseHeader::clone(h));
        }
        let h = build()?;
        let _ = self.0.set(Box::new(h.clone()));
        Ok(h)
    }
}

#[cfg(test)]
impl ObjectMeta {
    /// A 200 of `length` bytes in slices of `slice_size`, with no header fields and the policy
    /// of a response that states nothing, for tests.
    pub(crate) fn for_test(length: u64, slice_size: u32) -> ObjectMeta {
        ObjectMeta {
            status: 200,
            headers: vec![],
            length,
            slice_size,
            id: 7,
            stored_at_ms: 0,
            full_header: HeaderCell::default(),
            policy: Policy::new(
                http::StatusCode::OK,
                &HeaderMap::new(),
                std::time::SystemTime::now(),
                &crate::http::freshness::Overrides::default(),
            ),
        }
    }
}

/// What a metadata key holds.
#[derive(Debug, Clone)]
pub(crate) enum Record {
    /// A stored response.
    Object(Arc<ObjectMeta>),
    /// The response varies on these request headers: look under the variant's key.
    Vary(Vec<String>),
}

impl ObjectMeta {
    /// Expected length of slice `idx` (0 past the end).
    pub(crate) fn slice_len(&self, idx: u64) -> u64 {
        let start = idx.saturating_mul(self.slice_size as u64);
        self.length
            .saturating_sub(start)
            .min(self.slice_size as u64)
    }

    /// Cache key of slice `idx`.
    pub(crate) fn slice_key(&self, idx: u64) -> Vec<u8> {
        slice_key(self.id, idx)
    }

    /// First value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The ETag if it is a strong one (usable in If-Range).
    pub(crate) fn strong_etag(&self) -> Option<&[u8]> {
        self.header("etag").filter(|e| is_strong_etag(e))
    }

    /// The validators to revalidate this response with (If-None-Match, If-Modified-Since).
    pub(crate) fn conditionals(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        [
            ("etag", http::header::IF_NONE_MATCH),
            ("last-modified", http::header::IF_MODIFIED_SINCE),
        ]
        .into_iter()
        .filter_map(|(stored, ask)| {
            let v = http::HeaderValue::from_bytes(self.header(stored)?).ok()?;
            Some((ask, v))
        })
        .collect()
    }

    /// The stored headers as a map.
    pub(crate) fn header_map(&self) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(self.headers.len());
        for (n, v) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(n.as_bytes()),
                http::HeaderValue::from_bytes(v),
            ) {
                h.append(n, v);
            }
        }
        h
    }

    /// Serialises the record (little-endian, length-prefixed fields).
    pub(crate) fn encode(&self) -> Bytes {
        let policy = encode_policy(&self.policy);
        let mut b = BytesMut::with_capacity(64 + self.headers.len() * 48 + policy.len());
        b.put_slice(OBJECT_MAGIC);
        b.put_u16_le(self.status);
        b.put_u32_le(self.slice_size);
        b.put_u64_le(self.length);
        b.put_u128_le(self.id);
        b.put_u64_le(self.stored_at_ms);
        b.put_u16_le(self.headers.len() as u16);
        for (n, v) in &self.headers {
            b.put_u16_le(n.len() as u16);
            b.put_slice(n.as_bytes());
            b.put_u32_le(v.len() as u32);
            b.put_slice(v);
        }
        b.put_u32_le(policy.len() as u32);
        b.put_slice(&policy);
        b.freeze()
    }

    fn decode_body(mut b: &[u8], stored_at_unit_ms: u64) -> Option<ObjectMeta> {
        let status = b.try_get_u16_le().ok()?;
        let slice_size = b.try_get_u32_le().ok()?;
        let length = b.try_get_u64_le().ok()?;
        let id = b.try_get_u128_le().ok()?;
        let stored_at_ms = b.try_get_u64_le().ok()?.saturating_mul(stored_at_unit_ms);
        let n = b.try_get_u16_le().ok()?;
        let mut headers = Vec::with_capacity(n.min(256) as usize);
        for _ in 0..n {
            let nl = b.try_get_u16_le().ok()? as usize;
            let name = std::str::from_utf8(take(&mut b, nl)?).ok()?.to_string();
            let vl = b.try_get_u32_le().ok()? as usize;
            headers.push((name, take(&mut b, vl)?.to_vec()));
        }
        let pl = b.try_get_u32_le().ok()? as usize;
        let policy = decode_policy(take(&mut b, pl)?)?;
        if slice_size == 0 || !b.is_empty() {
            return None;
        }
        Some(ObjectMeta {
            status,
            headers,
            length,
            slice_size,
            id,
            stored_at_ms,
            policy,
            full_header: HeaderCell::default(),
        })
    }
}

impl Record {
    /// Serialises a Vary record.
    pub(crate) fn encode_vary(names: &[String]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_slice(VARY_MAGIC);
        b.put_u16_le(names.len() as u16);
        for n in names {
            b.put_u16_le(n.len() as u16);
            b.put_slice(n.as_bytes());
        }
        b.freeze()
    }

    /// Parses either kind of record; `None` when it is neither (treated as a miss).
    pub(crate) fn decode(b: &[u8]) -> Option<Record> {
        let (magic, mut rest) = (b.get(..4)?, b.get(4..)?);
        if magic == OBJECT_MAGIC {
            return ObjectMeta::decode_body(rest, 1).map(|m| Record::Object(Arc::new(m)));
        }
        if magic == OBJECT_MAGIC_SECONDS {
            return ObjectMeta::decode_body(rest, 1000).map(|m| Record::Object(Arc::new(m)));
        }
        if magic != VARY_MAGIC {
            return None;
        }
        let n = rest.try_get_u16_le().ok()?;
        let mut names = Vec::with_capacity(n.min(64) as usize);
        for _ in 0..n {
            let l = rest.try_get_u16_le().ok()? as usize;
            names.push(std::str::from_utf8(take(&mut rest, l)?).ok()?.to_string());
        }
        rest.is_empty().then_some(Record::Vary(names))
    }
}

/// The headers stored with an object: end-to-end ones, without those Strata computes.
pub(crate) fn stored_headers(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    end_to_end(h)
        .into_iter()
        .filter(|(n, _)| {
            *n != header::CONTENT_RANGE && *n != header::AGE && n.as_str() != "warning"
        })
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// Version of the serialised policy.
const POLICY_FORMAT: u8 = 1;

/// Serialises a freshness policy.
fn encode_policy(p: &Policy) -> Vec<u8> {
    let mut b = Vec::with_capacity(40 + p.directives.len() * 16);
    b.put_u8(POLICY_FORMAT);
    b.put_u64_le(p.response_time);
    b.put_u64_le(p.initial_age);
    b.put_u64_le(p.lifetime);
    b.put_u16_le(p.status);
    b.put_u8(p.explicit as u8 | (p.validators as u8) << 1);
    let kept: Vec<_> = p
        .directives
        .iter()
        .filter(|(k, v)| k.len() <= 255 && v.as_ref().is_none_or(|v| v.len() <= 0xffff))
        .collect();
    b.put_u16_le(kept.len() as u16);
    for (k, v) in kept {
        b.put_u8(k.len() as u8);
        b.put_slice(k.as_bytes());
        match v {
            Some(v) => {
                b.put_u8(1);
                b.put_u16_le(v.len() as u16);
                b.put_slice(v.as_bytes());
            }
            None => b.put_u8(0),
        }
    }
    b
}

/// Parses a serialised policy; `None` when it is not one.
fn decode_policy(mut b: &[u8]) -> Option<Policy> {
    if b.try_get_u8().ok()? != POLICY_FORMAT {
        return None;
    }
    let response_time = b.try_get_u64_le().ok()?;
    let initial_age = b.try_get_u64_le().ok()?;
    let lifetime = b.try_get_u64_le().ok()?;
    let status = b.try_get_u16_le().ok()?;
    let flags = b.try_get_u8().ok()?;
    if flags & !3 != 0 {
        // Bits this format does not define: not a record Strata wrote.
        return None;
    }
    let n = b.try_get_u16_le().ok()?;
    let mut directives = Vec::with_capacity(n.min(64) as usize);
    for _ in 0..n {
        let kl = b.try_get_u8().ok()? as usize;
        let k = std::str::from_utf8(take(&mut b, kl)?).ok()?.to_string();
        let v = match b.try_get_u8().ok()? {
            0 => None,
            1 => {
                let vl = b.try_get_u16_le().ok()? as usize;
                Some(std::str::from_utf8(take(&mut b, vl)?).ok()?.to_string())
            }
            _ => return None,
        };
        directives.push((k, v));
    }
    b.is_empty().then_some(Policy {
        response_time,
        initial_age,
        lifetime,
        directives,
        explicit: flags & 1 != 0,
        status,
        validators: flags & 2 != 0,
    })
}

/// The next `n` bytes of a record being decoded; `None` when it is shorter.
fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::freshness::Overrides;
    use http::StatusCode;

    fn sample() -> ObjectMeta {
        let mut resp = HeaderMap::new();
        resp.insert(
            "cache-control",
            "public, max-age=60, stale-if-error=\"30\"".parse().unwrap(),
        );
        resp.insert("etag", "\"x\"".parse().unwrap());
        ObjectMeta {
            full_header: Default::default(),
            status: 200,
            headers: vec![
                ("ETag".into(), b"\"abc\"".to_vec()),
                ("Content-Type".into(), b"application/octet-stream".to_vec()),
            ],
            length: 3 * 1024 * 1024 + 5,
            slice_size: 1 << 20,
            id: 0x1234,
            stored_at_ms: 1_700_000_000_000,
            policy: Policy::new(
                StatusCode::OK,
                &resp,
                std::time::SystemTime::now(),
                &Overrides::default(),
            ),
        }
    }

    #[test]
    fn roundtrip() {
        let m = sample();
        let Some(Record::Object(back)) = Record::decode(&m.encode()) else {
            panic!("not an object record")
        };
        assert_eq!((back.length, back.id, back.status), (m.length, m.id, 200));
        assert_eq!(back.headers, m.headers);
        assert_eq!(m.slice_len(3), 5);
        assert_eq!(m.header("etag"), Some(&b"\"abc\""[..]));
        let names = vec!["accept-encoding".to_string()];
        let Some(Record::Vary(n)) = Record::decode(&Record::encode_vary(&names)) else {
            panic!("not a vary record")
        };
        assert_eq!(n, names);
    }

    #[test]
    fn records_of_the_previous_format_count_seconds() {
        let m = sample();
        let mut old = m.encode().to_vec();
        old[..4].copy_from_slice(b"SOM2");
        // Its "stored at" field (after magic, status, slice size, length and id) in seconds.
        old[34..42].copy_from_slice(&1_700_000_000u64.to_le_bytes());
        let Some(Record::Object(back)) = Record::decode(&old) else {
            panic!("a SOM2 record no longer decodes")
        };
        assert_eq!(back.stored_at_ms, 1_700_000_000_000);
        assert_eq!(back.headers, m.headers);
    }

    #[test]
    fn truncated_or_foreign_records_are_rejected() {
        let enc = sample().encode();
        for cut in 0..enc.len() {
            assert!(Record::decode(&enc[..cut]).is_none(), "cut at {cut}");
        }
        assert!(Record::decode(b"nope").is_none());
    }

    #[test]
    fn records_with_undefined_bits_are_rejected() {
        let enc = encode_policy(&sample().policy);
        // Byte 27 holds the flags; the first directive's has-value byte follows its name.
        let mut flags = enc.clone();
        flags[27] |= 0x40;
        assert!(decode_policy(&flags).is_none());
        let name_len = enc[30] as usize;
        let mut has_value = enc.clone();
        has_value[31 + name_len] = 2;
        assert!(decode_policy(&has_value).is_none());
    }

    #[test]
    fn policies_roundtrip_and_reject_truncation() {
        let pol = sample().policy;
        let enc = encode_policy(&pol);
        assert_eq!(decode_policy(&enc), Some(pol));
        for cut in 0..enc.len() {
            assert!(decode_policy(&enc[..cut]).is_none(), "cut at {cut}");
        }
    }
}
