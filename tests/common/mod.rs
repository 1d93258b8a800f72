//! Shared harness of the end-to-end tests: a real origin, the real `strata` binary, real clients.
#![allow(dead_code, unused_imports)]

#[path = "../../storage/tests/support/loopdev.rs"]
pub(crate) mod loopdev;
pub(crate) mod nginx;
pub(crate) mod origin;
pub(crate) mod s3;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) use origin::{close_delimited_origin, generated, random_bytes, Object, TestOrigin};

/// Waits until something listens on loopback `port`; panics naming `what` after 10 s.
pub(crate) fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `openssl args` in `dir`; panics if it fails.
pub(crate) fn openssl(dir: &std::path::Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success(), "openssl {args:?} failed");
}

/// Runs `strata ARGS --config CONF`: whether it succeeded, and what it printed.
pub(crate) fn strata_cmd(args: &[&str], conf: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .arg("--config")
        .arg(conf)
        .output()
        .expect("run strata");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A free loopback port (bound and released; the proxy binds it right after).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `strata` process with its own config and cache directory.
pub(crate) struct Strata {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) log: PathBuf,
}

/// Knobs for the node a test starts.
#[derive(Clone)]
pub(crate) struct NodeConfig {
    pub(crate) memory: String,
    /// `None`: memory only.
    pub(crate) disk: Option<String>,
    pub(crate) slice: String,
    pub(crate) extra_cache: String,
    /// `cache.disk.io`.
    pub(crate) io: String,
    /// Extra `cache.disk` keys, one per line, indented by four spaces.
    pub(crate) extra_disk: String,
    /// Extra top-level YAML (e.g. a `tls:` block).
    pub(crate) extra_top: String,
    pub(crate) routes: String,
    /// `log.level`.
    pub(crate) log_level: String,
    /// `log.access`.
    pub(crate) log_access: bool,
    /// `log.format`.
    pub(crate) log_format: String,
    /// `admin.token`.
    pub(crate) admin_token: Option<String>,
}

impl NodeConfig {
    pub(crate) fn new(origin: &str) -> Self {
        NodeConfig {
            memory: "64MiB".into(),
            disk: Some("256MiB".into()),
            slice: "1MiB".into(),
            extra_cache: String::new(),
            io: "auto".into(),
            extra_disk: String::new(),
            extra_top: String::new(),
            routes: format!("  - name: test\n    path_prefix: /\n    origin: {origin}\n"),
            log_level: "info".into(),
            log_access: true,
            log_format: "text".into(),
            admin_token: None,
        }
    }

    /// The YAML of this configuration for a node on `addr`, with its admin API on `admin`.
    fn yaml(&self, addr: SocketAddr, admin: SocketAddr) -> String {
        let disk = match &self.disk {
            Some(size) => format!(
                "  disk:\n    path: cache.img\n    size: {size}\n    io: {}\n    region_size: 4MiB\n{}",
                self.io, self.extra_disk
            ),
            None => String::new(),
        };
        let token = self
            .admin_token
            .as_ref()
            .map(|t| format!("  token: {t}\n"))
            .unwrap_or_default();
        format!(
            "listen: {addr}\nadmin:\n  listen: {admin}\n{token}threads: 2\nshutdown_grace: 5s\nlog:\n  level: {}\n  access: {}\n  format: {}\n{}cache:\n  memory: {}\n{disk}  slice: {}\n{}routes:\n{}",
            self.log_level, self.log_access, self.log_format, self.extra_top, self.memory, self.slice, self.extra_cache, self.routes
        )
    }
}

impl Strata {
    /// Starts the binary and waits until its admin endpoint answers ready.
    pub(crate) fn start(cfg: &NodeConfig) -> Strata {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(cfg, dir)
    }

    /// Starts on an existing directory (to restart over the same cache file).
    pub(crate) fn start_in(cfg: &NodeConfig, dir: tempfile::TempDir) -> Strata {
        Self::start_yaml(dir, |addr, admin| cfg.yaml(addr, admin))
    }

    /// Starts on the configuration `yaml` builds for the listen and admin addresses it is
    /// given, written into `dir` (relative paths in it are relative to `dir`). A port another
    /// test took between being found free and being bound is given up for new ones.
    pub(crate) fn start_yaml(
        mut dir: tempfile::TempDir,
        yaml: impl Fn(SocketAddr, SocketAddr) -> String,
    ) -> Strata {
        for _ in 0..4 {
            match Self::launch(dir, &yaml) {
                Ok(s) => return s,
                Err((d, log)) if log.contains("Address already in use") => dir = d,
                Err((_, log)) => panic!("strata exited early: {log}"),
            }
        }
        panic!("no free ports for strata after 4 tries");
    }

    /// One start; on an early exit, the directory back and the log.
    fn launch(
        dir: tempfile::TempDir,
        yaml: &impl Fn(SocketAddr, SocketAddr) -> String,
    ) -> Result<Strata, (tempfile::TempDir, String)> {
        let port = free_port();
        // Two ports found free one after the other may be the same one (the first was let go).
        let admin_port = std::iter::repeat_with(free_port)
            .find(|&p| p != port)
            .expect("a second free port");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
        let yaml = yaml(addr, admin);
        let conf = dir.path().join("strata.yaml");
        std::fs::write(&conf, yaml).expect("write config");
        let log = dir.path().join("strata.log");
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--config")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn strata");
        let mut s = Strata {
            child,
            addr,
            admin,
            dir,
            log,
        };
        if s.wait_ready() {
            return Ok(s);
        }
        let log = s.log_text();
        let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("tempdir"));
        Err((dir, log))
    }

    /// Waits until the node serves; false when it exited instead.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if http_get_status(self.admin, "/ready") == Some(200)
                && std::net::TcpStream::connect(self.addr).is_ok()
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "strata not ready: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it holds `needle` (lines are written by a thread of their own, a moment
    /// after they happen), or as it is after 10 s.
    pub(crate) fn log_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log_text();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Peak resident set size (VmHWM) in bytes.
    pub(crate) fn peak_rss(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:") * 1024
    }

    /// Current resident set size in bytes.
    pub(crate) fn rss(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:") * 1024
    }

    /// The `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Value of the first metric line starting with `prefix` (0 when absent).
    pub(crate) async fn metric(&self, prefix: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until the metric starting with `prefix` reaches `at_least`; false on timeout.
    /// Metrics are only visible through the admin port, so this asks it every few ms.
    pub(crate) async fn wait_metric(&self, prefix: &str, at_least: f64, timeout: Duration) -> bool {
        let wait = async {
            while self.metric(prefix).await < at_least {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Sends SIGTERM and waits for the exit; returns how long it took.
    pub(crate) fn terminate(&mut self) -> Duration {
        let t = Instant::now();
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let _ = self.child.wait();
        t.elapsed()
    }

    /// Stops the node and hands back its directory (cache file included).
    pub(crate) fn stop(mut self) -> tempfile::TempDir {
        self.terminate();
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Strata {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn proc_status_kib(pid: i32, field: &str) -> u64 {
    let f = std::fs::File::open(format!("/proc/{pid}/status")).expect("proc status");
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .expect("status field")
}

/// Status of a plain GET over a fresh connection (used before the node is up).
pub(crate) fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `Cache-Status` of a response without its `ttl` parameter (which changes by the second), or "".
pub(crate) fn cache_status(r: &reqwest::Response) -> String {
    let raw = r
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    raw.split("; ")
        .filter(|p| !p.starts_with("ttl="))
        .collect::<Vec<_>>()
        .join("; ")
}

/// GET `url`, returning status, Cache-Status and body.
pub(crate) async fn get(url: &str) -> (u16, String, bytes::Bytes) {
    let r = reqwest::get(url).await.expect("request");
    let status = r.status().as_u16();
    let cs = cache_status(&r);
    let body = r.bytes().await.expect("body");
    (status, cs, body)
}
