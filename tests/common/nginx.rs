//! A real nginx (Debian's) serving a directory on loopback, optionally over TLS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::free_port;

/// A running nginx.
pub(crate) struct Nginx {
    child: Child,
    pub(crate) port: u16,
    pub(crate) dir: tempfile::TempDir,
}

/// The nginx binary, or a printed reason why a test cannot use one.
pub(crate) fn nginx_bin() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Nginx {
    /// Serves `root`; with `tls`, over HTTPS with that (cert, key) pair. Responses carry
    /// `expires 1h`.
    pub(crate) fn start(root: &Path, tls: Option<(&Path, &Path)>) -> Nginx {
        Self::start_with(root, tls, "expires 1h;")
    }

    /// Serves `root` as a Debian mirror does: Last-Modified and ETag, no lifetime.
    pub(crate) fn start_mirror(root: &Path) -> Nginx {
        Self::start_with(root, None, "")
    }

    /// Serves `root` with extra server `directives`.
    pub(crate) fn start_with(root: &Path, tls: Option<(&Path, &Path)>, directives: &str) -> Nginx {
        let bin = nginx_bin().expect("nginx is installed by scripts/test");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let (listen, certs) = match tls {
            Some((c, k)) => (
                format!("{port} ssl"),
                format!(
                    "ssl_certificate {};\n ssl_certificate_key {};",
                    c.display(),
                    k.display()
                ),
            ),
            None => (port.to_string(), String::new()),
        };
        let p = dir.path().display();
        let conf = format!(
            "daemon off; master_process off; pid {p}/nginx.pid; error_log {p}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log {p}/access.log; client_body_temp_path {p}; proxy_temp_path {p};\n\
               fastcgi_temp_path {p}; uwsgi_temp_path {p}; scgi_temp_path {p};\n\
               server {{ listen 127.0.0.1:{listen}; {certs} root {}; {directives} }} }}\n",
            root.display()
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = spawn(&bin, dir.path());
        super::wait_port(port, "nginx");
        Nginx { child, port, dir }
    }

    /// Kills the server (SIGKILL): its port refuses connections.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again, on the same port with the same configuration.
    pub(crate) fn restart(&mut self) {
        let bin = nginx_bin().expect("nginx is installed by scripts/test");
        self.child = spawn(&bin, self.dir.path());
        super::wait_port(self.port, "nginx");
    }

    /// Lines of the access log.
    pub(crate) fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

fn spawn(bin: &Path, dir: &Path) -> Child {
    Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nginx")
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a server certificate it signed for 127.0.0.1 and localhost, written into
/// `dir`: returns (ca certificate, server certificate, server key).
pub(crate) fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    super::openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=strata-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    let (cert, key) = issue(dir, "cert", "127.0.0.1", "IP:127.0.0.1,DNS:localhost");
    (dir.join("ca.pem"), cert, key)
}

/// A certificate for `cn` with subject alternative names `san` (`DNS:a.test,IP:…`), signed by
/// the test CA of `dir` (see [`test_pki`]): (`<name>.pem`, `<name>.key`).
pub(crate) fn issue(dir: &Path, name: &str, cn: &str, san: &str) -> (PathBuf, PathBuf) {
    let run = |args: &[&str]| super::openssl(dir, args);
    let (key, csr, ext, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.cnf"),
        format!("{name}.pem"),
    );
    let subj = format!("/CN={cn}");
    run(&[
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subj, "-keyout", &key, "-out", &csr,
    ]);
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &pem,
    ]);
    (dir.join(pem), dir.join(key))
}
