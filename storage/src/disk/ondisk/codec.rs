//! The one little-endian codec every on-disk format is written and read with.
//!
//! A [`Reader`] never panics: reading past the end of its bytes gives `None`, so a truncated or
//! corrupt image is a decode failure, never a crash. A [`Writer`] writes into a buffer its caller
//! sized from the format's own length (`HEADER_LEN`, `encoded_len`, a block): running past the end
//! is a bug in that caller, and panics like any out-of-bounds slice.

/// Reads little-endian fields one after another from a byte slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at offset `pos` of `buf`.
    pub(crate) fn at(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    /// The next `n` bytes, or `None` when fewer are left.
    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    /// The next `u16`.
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    /// The next `u32`.
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// The next `u64`.
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// The next `u128`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn u128(&mut self) -> Option<u128> {
        self.array().map(u128::from_le_bytes)
    }
}

/// Writes little-endian fields one after another into a byte slice.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer at offset `pos` of `buf`.
    pub(crate) fn at(buf: &'a mut [u8], pos: usize) -> Self {
        Writer { buf, pos }
    }

    /// Where the next field goes.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Writes `b` as it is.
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
        self
    }

    /// Writes a `u16`.
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Writes a `u32`.
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Writes a `u64`.
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Writes a `u128`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn u128(&mut self, v: u128) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_roundtrip_little_endian() {
        let mut b = [0u8; 32];
        let mut w = Writer::at(&mut b, 1);
        w.u16(0x0102)
            .u32(0x0304_0506)
            .u64(0x0708_090a_0b0c_0d0e)
            .bytes(b"xy");
        assert_eq!(w.pos(), 17);
        assert_eq!(&b[1..3], &[0x02, 0x01]);
        assert_eq!(&b[3..7], &[0x06, 0x05, 0x04, 0x03]);
        let mut r = Reader::at(&b, 1);
        assert_eq!(r.u16(), Some(0x0102));
        assert_eq!(r.u32(), Some(0x0304_0506));
        assert_eq!(r.u64(), Some(0x0708_090a_0b0c_0d0e));
        assert_eq!(r.bytes(2), Some(&b"xy"[..]));
        let mut w = Writer::at(&mut b, 16);
        w.u128(u128::MAX - 1);
        assert_eq!(Reader::at(&b, 16).u128(), Some(u128::MAX - 1));
    }

    #[test]
    fn reading_past_the_end_is_none() {
        let b = [1u8; 6];
        let mut r = Reader::at(&b, 0);
        assert_eq!(r.u32(), Some(0x0101_0101));
        assert_eq!(r.u32(), None, "two bytes left");
        assert_eq!(r.u16(), Some(0x0101));
        assert_eq!(r.u16(), None);
        assert_eq!(Reader::at(&b, 100).u16(), None);
        assert_eq!(Reader::at(&b, usize::MAX).bytes(2), None);
    }
}
