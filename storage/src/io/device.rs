//! Opening the cache device: a preallocated file (locked) or a block device (opened
//! exclusively), with O_DIRECT.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};

/// The smallest alignment of every write, whatever the device reports: a write that covers
/// part of a filesystem block or a physical sector makes the filesystem serialise it against
/// every other direct IO of the file, or the device read, modify and write the rest.
pub(crate) const WRITE_UNIT: usize = 4096;
/// The block of a block device: items of a raw disk start on whole physical pages.
const MIN_DEVICE_BLOCK: usize = WRITE_UNIT;

/// What kind of thing the cache lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A regular file, created and preallocated by Strata.
    File,
    /// A block device (a disk, a partition, a loop device).
    Block,
}

/// An open cache device.
#[derive(Debug)]
pub struct Device {
    /// The open file descriptor.
    pub file: File,
    /// The path it was opened from.
    pub path: PathBuf,
    /// Usable size in bytes.
    pub size: u64,
    /// IO alignment for offsets, lengths and buffers.
    pub block_size: usize,
    /// File or block device.
    pub kind: DeviceKind,
    /// Whether the page cache is bypassed (O_DIRECT).
    pub direct: bool,
}

impl Device {
    /// Opens `path`; a missing path becomes a file of `file_size` bytes, preallocated.
    pub fn open(path: &Path, file_size: u64) -> Result<Device> {
        let io_err = |e| StorageError::io(path, e);
        let meta = match std::fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(e)),
        };
        if meta
            .as_ref()
            .is_some_and(|m| m.file_type().is_block_device())
        {
            return Self::open_block(path);
        }
        if meta.as_ref().is_some_and(|m| !m.is_file()) {
            return Err(StorageError::NotFileOrBlockDevice {
                path: path.to_path_buf(),
            });
        }
        if file_size < 8 * 1024 * 1024 {
            return Err(StorageError::FileTooSmall { size: file_size });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_err)?;
        }
        let (file, direct) = open_maybe_direct(path, true, 0)?;
        lock_exclusive(&file, path)?;
        let current = file.metadata().map_err(io_err)?.len();
        if current < file_size {
            preallocate(&file, file_size).map_err(io_err)?;
        }
        let block_size = file_block(&file, direct);
        Ok(Device {
            file,
            path: path.to_path_buf(),
            // An existing larger file is used only up to the configured size; the superblock
            // records the size, so a changed size is detected as another geometry.
            size: file_size,
            block_size,
            kind: DeviceKind::File,
            direct,
        })
    }

    fn open_block(path: &Path) -> Result<Device> {
        let (file, direct) = open_exclusive(path)?;
        let fd = file.as_raw_fd();
        let mut size: u64 = 0;
        // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid.
        if unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut size) } != 0 {
            return Err(StorageError::io(path, io::Error::last_os_error()));
        }
        let mut lbs: libc::c_int = 0;
        // SAFETY: BLKSSZGET writes one c_int through the pointer, which is valid.
        if unsafe { libc::ioctl(fd, BLKSSZGET, &mut lbs) } != 0 {
            return Err(StorageError::io(path, io::Error::last_os_error()));
        }
        let block_size = (lbs.max(512) as usize).max(MIN_DEVICE_BLOCK);
        Ok(Device {
            file,
            path: path.to_path_buf(),
            size,
            block_size,
            kind: DeviceKind::Block,
            direct,
        })
    }
}

// From linux/fs.h: _IOR(0x12, 114, size_t) and _IO(0x12, 104).
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKSSZGET: libc::c_ulong = 0x1268;

/// The block of a cache file: the smallest direct IO alignment its filesystem allows (512
/// bytes on most), so small items are not padded to a whole page; [`WRITE_UNIT`] where the
/// kernel does not say (before Linux 6.1). Buffered IO has no alignment of its own.
fn file_block(file: &File, direct: bool) -> usize {
    if !direct {
        return 512;
    }
    // SAFETY: an all-zero statx is a valid value of the plain-data struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is an empty C string with AT_EMPTY_PATH (the open fd itself), and statx
    // writes one struct through the pointer, which is valid.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    // Buffers are aligned to the block too, so it covers the memory alignment asked as well.
    let align = (stx.stx_dio_offset_align as usize).max(stx.stx_dio_mem_align as usize);
    let known = rc == 0 && stx.stx_mask & libc::STATX_DIOALIGN != 0 && align.is_power_of_two();
    if known {
        align.max(512)
    } else {
        WRITE_UNIT
    }
}

fn open_maybe_direct(path: &Path, create: bool, extra: i32) -> Result<(File, bool)> {
    let open = |flags: i32| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .custom_flags(flags | extra)
            .open(path)
    };
    match open(libc::O_DIRECT) {
        Ok(f) => Ok((f, true)),
        // Some filesystems (tmpfs) refuse O_DIRECT; the cache still works through the page cache.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(path = %path.display(), "O_DIRECT not supported here; using buffered IO");
            let f = open(0).map_err(|e| StorageError::io(path, e))?;
            Ok((f, false))
        }
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(StorageError::DeviceBusy {
            path: path.to_path_buf(),
            source: e,
        }),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Takes an exclusive lock on a cache file, so a second node (or `strata format`) on the same
/// file is refused while this one has it. The lock belongs to the open file description: it is
/// held by every clone of `file` (the io engine's too) and released when the last is closed.
/// A block device needs none: it is opened with O_EXCL.
///
/// A lock held by a process that just died is let go a moment after it is reaped (the kernel
/// tears an io_uring down, and closes the files it holds, in the background): a busy file is
/// retried for up to [`RELEASE_WAIT`] before it is refused, so a restart after a crash succeeds.
fn lock_exclusive(file: &File, path: &Path) -> Result<()> {
    until_let_go(|| {
        // SAFETY: plain syscall on an open fd; it touches no memory of ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(StorageError::io(path, e));
        }
        Err(StorageError::DeviceLocked {
            path: path.to_path_buf(),
            source: e,
        })
    })
}

/// Opens a block device exclusively (O_EXCL), so a mounted one or one another program holds is
/// refused. The claim of a store that just let go (a node that exited, or a store of this
/// process that was dropped) can outlive it by a moment: the kernel drops the last reference
/// an io_uring request took to the device after the request's completion is visible, and tears
/// a ring down in the background. A busy device is therefore retried (see [`until_let_go`]).
fn open_exclusive(path: &Path) -> Result<(File, bool)> {
    until_let_go(|| open_maybe_direct(path, false, libc::O_EXCL))
}

/// Runs `attempt` until it succeeds or fails otherwise than for a device in use (locked or
/// busy), every 10 ms for up to [`RELEASE_WAIT`]; then its last result stands.
fn until_let_go<T>(mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = std::time::Instant::now() + RELEASE_WAIT;
    loop {
        match attempt() {
            Err(StorageError::DeviceLocked { .. } | StorageError::DeviceBusy { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// How long a locked cache file or a busy block device is waited for before it is refused as
/// in use.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn preallocate(file: &File, size: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(size).map_err(|_| io::Error::other("size overflows off_t"))?;
    // SAFETY: plain syscall on an open fd.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // No fallocate on this filesystem: a sparse file of the right size still works.
        return file.set_len(size);
    }
    Err(err)
}
