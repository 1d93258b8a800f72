//! The HTTPS listener's certificates (`https:`): loaded from PEM files, chosen per connection by
//! the name the client asks for (SNI), and swapped whole on SIGHUP: connections already open
//! keep the certificate they started with, new ones get the new set.
//!
//! A certificate serves the names it is valid for (its subject alternative names, wildcards
//! included), checked by webpki as clients check them; a client that names none of them, or
//! none at all, gets the first certificate. `https.min_version: "1.3"` refuses clients that
//! offer no TLS 1.3 cipher suite (rustls picks 1.3 whenever a client offers it).

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};
use rustls_pki_types::{CertificateDer, ServerName};

use crate::config::{HttpsConfig, TlsVersion};

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    /// The files did not hold a certificate chain and a private key.
    #[error("no certificate chain and private key in {cert} and {key}")]
    Missing {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {why}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// The key does not sign for the certificate, or is of an unsupported kind.
    #[error("the key does not fit the certificate: {0}")]
    Key(String),
    /// The certificate is not an X.509 end-entity certificate webpki can read.
    #[error("the certificate cannot be parsed: {0}")]
    Parse(String),
}

/// One certificate with its chain and key.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
}

impl Loaded {
    /// Whether the end-entity certificate is valid for `name`.
    fn serves(&self, name: &ServerName<'_>) -> bool {
        let Some(end) = self.key.cert.first() else {
            return false;
        };
        webpki::EndEntityCert::try_from(end)
            .is_ok_and(|c| c.verify_is_valid_for_subject_name(name).is_ok())
    }
}

/// The certificates in force.
#[derive(Debug)]
struct CertSet {
    certs: Vec<Loaded>,
    tls13_only: bool,
}

/// Loads `https.certificates`; the first error names the entry (`certificates[i].cert`).
fn load_set(cfg: &HttpsConfig) -> Result<CertSet, (String, CertError)> {
    pingora::tls::install_default_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut certs = Vec::new();
    for (i, c) in cfg.certificates.iter().enumerate() {
        let at = format!("https.certificates[{i}].cert");
        let (cert, key) = (c.cert.to_string_lossy(), c.key.to_string_lossy());
        for (p, name) in [(&c.cert, "cert"), (&c.key, "key")] {
            std::fs::metadata(p).map_err(|e| {
                let why = e.to_string();
                let path = p.display().to_string();
                let key = format!("https.certificates[{i}].{name}");
                (key, CertError::Read { path, why })
            })?;
        }
        let (chain, private) = pingora::tls::load_certs_and_key_files(&cert, &key)
            .ok()
            .flatten()
            .ok_or_else(|| {
                let (cert, key) = (cert.to_string(), key.to_string());
                (at.clone(), CertError::Missing { cert, key })
            })?;
        let chain: Vec<CertificateDer<'static>> =
            chain.into_iter().map(|c| c.into_owned()).collect();
        if let Some(end) = chain.first() {
            webpki::EndEntityCert::try_from(end)
                .map_err(|e| (at.clone(), CertError::Parse(e.to_string())))?;
        }
        let key = CertifiedKey::from_der(chain, private.clone_key(), &provider).map_err(|e| {
            (
                format!("https.certificates[{i}].key"),
                CertError::Key(e.to_string()),
            )
        })?;
        certs.push(Loaded { key: Arc::new(key) });
    }
    Ok(CertSet {
        certs,
        tls13_only: cfg.min_version == TlsVersion::V1_3,
    })
}

/// Chooses the certificate of each TLS connection; [`Certificates::reload`] swaps the set.
#[derive(Debug)]
pub(crate) struct Certificates {
    set: ArcSwap<CertSet>,
}

impl Certificates {
    /// Loads the configured certificates; the error names the key at fault.
    pub(crate) fn load(cfg: &HttpsConfig) -> Result<Arc<Self>, (String, CertError)> {
        Ok(Arc::new(Certificates {
            set: ArcSwap::from_pointee(load_set(cfg)?),
        }))
    }

    /// Reads the files again (and any change to the list): new connections get the new set;
    /// on an error the running set stays.
    pub(crate) fn reload(&self, cfg: &HttpsConfig) -> Result<usize, (String, CertError)> {
        let set = load_set(cfg)?;
        let n = set.certs.len();
        self.set.store(Arc::new(set));
        Ok(n)
    }
}

/// TLS 1.3's cipher suites (RFC 8446 §B.4) are numbered 0x1301 to 0x1305.
fn is_tls13_suite(suite: u16) -> bool {
    (0x1301..=0x1305).contains(&suite)
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.set.load();
        if set.tls13_only
            && !hello
                .cipher_suites()
                .iter()
                .any(|s| is_tls13_suite(u16::from(*s)))
        {
            return None;
        }
        let wanted = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n.to_string()).ok());
        let chosen = wanted
            .and_then(|name| set.certs.iter().find(|c| c.serves(&name)))
            .or_else(|| set.certs.first());
        chosen.map(|c| c.key.clone())
    }
}
