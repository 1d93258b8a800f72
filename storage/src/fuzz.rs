//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): each takes arbitrary bytes
//! to the decoders of what the store reads back from its device, and checks what must hold for
//! any input. Nothing here is part of the storage crate's interface.
//!
//! A checksum stops almost every mutated block before its fields are looked at, so each decoder
//! also runs on the input with its checksum resealed (a correct crc32 written where the format
//! keeps it): the fields behind the checksum are then what is exercised.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::disk::fuzzing::{
    item, scan_region, summary, Entry, Geometry, ItemHeader, RegionHeader, SummaryEntry,
    DATA_OFFSET, MAX_SEQ,
};
use crate::key::key_hash;
use crate::{inspect, DiskConfig, DiskStore, EngineKind, EvictionPolicy, Superblock};

const SUPERBLOCK_LEN: usize = 76;
const REGION_HEADER_LEN: usize = 44;
const HEADER_LEN: usize = item::HEADER_LEN;
const MIB: u64 = 1 << 20;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2)?.try_into().ok().map(u16::from_le_bytes)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes)
}

/// Writes the crc32 of `b[..end]` at `end`, when there is room for it.
fn seal_at(b: &mut [u8], end: usize) {
    if end.checked_add(4).is_some_and(|e| e <= b.len()) {
        let crc = crc32fast::hash(&b[..end]);
        b[end..end + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Where a summary's crc32 goes: after its `count` entries.
fn summary_end(b: &[u8]) -> Option<usize> {
    let count = u32_at(b, 4)? as usize;
    16usize.checked_add(count.checked_mul(32)?)
}

/// Reseals an item image: the crc32 over its header and body, when the body is in `b`.
fn seal_item(b: &mut [u8]) {
    let (Some(k), Some(v)) = (u16_at(b, 6), u32_at(b, 8)) else {
        return;
    };
    let body = HEADER_LEN + k as usize + v as usize;
    if let (true, Some(seq), Some(version)) = (body <= b.len(), u64_at(b, 16), u64_at(b, 24)) {
        item::set_seq(&mut b[..body], seq, version);
    }
}

/// A superblock of `geometry` (block, region size, region count) on a device that just holds it.
fn superblock_of(block: u32, region_size: u64, region_count: u32) -> Superblock {
    Superblock {
        version: 1,
        block_size: block,
        device_size: DATA_OFFSET + region_count as u64 * region_size,
        data_offset: DATA_OFFSET,
        region_count,
        region_size,
        uuid: [0; 16],
        created: 0,
        clean_shutdown: 0,
    }
}

/// Geometries at the edges of what [`Geometry::checked`] accepts, to check headers and summaries
/// against.
fn geometries() -> [Geometry; 3] {
    [
        superblock_of(4096, MIB, 7),
        superblock_of(512, 1 << 30, 4),
        superblock_of(1 << 20, MIB, 2),
    ]
    .map(|sb| Geometry::checked(&sb, Path::new("fuzz.img")).expect("a sound geometry"))
}

/// What every geometry [`Geometry::checked`] accepts guarantees: every block of every region
/// numbered by a `u32`, every region on the device, and no address computation that overflows.
fn geometry_holds(geo: &Geometry, sb: &Superblock) {
    let block = geo.block as u64;
    assert!(block.is_power_of_two() && (512..=DATA_OFFSET).contains(&block));
    assert!((MIB..=crate::MAX_REGION_SIZE).contains(&geo.region_size));
    assert!(geo.region_size.is_multiple_of(block));
    assert!(geo.region_count >= 2 && geo.region_count == sb.region_count);
    let per_region = geo.blocks_per_region();
    assert_eq!(per_region as u64 * block, geo.region_size);
    let blocks = geo.region_count as u64 * per_region as u64;
    assert!(blocks <= u32::MAX as u64 + 1, "{blocks} blocks");
    let last = geo.region_count - 1;
    let end = geo.region_offset(last).checked_add(geo.region_size);
    assert!(end.is_some_and(|end| end <= sb.device_size));
    assert_eq!(
        geo.abs_offset(geo.abs_block(last, per_region - 1)),
        geo.block_offset(last, per_region - 1)
    );
    assert!(geo.max_value_len(0) + HEADER_LEN <= geo.region_size as usize / 2);
    assert!(geo.summary_blocks(per_region as usize) as u64 <= per_region as u64 * 32);
}

fn superblock(b: &[u8]) {
    let path = Path::new("fuzz.img");
    let Ok(Some(sb)) = Superblock::decode(b, path) else {
        return;
    };
    let mut again = vec![0u8; SUPERBLOCK_LEN];
    sb.encode(&mut again);
    assert_eq!(
        &again[..],
        &b[..SUPERBLOCK_LEN],
        "{sb:?} re-encodes otherwise"
    );
    let _ = sb.describe();
    if let Ok(geo) = Geometry::checked(&sb, path) {
        geometry_holds(&geo, &sb);
    }
}

fn region_header(b: &[u8]) {
    let Some(h) = RegionHeader::decode(b) else {
        return;
    };
    let mut again = vec![0u8; REGION_HEADER_LEN];
    h.encode(&mut again);
    assert_eq!(RegionHeader::decode(&again), Some(h));
    // A summary location with one of its two fields zero means none, and is written back as
    // zeros: every other header is canonical.
    let (sb, sn) = (u32_at(b, 32), u32_at(b, 36));
    if (sb == Some(0)) == (sn == Some(0)) {
        assert_eq!(&again[..], &b[..REGION_HEADER_LEN]);
    }
    for geo in geometries() {
        if let Some((block, blocks)) = geo.summary_of(&h) {
            assert_eq!(h.summary, Some((block, blocks)));
            assert!(block >= 1 && blocks >= 1);
            assert!(block as u64 + blocks as u64 <= geo.blocks_per_region() as u64);
        }
        if geo.header_fits(&h, h.region) {
            assert!(h.region < geo.region_count && h.open_seq <= MAX_SEQ);
            assert!(
                geo.region_offset(h.region) + geo.region_size
                    <= DATA_OFFSET + geo.region_count as u64 * geo.region_size
            );
        }
    }
}

fn summary_block(b: &[u8]) {
    let open_seq = u64_at(b, 8).unwrap_or(0);
    let Some(entries) = summary::decode(b, open_seq) else {
        return;
    };
    assert_eq!(
        summary::decode(b, open_seq ^ 1),
        None,
        "another generation's"
    );
    let len = summary::encoded_len(entries.len());
    assert!(len <= b.len());
    let mut again = vec![0u8; len];
    summary::encode(&entries, open_seq, &mut again);
    assert_eq!(&again[..], &b[..len]);
    for geo in geometries() {
        // The summary as the last blocks of the last region, the farthest from its header.
        let (n, per_region) = (geo.summary_blocks(entries.len()), geo.blocks_per_region());
        if n >= per_region {
            continue;
        }
        let h = RegionHeader {
            region: geo.region_count - 1,
            open_seq,
            uuid: [0; 16],
            summary: Some((per_region - n, n)),
        };
        let (at, _) = geo.summary_of(&h).expect("a summary inside its region");
        for e in entries.iter().filter(|e| geo.entry_fits(e, &h, at)) {
            entry_holds(&geo, &h, at, e);
        }
    }
}

/// An entry a summary lists (or a scan finds) and the store accepts lies inside its region before
/// the summary, and is indexed as it is listed.
fn entry_holds(geo: &Geometry, h: &RegionHeader, summary_block: u32, e: &SummaryEntry) {
    assert!(e.block >= 1 && e.blocks >= 1);
    assert!(e.block as u64 + e.blocks as u64 <= summary_block as u64);
    assert!(summary_block <= geo.blocks_per_region());
    assert!(h.open_seq <= e.seq && e.seq <= MAX_SEQ && e.version <= e.seq);
    let abs = h.region as u64 * geo.blocks_per_region() as u64 + e.block as u64;
    assert!(abs <= u32::MAX as u64);
    assert_eq!(geo.abs_block(h.region, e.block) as u64, abs);
    let entry = Entry::new(abs as u32, e.blocks, e.version);
    assert_eq!((entry.blocks(), entry.version), (e.blocks, e.version));
    let end = geo.abs_offset(entry.block) + e.blocks as u64 * geo.block as u64;
    assert!(end <= geo.region_offset(h.region) + geo.region_size);
}

fn item_block(b: &[u8]) {
    let head = ItemHeader::decode(b);
    if let Some(h) = item::verify(b) {
        assert_eq!(Some(h), head);
        let len = h.item_len();
        assert!(len <= b.len());
        let key = item::key_of(b, &h);
        assert_eq!(key.len(), h.key_len as usize);
        let value = &b[HEADER_LEN + key.len()..len];
        let mut again = item::encode(key, &[value], h.seq, h.flags, 4096);
        item::set_seq(again.as_mut_slice(), h.seq, h.version);
        assert_eq!(&again.as_slice()[..len], &b[..len]);
        assert!(again.len() >= len && again.len().is_multiple_of(4096));
    }
    // The block as the items of a region of 512-byte blocks, after a blank header block.
    const SCAN_BLOCK: usize = 512;
    let mut region = vec![0u8; SCAN_BLOCK + b.len().next_multiple_of(SCAN_BLOCK)];
    region[SCAN_BLOCK..SCAN_BLOCK + b.len()].copy_from_slice(b);
    let open_seq = u64_at(b, 16).map_or(0, |s| s / 2);
    let mut next = 1;
    for e in scan_region(&region, SCAN_BLOCK, open_seq) {
        assert!(e.block >= next && e.blocks >= 1, "{e:?} overlaps");
        next = e.block + e.blocks;
        assert!(next as usize * SCAN_BLOCK <= region.len());
        let img = &region[e.block as usize * SCAN_BLOCK..next as usize * SCAN_BLOCK];
        let h = item::verify(img).expect("a scanned item verifies");
        assert!(open_seq <= h.seq && h.seq <= MAX_SEQ && h.version <= h.seq);
        assert_eq!(
            (h.seq, h.version, h.is_tombstone()),
            (e.seq, e.version, e.tombstone)
        );
        assert_eq!(key_hash(item::key_of(img, &h)), e.hash);
    }
}

/// The on-disk formats: a selector byte picks the superblock, a region header, a summary or an
/// item; the rest is the block. Each decoder runs on the block as given and resealed. Whatever
/// decodes re-encodes to the same bytes (the formats are canonical but for an incomplete summary
/// location), a superblock's geometry accepted by [`Geometry::checked`] addresses every block
/// without overflow, a summary entry or scanned item accepted against a geometry lies inside its
/// region, and nothing panics.
pub fn ondisk(data: &[u8]) {
    let Some((&selector, block)) = data.split_first() else {
        return;
    };
    let mut sealed = block.to_vec();
    let decode: fn(&[u8]) = match selector % 4 {
        0 => {
            seal_at(&mut sealed, SUPERBLOCK_LEN - 4);
            superblock
        }
        1 => {
            seal_at(&mut sealed, REGION_HEADER_LEN - 4);
            region_header
        }
        2 => {
            if let Some(end) = summary_end(&sealed) {
                seal_at(&mut sealed, end);
            }
            summary_block
        }
        _ => {
            seal_item(&mut sealed);
            item_block
        }
    };
    decode(block);
    decode(&sealed);
}

/// Block size, regions and size of the devices [`image`] builds: the smallest file the store
/// opens, in regions of 1 MiB.
const IMAGE_BLOCK: u64 = 4096;
const IMAGE_REGIONS: u32 = 7;
const IMAGE_SIZE: u64 = 8 * MIB;
const IMAGE_UUID: [u8; 16] = *b"strata fuzz uuid";

/// A device image held as its blocks that are not all zero.
#[derive(Default)]
struct Sparse(BTreeMap<u64, Vec<u8>>);

impl Sparse {
    fn write(&mut self, mut off: u64, mut b: &[u8]) {
        while !b.is_empty() {
            let (blk, at) = (off / IMAGE_BLOCK, (off % IMAGE_BLOCK) as usize);
            let n = (IMAGE_BLOCK as usize - at).min(b.len());
            let block = self
                .0
                .entry(blk)
                .or_insert_with(|| vec![0; IMAGE_BLOCK as usize]);
            block[at..at + n].copy_from_slice(&b[..n]);
            off += n as u64;
            b = &b[n..];
        }
    }

    fn read(&self, off: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let o = off + done as u64;
            let (blk, at) = (o / IMAGE_BLOCK, (o % IMAGE_BLOCK) as usize);
            let n = (IMAGE_BLOCK as usize - at).min(len - done);
            if let Some(block) = self.0.get(&blk) {
                out[done..done + n].copy_from_slice(&block[at..at + n]);
            }
            done += n;
        }
        out
    }

    /// Device offsets of the blocks, inside the regions, that start with `magic`.
    fn starting_with(&self, magic: &[u8; 4]) -> Vec<u64> {
        self.0
            .iter()
            .filter(|(&blk, b)| blk * IMAGE_BLOCK >= DATA_OFFSET && b.starts_with(magic))
            .map(|(&blk, _)| blk * IMAGE_BLOCK)
            .collect()
    }
}

/// The end of the region holding device offset `off`.
fn region_end(off: u64) -> u64 {
    DATA_OFFSET + ((off - DATA_OFFSET) / MIB + 1) * MIB
}

/// Reseals what the input laid over the regions where it put a format's magic: items (whose
/// body lies in their region), summaries a region header points at, region headers (given the
/// image's uuid unless `foreign_uuid`).
fn reseal(img: &mut Sparse, foreign_uuid: bool) {
    for off in img.starting_with(b"STIT") {
        let head = img.read(off, HEADER_LEN);
        let body = HEADER_LEN as u64
            + u16_at(&head, 6).unwrap_or(0) as u64
            + u32_at(&head, 8).unwrap_or(0) as u64;
        if off + body <= region_end(off) {
            let mut b = img.read(off, body as usize);
            seal_item(&mut b);
            img.write(off, &b[..HEADER_LEN]);
        }
    }
    for r in 0..IMAGE_REGIONS as u64 {
        let off = DATA_OFFSET + r * MIB;
        let mut h = img.read(off, REGION_HEADER_LEN);
        if !h.starts_with(b"STRG") {
            continue;
        }
        let (at, n) = (u32_at(&h, 32).unwrap_or(0), u32_at(&h, 36).unwrap_or(0));
        let per_region = (MIB / IMAGE_BLOCK) as u32;
        if at >= 1 && n >= 1 && at.checked_add(n).is_some_and(|e| e <= per_region) {
            let s_off = off + at as u64 * IMAGE_BLOCK;
            let head = img.read(s_off, 16);
            if let Some(end) = summary_end(&head).filter(|_| head.starts_with(b"STSM")) {
                if end + 4 <= (n as u64 * IMAGE_BLOCK) as usize {
                    let mut s = img.read(s_off, end + 4);
                    seal_at(&mut s, end);
                    img.write(s_off + end as u64, &s[end..]);
                }
            }
        }
        if !foreign_uuid {
            h[16..32].copy_from_slice(&IMAGE_UUID);
        }
        seal_at(&mut h, REGION_HEADER_LEN - 4);
        img.write(off, &h);
    }
}

/// The intact items of an image, as (key, value): what a read may return.
fn items_of(img: &Sparse) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for off in img.starting_with(b"STIT") {
        let head = img.read(off, HEADER_LEN);
        let Some(h) = ItemHeader::decode(&head) else {
            continue;
        };
        if off + h.item_len() as u64 > region_end(off) {
            continue;
        }
        let b = img.read(off, h.item_len());
        if let Some(h) = item::verify(&b) {
            let key = item::key_of(&b, &h).to_vec();
            out.push((key, b[HEADER_LEN + h.key_len as usize..].to_vec()));
        }
    }
    out
}

/// A file in memory (`/dev/shm`) when there is one, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Some(PathBuf::from("/dev/shm")).filter(|d| d.is_dir());
        let dir = shm.unwrap_or_else(std::env::temp_dir);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Scratch(dir.join(format!("strata-fuzz-{}-{n}.img", std::process::id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Takes `N` bytes off the front of `data`.
fn take<const N: usize>(data: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = data.split_first_chunk::<N>()?;
    *data = rest;
    Some(*head)
}

/// A device image built from the input, through `inspect` and recovery: an error or a working
/// store, never a panic or a huge allocation.
///
/// The input: a flags byte (bit 0: the superblock's geometry fields follow, 36 bytes as laid
/// out on disk from its version to its region size, instead of the image's own; bit 1: the last
/// shutdown was clean; bit 2: region headers keep the uuid the input gives them; bit 3: FIFO
/// eviction), then patches `offset: u32, len: u16, bytes`, each laid over the 7 regions of
/// 1 MiB (offset modulo their size). Items, summaries and region headers the input puts there
/// are resealed. A store that opens serves only intact items of the keys asked for, takes an
/// insert and a removal, closes cleanly, and opens again with both.
pub fn image(data: &[u8]) {
    let mut data = data;
    let flags = take::<1>(&mut data).map_or(0, |[f]| f);
    let mut sb = superblock_of(IMAGE_BLOCK as u32, MIB, IMAGE_REGIONS);
    sb.uuid = IMAGE_UUID;
    sb.created = 1_700_000_000;
    sb.clean_shutdown = u32::from(flags & 2 != 0);
    if let Some(fields) = (flags & 1 != 0).then(|| take::<36>(&mut data)).flatten() {
        let mut block = [0u8; SUPERBLOCK_LEN];
        sb.encode(&mut block);
        block[8..44].copy_from_slice(&fields);
        seal_at(&mut block, SUPERBLOCK_LEN - 4);
        let decoded = Superblock::decode(&block, Path::new("fuzz.img"));
        sb = decoded
            .ok()
            .flatten()
            .expect("a resealed superblock decodes");
    }
    let mut img = Sparse::default();
    let span = IMAGE_REGIONS as u64 * MIB;
    while let (Some(off), Some(len)) = (take(&mut data), take(&mut data)) {
        let off = DATA_OFFSET + u32::from_le_bytes(off) as u64 % span;
        let len = (u16::from_le_bytes(len) as usize)
            .min(data.len())
            .min((DATA_OFFSET + span - off) as usize);
        img.write(off, &data[..len]);
        data = &data[len..];
    }
    reseal(&mut img, flags & 4 != 0);
    let items = items_of(&img);

    let scratch = Scratch::new();
    let path = &scratch.0;
    {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("scratch file");
        file.set_len(IMAGE_SIZE).expect("scratch size");
        let mut block = vec![0u8; IMAGE_BLOCK as usize];
        sb.encode(&mut block);
        file.write_all_at(&block, 0).expect("superblock");
        for (blk, b) in &img.0 {
            file.write_all_at(b, blk * IMAGE_BLOCK).expect("image");
        }
    }

    if let Ok(report) = inspect(path) {
        assert_eq!(report.superblock, sb);
        assert!(report.regions_sealed <= report.regions_in_use);
        assert!(report.regions_in_use <= sb.region_count);
        // A listing holds fewer entries than its region has blocks (a summary is trusted only
        // then; a scan's items do not overlap), though a crafted summary's entries may overlap.
        let per_region = sb.region_size / sb.block_size as u64;
        assert!(report.items + report.tombstones <= report.regions_in_use as u64 * per_region);
    }

    let mut cfg = DiskConfig::new(path, IMAGE_SIZE);
    cfg.region_size = MIB;
    cfg.engine = EngineKind::Psync;
    cfg.engine_options.psync_threads = 1;
    cfg.overwrite = false;
    cfg.eviction = if flags & 8 != 0 {
        EvictionPolicy::Fifo
    } else {
        EvictionPolicy::SecondChance
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(recovered(&cfg, &items));
}

/// Opens the store of `cfg` over an image holding `items`; when it opens, checks it works.
async fn recovered(cfg: &DiskConfig, items: &[(Vec<u8>, Vec<u8>)]) {
    let Ok(store) = DiskStore::open(cfg).await else {
        return;
    };
    for (key, _) in items.iter().take(8) {
        if let Some(got) = store.get(key).await {
            assert!(
                items.iter().any(|(k, v)| k == key && v[..] == got[..]),
                "a read returned bytes no intact item of its key holds"
            );
        }
    }
    let (key, value) = (&b"fuzz-inserted"[..], &b"a value"[..]);
    store
        .insert(key, value)
        .await
        .expect("a recovered store takes an insert");
    assert_eq!(store.get(key).await.as_deref(), Some(value));
    let removed = items.first().map(|(k, _)| k.clone());
    if let Some(k) = removed.as_deref().filter(|&k| k != key) {
        store
            .remove(k)
            .await
            .expect("a recovered store takes a removal");
        assert_eq!(store.get(k).await, None);
    }
    store.close().await.expect("a recovered store closes");
    drop(store);
    let store = DiskStore::open(cfg)
        .await
        .expect("a closed store opens again");
    assert_eq!(store.get(key).await.as_deref(), Some(value));
    if let Some(k) = removed.as_deref().filter(|&k| k != key) {
        assert_eq!(store.get(k).await, None, "a removal came back");
    }
}
