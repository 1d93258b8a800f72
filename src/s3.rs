//! S3 buckets as origins: addressing, object-key encoding, SigV4 signing (`aws-sigv4`),
//! replicas, and the S3 error codes that need an answer of their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header;
use pingora::http::RequestHeader;
use serde::Deserialize;

use crate::route::{Endpoint, Origin};

/// How a bucket is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Addressing {
    /// `https://endpoint/bucket/key`.
    Path,
    /// `https://bucket.endpoint/key`.
    Virtual,
}

/// One bucket as written in the configuration (`routes[].s3`, `routes[].s3.replicas[]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// `endpoint`: the S3 service URL.
    pub endpoint: String,
    /// `bucket`.
    pub bucket: String,
    /// `region`.
    pub region: String,
    /// `access_key_id`; without keys, requests are unsigned (public buckets).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// `secret_access_key`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// `session_token` for temporary credentials.
    #[serde(default)]
    pub session_token: Option<String>,
    /// `addressing`: default virtual-hosted for AWS endpoints, path-style otherwise.
    #[serde(default)]
    pub addressing: Option<Addressing>,
}

/// `routes[].s3`: the primary bucket's keys, plus writes and replicas.
// The bucket fields repeat BucketConfig's: serde's `flatten` would lose `deny_unknown_fields`,
// and a misspelt key must stay a config error.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `endpoint`.
    pub endpoint: String,
    /// `bucket`.
    pub bucket: String,
    /// `region`.
    pub region: String,
    /// `access_key_id`.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// `secret_access_key`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// `session_token`.
    #[serde(default)]
    pub session_token: Option<String>,
    /// `addressing`.
    #[serde(default)]
    pub addressing: Option<Addressing>,
    /// `allow_writes`: pass PUT, DELETE and POST (multipart uploads) to the bucket (default false).
    #[serde(default)]
    pub allow_writes: bool,
    /// `replicas`: buckets tried in order when the primary cannot be reached or fails (5xx).
    #[serde(default)]
    pub replicas: Vec<BucketConfig>,
}

impl std::fmt::Debug for BucketConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs or error messages.
        f.debug_struct("BucketConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("signed", &self.access_key_id.is_some())
            .finish()
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("primary", &self.primary())
            .field("allow_writes", &self.allow_writes)
            .field("replicas", &self.replicas)
            .finish()
    }
}

impl BucketConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        Origin::parse(&self.endpoint).map_err(|e| ("endpoint", e))?;
        let valid = |c: char| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_'
        };
        if self.bucket.is_empty() || !self.bucket.chars().all(valid) {
            return Err(("bucket", format!("`{}` is not a bucket name", self.bucket)));
        }
        if self.region.trim().is_empty() {
            return Err(("region", "required (e.g. us-east-1)".into()));
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => {
                return Err(("secret_access_key", "required with access_key_id".into()))
            }
            (None, Some(_)) => {
                return Err(("access_key_id", "required with secret_access_key".into()))
            }
            _ => {}
        }
        if self.session_token.is_some() && self.access_key_id.is_none() {
            return Err((
                "session_token",
                "requires access_key_id and secret_access_key".into(),
            ));
        }
        Ok(())
    }
}

impl S3Config {
    /// The primary bucket's part of the configuration.
    pub fn primary(&self) -> BucketConfig {
        BucketConfig {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: self.session_token.clone(),
            addressing: self.addressing,
        }
    }

    /// Checks the keys; errors name the key (relative to `routes[].s3`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.primary()
            .validate()
            .map_err(|(k, m)| (k.to_string(), m))?;
        for (i, r) in self.replicas.iter().enumerate() {
            r.validate()
                .map_err(|(k, m)| (format!("replicas[{i}].{k}"), m))?;
        }
        Ok(())
    }
}

/// How long a bucket that failed is passed over.
const DOWN_FOR: Duration = Duration::from_secs(30);

/// One bucket Strata talks to.
pub struct S3Target {
    /// Where requests go (the bucket's host under virtual-hosted addressing).
    pub endpoint: Arc<Endpoint>,
    bucket: String,
    region: String,
    identity: Option<Identity>,
    path_style: bool,
    down_until: AtomicU64,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("host", &self.endpoint.origin.host_header())
            .field("bucket", &self.bucket)
            .finish()
    }
}

fn now_secs() -> u64 {
    crate::freshness::unix(SystemTime::now())
}

impl S3Target {
    fn new(cfg: &BucketConfig) -> Result<S3Target, String> {
        let mut origin = Origin::parse(&cfg.endpoint)?;
        let is_aws = origin.host.ends_with(".amazonaws.com");
        let path_style = match cfg.addressing {
            Some(Addressing::Path) => true,
            Some(Addressing::Virtual) => false,
            None => !is_aws,
        };
        if !path_style {
            origin.host = format!("{}.{}", cfg.bucket, origin.host);
        }
        origin.base_path = "/".into();
        let identity = match (&cfg.access_key_id, &cfg.secret_access_key) {
            (Some(ak), Some(sk)) => Some(
                Credentials::new(ak, sk, cfg.session_token.clone(), None, "strata-config").into(),
            ),
            _ => None,
        };
        Ok(S3Target {
            endpoint: Arc::new(Endpoint::new(origin)),
            bucket: cfg.bucket.clone(),
            region: cfg.region.clone(),
            identity,
            path_style,
            down_until: AtomicU64::new(0),
        })
    }

    /// The request path for an encoded object key path (`/key?query`).
    pub fn request_path(&self, key_path: &str) -> String {
        if self.path_style {
            format!("/{}{key_path}", self.bucket)
        } else {
            key_path.to_string()
        }
    }

    /// Addresses `req` (whose URI is a key path) to this bucket and signs it (SigV4, unsigned
    /// payload, so bodies stream). Client credentials and `x-amz-*` headers are removed first.
    pub fn prepare(&self, req: &mut RequestHeader) -> Result<(), String> {
        let key_path = req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let path = self.request_path(&key_path);
        req.set_uri(path.parse().map_err(|_| format!("bad S3 path {path}"))?);
        req.remove_header(&header::AUTHORIZATION);
        let amz: Vec<_> = req
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-amz-"))
            .cloned()
            .collect();
        for k in amz {
            req.remove_header(&k);
        }
        let host = self.endpoint.origin.host_header();
        req.insert_header(header::HOST, host.clone())
            .map_err(|e| e.to_string())?;
        let Some(identity) = &self.identity else {
            return Ok(());
        };
        let scheme = if self.endpoint.origin.tls {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{host}{path}");
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let signed_headers = [("host", host.as_str())];
        let signable = SignableRequest::new(
            req.method.as_str(),
            url,
            signed_headers.into_iter(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        for (name, value) in instructions.headers() {
            req.insert_header(name.to_string(), value.to_string())
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// True while this bucket is passed over after a failure.
    pub fn is_down(&self) -> bool {
        self.down_until.load(Ordering::Relaxed) > now_secs()
    }

    /// Passes this bucket over for a while.
    pub fn mark_down(&self) {
        self.down_until
            .store(now_secs() + DOWN_FOR.as_secs(), Ordering::Relaxed);
    }
}

/// The buckets behind an S3 route.
#[derive(Debug)]
pub struct S3Backend {
    targets: Vec<Arc<S3Target>>,
    /// Whether unsafe methods reach the bucket.
    pub allow_writes: bool,
}

impl S3Backend {
    /// Builds the targets from validated configuration.
    pub fn new(cfg: &S3Config) -> Result<S3Backend, String> {
        let mut targets = vec![Arc::new(S3Target::new(&cfg.primary())?)];
        for r in &cfg.replicas {
            targets.push(Arc::new(S3Target::new(r)?));
        }
        Ok(S3Backend {
            targets,
            allow_writes: cfg.allow_writes,
        })
    }

    /// The primary bucket.
    pub fn primary(&self) -> &S3Target {
        &self.targets[0]
    }

    /// Buckets to try for a read: healthy ones in configured order, then the rest.
    pub fn in_order(&self) -> Vec<Arc<S3Target>> {
        let (up, down): (Vec<_>, Vec<_>) = self.targets.iter().cloned().partition(|t| !t.is_down());
        up.into_iter().chain(down).collect()
    }
}

/// Encodes an object key taken from a client's path as S3 expects in a request path: every
/// byte but unreserved ones and `/` percent-encoded, once (`+` is a plus, not a space).
pub fn encode_key(client_path: &str) -> String {
    let raw: Vec<u8> = percent_encoding::percent_decode_str(client_path).collect();
    percent_encoding::percent_encode(&raw, KEY_ESCAPES).to_string()
}

/// What S3 wants escaped in a key: everything but unreserved bytes and `/`.
const KEY_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// The `<Code>` of an S3 XML error body.
pub fn error_code(body: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let start = s.find("<Code>")? + "<Code>".len();
    let end = s[start..].find("</Code>")? + start;
    Some(s[start..end].trim().to_string())
}

/// S3 codes that mean Strata's own credentials are wrong (a configuration fault, not the client's).
pub fn is_credential_error(code: &str) -> bool {
    matches!(
        code,
        "SignatureDoesNotMatch"
            | "InvalidAccessKeyId"
            | "InvalidToken"
            | "ExpiredToken"
            | "AuthorizationHeaderMalformed"
            | "InvalidSecurity"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_once_as_s3_expects() {
        assert_eq!(encode_key("a b/c+d"), "a%20b/c%2Bd");
        assert_eq!(encode_key("a%20b"), "a%20b");
        assert_eq!(encode_key("x//y"), "x//y");
        assert_eq!(encode_key("caf%C3%A9"), "caf%C3%A9");
        assert_eq!(encode_key("100%25"), "100%25");
        assert_eq!(encode_key("~user/file.tar.gz"), "~user/file.tar.gz");
    }

    #[test]
    fn error_codes() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>x</Message></Error>";
        assert_eq!(error_code(body).as_deref(), Some("SignatureDoesNotMatch"));
        assert!(is_credential_error("SignatureDoesNotMatch"));
        assert!(!is_credential_error("AccessDenied"));
        assert_eq!(error_code(b"garbage"), None);
    }

    #[test]
    fn addressing_defaults_and_paths() {
        let mut cfg = BucketConfig {
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "assets".into(),
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            addressing: None,
        };
        let t = S3Target::new(&cfg).unwrap();
        assert_eq!(t.request_path("/k/x"), "/assets/k/x");
        cfg.endpoint = "https://s3.us-east-1.amazonaws.com".into();
        let t = S3Target::new(&cfg).unwrap();
        assert_eq!(t.request_path("/k"), "/k");
        assert_eq!(t.endpoint.origin.host, "assets.s3.us-east-1.amazonaws.com");
        assert!(format!("{cfg:?}").contains("signed: false"));
    }
}
