//! Operator commands on the cache device: `strata inspect` and `strata format`.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::server::storage_config;

/// Prints what a cache device holds.
pub fn inspect(path: &Path) -> Result<(), ExitCode> {
    let r = strata_storage::inspect(path).map_err(|e| {
        match e {
            strata_storage::StorageError::ForeignData { path, found } => {
                eprintln!(
                    "strata: {} is not a Strata cache: it {found}",
                    path.display()
                )
            }
            e => eprintln!("strata: {e}"),
        }
        ExitCode::FAILURE
    })?;
    let sb = &r.superblock;
    let uuid: String = sb.uuid.iter().map(|b| format!("{b:02x}")).collect();
    println!("device:          {}", path.display());
    println!("format:          v{}", sb.version);
    println!("uuid:            {uuid}");
    println!("size:            {} bytes", sb.device_size);
    println!("block size:      {} bytes", sb.block_size);
    println!(
        "regions:         {} of {} bytes ({} in use, {} sealed)",
        sb.region_count, sb.region_size, r.regions_in_use, r.regions_sealed
    );
    println!(
        "items:           {} ({} removal records)",
        r.items, r.tombstones
    );
    println!("bytes:           {}", r.item_bytes);
    println!(
        "last shutdown:   {}",
        if sb.clean_shutdown == 1 {
            "clean"
        } else {
            "not clean (crash, kill, or still running): start-up scans open regions"
        }
    );
    Ok(())
}

/// Formats `cache.disk.path` as an empty cache of the configured geometry.
pub fn format(cfg: &Config) -> Result<(), ExitCode> {
    let Some(disk) = storage_config(cfg).disk else {
        eprintln!("strata: cache.disk is not configured; nothing to format");
        return Err(ExitCode::from(2));
    };
    match strata_storage::format(&disk) {
        Ok(sb) => {
            println!("formatted {}: {}", disk.path.display(), sb.describe());
            Ok(())
        }
        Err(e) => {
            eprintln!("strata: cannot format {}: {e}", disk.path.display());
            Err(ExitCode::FAILURE)
        }
    }
}
