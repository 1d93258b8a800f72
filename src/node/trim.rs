//! Handing the allocator's free memory back to the system, once a second.
//!
//! The memory tier turns its values over all the time (64 KiB objects and 1 MiB slices in,
//! others out), and glibc's malloc keeps the pages of chunks freed in the middle of its heap:
//! it gives back only the heap's top. Under a Zipf load whose working set is five times the
//! memory tier, the node's heap held 160 MB of pages for 96 MB in use, about 60 MB more than
//! it needed, within reach of a memory limit sized for the configured tiers. `malloc_trim`
//! returns those pages (`MADV_DONTNEED`); when little is free it has little to do.

use std::time::Duration;

/// How often the free pages go back.
const PERIOD: Duration = Duration::from_secs(1);

/// Starts the thread that trims the heap every [`PERIOD`], for the life of the process.
pub(crate) fn start() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("strata-trim".into())
            .spawn(|| loop {
                std::thread::sleep(PERIOD);
                // SAFETY: malloc_trim only takes the allocator's own locks and releases pages
                // no allocation is using; it is safe to call from any thread at any time.
                unsafe { libc::malloc_trim(0) };
            });
        if let Err(e) = spawned {
            tracing::warn!(
                error = %e,
                "cannot start the heap trimmer; freed memory stays with the allocator"
            );
        }
    }
}
