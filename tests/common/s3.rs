//! A real S3 server that verifies SigV4 (`s3s-fs`), on loopback, over a temporary directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::free_port;

pub(crate) const ACCESS_KEY: &str = "AKIDSTRATATEST";
pub(crate) const SECRET_KEY: &str = "strata-test-secret-key-0123456789";

/// A running s3s-fs.
pub(crate) struct S3Server {
    child: Child,
    pub(crate) port: u16,
    pub(crate) root: tempfile::TempDir,
}

impl S3Server {
    /// Starts s3s-fs (installed by scripts/test) with one empty bucket per name.
    pub(crate) fn start(buckets: &[&str]) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).unwrap();
        }
        let port = free_port();
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs is installed by scripts/test (cargo install s3s-fs@0.14.1 --features binary)");
        super::wait_port(port, "s3s-fs");
        S3Server { child, port, root }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Writes an object straight into the server's storage.
    pub(crate) fn put_file(&self, bucket: &str, key: &str, body: &[u8]) -> PathBuf {
        let p = self.root.path().join(bucket).join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        p
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Python script with boto3 (installed by scripts/test); returns stdout.
pub(crate) fn python(script: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}
