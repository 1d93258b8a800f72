//! Crafted images: a cache file whose superblock, region headers, summaries or items carry valid
//! checksums but fields that do not fit the geometry. Each is refused with a precise error, or
//! read as a miss (or scanned instead), never a panic, a huge allocation or wrong bytes.
//!
//! A panic or an allocation failure aborts the whole test binary, so these tests live apart.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;
use strata_storage::{inspect, DiskStore, EngineKind, StorageError, Superblock};

const MIB: u64 = 1 << 20;
/// Bytes of the superblock's block read and rewritten (it is alone in its first 4 KiB).
const SUPERBLOCK_LEN: usize = 4096;

fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).expect("open");
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, off).expect("read");
    b
}

fn write_at(path: &Path, off: u64, b: &[u8]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    f.write_all_at(b, off).expect("write");
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Rewrites the superblock of `path` through `edit`, with a valid checksum.
fn patch_superblock(path: &Path, edit: impl FnOnce(&mut Superblock)) {
    let mut block = read_at(path, 0, SUPERBLOCK_LEN);
    let mut sb = Superblock::decode(&block, path).unwrap().unwrap();
    edit(&mut sb);
    sb.encode(&mut block);
    write_at(path, 0, &block);
}

/// The block size the cache at `path` was formatted with (512 on most filesystems).
fn block_of(path: &Path) -> u64 {
    let sb = Superblock::decode(&read_at(path, 0, SUPERBLOCK_LEN), path)
        .unwrap()
        .unwrap();
    sb.block_size as u64
}

/// The block of region `r` where the `i`th item its summary lists starts.
fn entry_block(path: &Path, r: u64, i: usize) -> u64 {
    let h = read_at(path, region_off(r), 44);
    let block = block_of(path);
    let s = read_at(path, region_off(r) + u32_at(&h, 32) as u64 * block, 4096);
    u32_at(&s, 16 + i * 32 + 8) as u64
}

/// Region `r`'s header offset (1 MiB regions after the first MiB).
fn region_off(r: u64) -> u64 {
    MIB + r * MIB
}

/// Rewrites region `r`'s header through `edit` (its 40 bytes before the crc), with a valid crc.
fn patch_header(path: &Path, r: u64, edit: impl FnOnce(&mut [u8])) {
    let mut h = read_at(path, region_off(r), 44);
    edit(&mut h[..40]);
    let crc = crc32fast::hash(&h[..40]);
    h[40..44].copy_from_slice(&crc.to_le_bytes());
    write_at(path, region_off(r), &h);
}

/// Rewrites region `r`'s summary through `edit` (given the bytes before its crc), with a valid
/// crc; returns nothing when the region has no summary.
fn patch_summary(path: &Path, r: u64, edit: impl FnOnce(&mut [u8])) {
    let h = read_at(path, region_off(r), 44);
    let (sb, sn) = (u32_at(&h, 32) as u64, u32_at(&h, 36) as u64);
    assert!(sb > 0 && sn > 0, "region {r} is sealed");
    let block = block_of(path);
    let at = region_off(r) + sb * block;
    let mut s = read_at(path, at, (sn * block) as usize);
    let end = 16 + u32_at(&s, 4) as usize * 32;
    edit(&mut s[..end]);
    let crc = crc32fast::hash(&s[..end]);
    s[end..end + 4].copy_from_slice(&crc.to_le_bytes());
    write_at(path, at, &s);
}

/// Rewrites the item at `block` of region `r` through `edit` (its 32-byte header), with a valid
/// crc.
fn patch_item(path: &Path, r: u64, block: u64, edit: impl FnOnce(&mut [u8])) {
    let at = region_off(r) + block * block_of(path);
    let mut img = read_at(path, at, 512);
    edit(&mut img[..32]);
    let body = (img[6] as usize | (img[7] as usize) << 8) + u32_at(&img, 8) as usize;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&img[0..12]);
    crc.update(&img[16..32 + body]);
    let crc = crc.finalize();
    img[12..16].copy_from_slice(&crc.to_le_bytes());
    write_at(path, at, &img);
}

/// A closed cache of 7 regions whose region 0 holds keys 0..3 (one block each) and is sealed.
async fn sealed_cache(path: &Path) -> strata_storage::DiskConfig {
    let cfg = config(path, 8 << 20, EngineKind::Psync);
    let store = DiskStore::open(&cfg).await.expect("open");
    insert_three_and_close(&store).await;
    cfg
}

/// Inserts keys 0..3 (100-byte values) and closes `store`.
async fn insert_three_and_close(store: &DiskStore) {
    for k in 0..3 {
        store
            .insert(&key(k), &value(k, 1, 100))
            .await
            .expect("insert");
    }
    store.close().await.expect("close");
}

/// Gives region `r` a header of this cache (copied from region 0's) opened at `open_seq`,
/// with no summary.
fn open_region_at(path: &Path, r: u32, open_seq: u64) {
    let mut h = read_at(path, region_off(0), 44);
    h[4..8].copy_from_slice(&r.to_le_bytes());
    h[8..16].copy_from_slice(&open_seq.to_le_bytes());
    h[32..40].fill(0);
    write_at(path, region_off(r as u64), &h);
    patch_header(path, r as u64, |_| {});
}

async fn all_present(store: &DiskStore, keys: std::ops::Range<u64>) {
    for k in keys {
        assert_eq!(
            store.get(&key(k)).await.as_deref(),
            Some(&value(k, 1, 100)[..]),
            "key {k}"
        );
    }
}

fn assert_bad_field<T: std::fmt::Debug>(res: Result<T, StorageError>, want: &str) {
    match res {
        Err(StorageError::CorruptGeometry { field, .. }) if field == want => {}
        other => panic!("{want}: expected CorruptGeometry naming it, got {other:?}"),
    }
}

#[tokio::test]
async fn inspect_of_a_zero_block_size_is_an_error() {
    let dir = scratch();
    let path = dir.path().join("zero.img");
    sealed_cache(&path).await;
    patch_superblock(&path, |sb| sb.block_size = 0);
    assert_bad_field(inspect(&path), "block_size");
}

#[tokio::test]
async fn every_bad_superblock_field_is_named() {
    let dir = scratch();
    let path = dir.path().join("sb.img");
    sealed_cache(&path).await;
    let good = Superblock::decode(&read_at(&path, 0, SUPERBLOCK_LEN), &path)
        .unwrap()
        .unwrap();
    type Edit = fn(&mut Superblock);
    let cases: [(&str, Edit); 11] = [
        ("block_size", |sb| sb.block_size = 1000),
        ("block_size", |sb| sb.block_size = 256),
        ("block_size", |sb| sb.block_size = 2 << 20),
        ("region_size", |sb| sb.region_size = 0),
        ("region_size", |sb| sb.region_size = MIB + 256),
        ("region_size", |sb| sb.region_size = 8 << 30),
        ("region_count", |sb| sb.region_count = 0),
        ("region_count", |sb| sb.region_count = u32::MAX),
        ("data_offset", |sb| sb.data_offset = 0),
        ("device_size", |sb| sb.region_count = 8),
        ("device_size", |sb| sb.device_size = 4 * MIB),
    ];
    for (field, edit) in cases {
        patch_superblock(&path, |sb| {
            *sb = good.clone();
            edit(sb);
        });
        assert_bad_field(inspect(&path), field);
    }
    patch_superblock(&path, |sb| *sb = good.clone());
    assert_eq!(inspect(&path).expect("inspect").items, 3);
}

#[tokio::test]
async fn inspect_of_a_superblock_larger_than_its_device_is_an_error() {
    let dir = scratch();
    let path = dir.path().join("larger.img");
    sealed_cache(&path).await;
    // Region 0 unsealed (so it is scanned), in regions of 1 GiB on a file of 8 MiB: every field
    // holds together, but the scan would allocate a GiB for a region the file does not hold.
    patch_header(&path, 0, |h| h[32..40].fill(0));
    patch_superblock(&path, |sb| {
        sb.region_size = 1 << 30;
        sb.region_count = 2;
        sb.device_size = MIB + (2 << 30);
    });
    assert_bad_field(inspect(&path), "device_size");
}

#[tokio::test]
async fn a_summary_outside_its_region_is_not_read() {
    let dir = scratch();
    let path = dir.path().join("hdr.img");
    let cfg = sealed_cache(&path).await;
    // A summary of 4 billion blocks, past the end of the region: the region is scanned instead.
    patch_header(&path, 0, |h| {
        h[32..36].copy_from_slice(&10u32.to_le_bytes());
        h[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
    });
    let report = inspect(&path).expect("inspect");
    assert_eq!((report.regions_sealed, report.items), (0, 3));
    let store = DiskStore::open(&cfg).await.expect("open");
    all_present(&store, 0..3).await;
}

#[tokio::test]
async fn a_summary_entry_outside_its_region_is_not_indexed() {
    let dir = scratch();
    let path = dir.path().join("entry.img");
    let cfg = sealed_cache(&path).await;
    // Key 1's entry claims 2^31 - 1 blocks: the summary is not trusted, the region scanned.
    patch_summary(&path, 0, |s| {
        let e = 16 + 32;
        s[e + 12..e + 16].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    });
    let store = DiskStore::open(&cfg).await.expect("open");
    all_present(&store, 0..3).await;
    drop(store);
    // An entry at block 2^32 - 1 (its absolute block would wrap).
    patch_summary(&path, 0, |s| {
        let e = 16 + 32;
        s[e + 8..e + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    });
    let store = DiskStore::open(&cfg).await.expect("open");
    all_present(&store, 0..3).await;
}

#[tokio::test]
async fn a_summary_count_larger_than_the_region_is_not_trusted() {
    let dir = scratch();
    let path = dir.path().join("count.img");
    let cfg = sealed_cache(&path).await;
    patch_summary(&path, 0, |s| {
        s[4..8].copy_from_slice(&u32::MAX.to_le_bytes())
    });
    let store = DiskStore::open(&cfg).await.expect("open");
    all_present(&store, 0..3).await;
}

#[tokio::test]
async fn an_item_newer_than_its_own_write_does_not_pin_its_key() {
    let dir = scratch();
    let path = dir.path().join("version.img");
    let cfg = sealed_cache(&path).await;
    // Region 0 unsealed (scanned) and key 1's item claiming version u64::MAX.
    let at = entry_block(&path, 0, 1);
    patch_header(&path, 0, |h| h[32..40].fill(0));
    patch_item(&path, 0, at, |h| {
        h[24..32].copy_from_slice(&u64::MAX.to_le_bytes())
    });
    let store = DiskStore::open(&cfg).await.expect("open");
    store.insert(&key(1), b"newer").await.expect("insert");
    assert_eq!(store.get(&key(1)).await.as_deref(), Some(&b"newer"[..]));
    drop(store);
    let store = DiskStore::open(&cfg).await.expect("reopen");
    assert_eq!(store.get(&key(1)).await.as_deref(), Some(&b"newer"[..]));
}

#[tokio::test]
async fn sequence_numbers_near_the_end_of_u64_do_not_overflow() {
    let dir = scratch();
    let path = dir.path().join("seq.img");
    let cfg = sealed_cache(&path).await;
    // Region 1 (free) given a header of this cache opened at u64::MAX.
    open_region_at(&path, 1, u64::MAX);
    let store = DiskStore::open(&cfg).await.expect("open");
    all_present(&store, 0..3).await;
    store.insert(&key(9), b"after").await.expect("insert");
    assert_eq!(store.get(&key(9)).await.as_deref(), Some(&b"after"[..]));
}

#[tokio::test]
async fn writes_after_a_header_at_the_edge_of_the_sequence_space_survive_a_restart() {
    let dir = scratch();
    let path = dir.path().join("edge.img");
    let cfg = sealed_cache(&path).await;
    // Region 1 (free) given a header of this cache opened at the largest sequence believed.
    open_region_at(&path, 1, 1 << 62);
    // Found by the image fuzz target: the store believed the header, numbered its writes past
    // what recovery believes, and lost them at the next start. Now such a record is not
    // believed: the cache starts empty under a new identity.
    let store = DiskStore::open(&cfg).await.expect("open");
    assert_eq!(store.get(&key(0)).await, None);
    store.insert(&key(9), b"after").await.expect("insert");
    store.close().await.expect("close");
    drop(store);
    let store = DiskStore::open(&cfg).await.expect("reopen");
    assert_eq!(
        store.get(&key(9)).await.as_deref(),
        Some(&b"after"[..]),
        "a write acknowledged before a clean close was lost"
    );
}

#[tokio::test]
async fn a_cache_formatted_with_4k_blocks_keeps_them() {
    let dir = scratch();
    let path = dir.path().join("4k.img");
    let cfg = config(&path, 8 << 20, EngineKind::Psync);
    let store = DiskStore::open(&cfg).await.expect("open");
    store.close().await.expect("close");
    drop(store);
    // As a cache made before items were packed into 512-byte blocks (empty, so its regions
    // read the same in either block).
    patch_superblock(&path, |sb| sb.block_size = 4096);
    let store = DiskStore::open(&cfg).await.expect("recovered, not refused");
    insert_three_and_close(&store).await;
    drop(store);
    assert_eq!(block_of(&path), 4096);
    let store = DiskStore::open(&cfg).await.expect("reopen");
    all_present(&store, 0..3).await;
    let report = inspect(&path).expect("inspect");
    assert_eq!(report.item_bytes, 3 * 4096, "one 4 KiB block each");
}

#[tokio::test]
async fn a_cache_started_anew_keeps_the_geometry_it_lays_data_out_by() {
    let dir = scratch();
    let path = dir.path().join("anew.img");
    let cfg = sealed_cache(&path).await;
    // A cache of 4 KiB blocks whose region 1 records a sequence no store writes: it starts
    // empty under a new identity, still in 4 KiB blocks (what region 0 holds is then never
    // read, whatever its blocks).
    patch_superblock(&path, |sb| sb.block_size = 4096);
    let uuid = inspect(&path).expect("inspect").superblock.uuid;
    open_region_at(&path, 1, 1 << 62);
    let store = DiskStore::open(&cfg).await.expect("open");
    insert_three_and_close(&store).await;
    drop(store);
    let sb = inspect(&path).expect("inspect").superblock;
    assert_ne!(sb.uuid, uuid, "a new identity");
    assert_eq!(sb.block_size, 4096, "the geometry the data was written in");
    let store = DiskStore::open(&cfg).await.expect("reopen");
    all_present(&store, 0..3).await;
}
