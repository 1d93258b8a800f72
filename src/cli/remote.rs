//! The commands that talk to a running node through its admin API (`admin.listen`, with
//! `admin.token` when set): `strata purge`, `warm`, `stats` and `inspect --url`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;

/// How long the node may take to answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `method target` (with `body`) to the admin API of the node configured in `config`
/// and prints the answer; exit code 1 when the node refuses, 2 for a configuration without
/// an admin listener, 3 when the node cannot be reached.
pub(crate) fn call(config: &Path, method: &str, target: &str, body: &[u8]) -> Result<(), ExitCode> {
    let cfg = Config::load(config).map_err(|e| {
        eprintln!("strata: invalid configuration: {e}");
        ExitCode::from(2)
    })?;
    let Some(admin) = cfg.admin else {
        eprintln!(
            "strata: {}: admin.listen is not set: no admin API to talk to",
            config.display()
        );
        return Err(ExitCode::from(2));
    };
    let addr = crate::config::local_address(admin.listen);
    let answer = exchange(addr, method, target, body, admin.token.as_deref()).map_err(|e| {
        eprintln!("strata: the node's admin API at {addr} cannot be reached: {e}");
        ExitCode::from(3)
    })?;
    let (status, text) = answer;
    print!("{text}");
    if (200..300).contains(&status) {
        Ok(())
    } else {
        eprintln!("strata: the node answered {status}");
        Err(ExitCode::FAILURE)
    }
}

/// A query string of `pairs`, escaped.
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

/// One HTTP/1.1 exchange on a fresh connection: the status and the body as text.
fn exchange(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: &[u8],
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no response header"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    Ok((
        status,
        String::from_utf8_lossy(&raw[split + 4..]).into_owned(),
    ))
}
