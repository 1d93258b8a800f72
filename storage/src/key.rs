//! Stable hashing of cache keys.

/// Hash of a cache key, stable across processes and restarts (xxh3-64).
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_distinct() {
        // The disk index is rebuilt from this hash after a restart, so it must never change.
        assert_eq!(key_hash(b"strata"), key_hash(b"strata"));
        assert_ne!(key_hash(b"a"), key_hash(b"b"));
        assert_eq!(key_hash(b""), 0x2d06800538d394c2);
    }
}
