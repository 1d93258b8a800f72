//! The on-disk formats, each drawn as a byte table in its module doc, all written and read with
//! one little-endian [`codec`]:
//! - [`superblock`]: offset 0, the device's identity and geometry;
//! - [`region`]: the first block of each region, its generation and where its summary is;
//! - [`item`]: a key and its value (or a removal record), padded to the block;
//! - [`summary`]: the list of a sealed region's items, from the write unit after its last item.

/// The largest sequence number (or version) read back from a device that is believed: at ten
/// million writes a second the store takes 14,000 years to reach it, so anything above is
/// crafted or damaged, and refusing it keeps every `seq + 1` from overflowing.
pub(crate) const MAX_SEQ: u64 = 1 << 62;

pub(crate) mod codec;
pub(crate) mod item;
pub(crate) mod region;
pub(crate) mod summary;
pub(crate) mod superblock;

#[cfg(test)]
mod tests {
    //! Byte-exact images of every format, built field by field from the byte tables: caches
    //! written before the codec must still open.

    use super::item;
    use super::region::RegionHeader;
    use super::summary::{self, SummaryEntry};
    use super::superblock::Superblock;

    /// Little-endian fields laid end to end, as the tables draw them.
    fn image(fields: &[&[u8]]) -> Vec<u8> {
        fields.concat()
    }

    fn with_crc(mut b: Vec<u8>) -> Vec<u8> {
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn superblock_bytes() {
        let sb = Superblock {
            version: 1,
            block_size: 4096,
            device_size: 1 << 30,
            data_offset: 1 << 20,
            region_count: 63,
            region_size: 16 << 20,
            uuid: *b"0123456789abcdef",
            created: 1_700_000_000,
            clean_shutdown: 1,
        };
        let mut block = vec![0u8; 4096];
        sb.encode(&mut block);
        let want = with_crc(image(&[
            b"STRATAv1",
            &1u32.to_le_bytes(),
            &4096u32.to_le_bytes(),
            &(1u64 << 30).to_le_bytes(),
            &(1u64 << 20).to_le_bytes(),
            &63u32.to_le_bytes(),
            &(16u64 << 20).to_le_bytes(),
            b"0123456789abcdef",
            &1_700_000_000u64.to_le_bytes(),
            &1u32.to_le_bytes(),
        ]));
        assert_eq!(want.len(), 76);
        assert_eq!(&block[..76], &want[..]);
        assert!(block[76..].iter().all(|&b| b == 0));
    }

    #[test]
    fn region_header_bytes() {
        let h = RegionHeader {
            region: 5,
            open_seq: 0x1122_3344_5566,
            uuid: [9; 16],
            summary: Some((4000, 3)),
        };
        let mut block = vec![0u8; 4096];
        h.encode(&mut block);
        let want = with_crc(image(&[
            b"STRG",
            &5u32.to_le_bytes(),
            &0x1122_3344_5566u64.to_le_bytes(),
            &[9; 16],
            &4000u32.to_le_bytes(),
            &3u32.to_le_bytes(),
        ]));
        assert_eq!(want.len(), 44);
        assert_eq!(&block[..44], &want[..]);
    }

    #[test]
    fn summary_bytes() {
        let entries = [
            SummaryEntry {
                hash: 0xdead_beef,
                block: 1,
                blocks: 3,
                tombstone: false,
                seq: 70,
                version: 60,
            },
            SummaryEntry {
                hash: 7,
                block: 4,
                blocks: 1,
                tombstone: true,
                seq: 71,
                version: 71,
            },
        ];
        let mut out = vec![0u8; 4096];
        summary::encode(&entries, 70, &mut out);
        let want = with_crc(image(&[
            b"STSM",
            &2u32.to_le_bytes(),
            &70u64.to_le_bytes(),
            &0xdead_beefu64.to_le_bytes(),
            &1u32.to_le_bytes(),
            &3u32.to_le_bytes(),
            &70u64.to_le_bytes(),
            &60u64.to_le_bytes(),
            &7u64.to_le_bytes(),
            &4u32.to_le_bytes(),
            &(1u32 | 1 << 31).to_le_bytes(),
            &71u64.to_le_bytes(),
            &71u64.to_le_bytes(),
        ]));
        assert_eq!(want.len(), summary::encoded_len(2));
        assert_eq!(&out[..want.len()], &want[..]);
    }

    #[test]
    fn item_bytes() {
        let img = item::encode(b"key", &[b"val", b"ue"], 42, item::FLAG_TOMBSTONE, 4096);
        let head = image(&[
            b"STIT",
            &1u16.to_le_bytes(),
            &3u16.to_le_bytes(),
            &5u32.to_le_bytes(),
        ]);
        let tail = image(&[&42u64.to_le_bytes(), &42u64.to_le_bytes(), b"key", b"value"]);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(&tail);
        let want = image(&[&head, &crc.finalize().to_le_bytes(), &tail]);
        assert_eq!(img.len(), 4096);
        assert_eq!(&img.as_slice()[..want.len()], &want[..]);
        assert!(img.as_slice()[want.len()..].iter().all(|&b| b == 0));
    }
}
