//! Telling systemd how the node is doing (`Type=notify`): `READY=1` once it serves,
//! `RELOADING=1` then `READY=1` around a reload, `STOPPING=1` when it starts draining.
//!
//! The protocol is one datagram to the socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name after `@`); without the variable (not under systemd) nothing is sent.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to systemd, if it asked to be told; failures are logged,
/// never fatal: the node serves whether or not its supervisor listens.
pub(crate) fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let target = target.as_encoded_bytes();
        match target.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            None => sock.send_to(
                state.as_bytes(),
                std::path::Path::new(std::ffi::OsStr::from_bytes(target)),
            ),
        }
    });
    if let Err(e) = sent {
        tracing::warn!(state, error = %e, "systemd notification not sent");
    }
}
