//! How an HTTP object is laid onto the key/value cache: one metadata record plus one value per
//! slice; a response that varies puts a Vary record at the URL's key and its variants at keys
//! derived from the request headers it names.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;

use crate::freshness::Policy;

const OBJECT_MAGIC: &[u8; 4] = b"SOM2";
const VARY_MAGIC: &[u8; 4] = b"SVR1";

/// The stored description of one cached response.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    /// Response status.
    pub status: u16,
    /// End-to-end response headers as the origin sent them (no hop-by-hop, no Content-Length).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body length in bytes.
    pub length: u64,
    /// Bytes per slice (the last slice may be shorter).
    pub slice_size: u32,
    /// Identity of this version's slices: a changed object never reads another version's slices.
    pub id: u128,
    /// Unix seconds when it was stored (or last revalidated).
    pub stored_at: u64,
    /// Its caching policy.
    pub policy: Policy,
}

/// What a metadata key holds.
#[derive(Debug, Clone)]
pub enum Record {
    /// A stored response.
    Object(Box<ObjectMeta>),
    /// The response varies on these request headers: look under the variant's key.
    Vary(Vec<String>),
}

impl ObjectMeta {
    /// Number of slices the body occupies.
    pub fn slice_count(&self) -> u64 {
        self.length.div_ceil(self.slice_size as u64)
    }

    /// Expected length of slice `idx` (0 past the end).
    pub fn slice_len(&self, idx: u64) -> u64 {
        let start = idx.saturating_mul(self.slice_size as u64);
        self.length
            .saturating_sub(start)
            .min(self.slice_size as u64)
    }

    /// Cache key of slice `idx`.
    pub fn slice_key(&self, idx: u64) -> Vec<u8> {
        slice_key(self.id, idx)
    }

    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The ETag if it is a strong one (usable in If-Range).
    pub fn strong_etag(&self) -> Option<&[u8]> {
        self.header("etag").filter(|e| is_strong_etag(e))
    }

    /// The validators to revalidate this response with (If-None-Match, If-Modified-Since).
    pub fn conditionals(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
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
    pub fn header_map(&self) -> HeaderMap {
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
    pub fn encode(&self) -> Bytes {
        let policy = self.policy.encode();
        let mut b = BytesMut::with_capacity(64 + self.headers.len() * 48 + policy.len());
        b.put_slice(OBJECT_MAGIC);
        b.put_u16_le(self.status);
        b.put_u32_le(self.slice_size);
        b.put_u64_le(self.length);
        b.put_u128_le(self.id);
        b.put_u64_le(self.stored_at);
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

    fn decode_body(mut b: &[u8]) -> Option<ObjectMeta> {
        let status = b.try_get_u16_le().ok()?;
        let slice_size = b.try_get_u32_le().ok()?;
        let length = b.try_get_u64_le().ok()?;
        let id = b.try_get_u128_le().ok()?;
        let stored_at = b.try_get_u64_le().ok()?;
        let n = b.try_get_u16_le().ok()?;
        let mut headers = Vec::with_capacity(n.min(256) as usize);
        for _ in 0..n {
            let nl = b.try_get_u16_le().ok()? as usize;
            let name = std::str::from_utf8(take(&mut b, nl)?).ok()?.to_string();
            let vl = b.try_get_u32_le().ok()? as usize;
            headers.push((name, take(&mut b, vl)?.to_vec()));
        }
        let pl = b.try_get_u32_le().ok()? as usize;
        let policy = Policy::decode(take(&mut b, pl)?)?;
        if slice_size == 0 || !b.is_empty() {
            return None;
        }
        Some(ObjectMeta {
            status,
            headers,
            length,
            slice_size,
            id,
            stored_at,
            policy,
        })
    }
}

impl Record {
    /// Serialises a Vary record.
    pub fn encode_vary(names: &[String]) -> Bytes {
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
    pub fn decode(b: &[u8]) -> Option<Record> {
        let (magic, mut rest) = (b.get(..4)?, b.get(4..)?);
        if magic == OBJECT_MAGIC {
            return ObjectMeta::decode_body(rest).map(|m| Record::Object(Box::new(m)));
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

/// The next `n` bytes of a record being decoded; `None` when it is shorter.
pub(crate) fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Some(head)
}

/// Cache key of an object's metadata record.
pub fn meta_key(cache_key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(cache_key.len() + 2);
    k.extend_from_slice(b"m:");
    k.extend_from_slice(cache_key.as_bytes());
    k
}

/// Cache key of one slice of an object version.
pub fn slice_key(id: u128, idx: u64) -> Vec<u8> {
    format!("s:{id:032x}:{idx}").into_bytes()
}

/// True for a strong entity tag (`"…"`, not `W/"…"`): the only kind that proves two responses
/// carry the same bytes.
pub fn is_strong_etag(etag: &[u8]) -> bool {
    etag.starts_with(b"\"")
}

/// Identity of an object version's slices. Only a strong ETag proves two responses carry the
/// same bytes (RFC 9111 §3.4), so only then is the identity derived (a refetch of that version
/// finds its slices); otherwise it is random, and two versions can never mix.
pub fn object_id(
    cache_key: &str,
    etag: Option<&[u8]>,
    length: Option<u64>,
    slice_size: u32,
) -> u128 {
    let Some(etag) = etag.filter(|e| is_strong_etag(e)) else {
        return rand::random();
    };
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(cache_key.as_bytes());
    h.update(b"\0e");
    h.update(etag);
    h.update(b"\0n");
    h.update(&length.unwrap_or(u64::MAX).to_le_bytes());
    h.update(&slice_size.to_le_bytes());
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freshness::Overrides;
    use http::StatusCode;

    fn sample() -> ObjectMeta {
        let mut resp = HeaderMap::new();
        resp.insert("cache-control", "max-age=60".parse().unwrap());
        ObjectMeta {
            status: 200,
            headers: vec![
                ("ETag".into(), b"\"abc\"".to_vec()),
                ("Content-Type".into(), b"application/octet-stream".to_vec()),
            ],
            length: 3 * 1024 * 1024 + 5,
            slice_size: 1 << 20,
            id: 0x1234,
            stored_at: 1_700_000_000,
            policy: Policy::new(
                StatusCode::OK,
                &resp,
                std::time::SystemTime::now(),
                Overrides::default(),
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
        assert_eq!(m.slice_count(), 4);
        assert_eq!(m.slice_len(3), 5);
        assert_eq!(m.header("etag"), Some(&b"\"abc\""[..]));
        let names = vec!["accept-encoding".to_string()];
        let Some(Record::Vary(n)) = Record::decode(&Record::encode_vary(&names)) else {
            panic!("not a vary record")
        };
        assert_eq!(n, names);
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
    fn ids_follow_strong_validators_only() {
        let a = object_id("k", Some(b"\"1\""), Some(5), 1024);
        assert_eq!(a, object_id("k", Some(b"\"1\""), Some(5), 1024));
        assert_ne!(a, object_id("k", Some(b"\"2\""), Some(5), 1024));
        assert_ne!(a, object_id("k", Some(b"\"1\""), Some(5), 2048));
        let weak = Some(&b"W/\"1\""[..]);
        assert_ne!(
            object_id("k", weak, Some(5), 1),
            object_id("k", weak, Some(5), 1)
        );
        assert_ne!(object_id("k", None, None, 1), object_id("k", None, None, 1));
    }
}
