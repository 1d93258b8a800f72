//! The `https:` keys: Strata's own TLS listener for clients, as plain data (the certificates
//! are read and checked when the node is built).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `https:`: a TLS listener for clients, besides `listen`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    /// `https.listen`: the address it listens on.
    pub listen: SocketAddr,
    /// `https.certificates`: certificate chains and keys (PEM); each serves the names it is
    /// valid for (chosen by SNI), the first also clients that name none of them.
    pub certificates: Vec<CertificateConfig>,
    /// `https.min_version`: the oldest TLS version accepted, `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// `https.http2`: offer HTTP/2 by ALPN beside HTTP/1.1 (default true).
    #[serde(default = "yes")]
    pub http2: bool,
}

fn yes() -> bool {
    true
}

/// `https.certificates[]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// `https.certificates[].cert`: the certificate chain, end-entity first.
    pub cert: PathBuf,
    /// `https.certificates[].key`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (and 1.3).
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}
