//! A loop device over a file, for tests of raw block devices (as root).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device with 4 KiB sectors and direct IO over a file, detached on drop.
pub(crate) struct Loop(pub(crate) PathBuf);

impl Loop {
    /// Attaches a new blank file of `size` bytes in `dir`; why not, as [`Loop::attach`].
    pub(crate) fn blank(dir: &Path, size: usize) -> Result<Loop, String> {
        let backing = dir.join("loop.img");
        std::fs::write(&backing, vec![0u8; size]).map_err(|e| format!("backing file: {e}"))?;
        Loop::attach(&backing)
    }

    /// Attaches `file`; why not, when this cannot run here (not root, no `losetup`).
    pub(crate) fn attach(file: &Path) -> Result<Loop, String> {
        // SAFETY: geteuid takes nothing and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        let out = Command::new("losetup")
            .args(["-f", "--show", "--direct-io=on", "-b", "4096"])
            .arg(file)
            .output()
            .map_err(|e| format!("losetup unavailable: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Loop(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}
