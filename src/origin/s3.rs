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

use crate::config::{Addressing, BucketConfig, S3Config, TimeoutsConfig};
use crate::http::date::unix_now;
use crate::origin::endpoint::{Endpoint, OriginUrl, UrlError};

/// A bucket's configuration that cannot work; [`S3ConfigError::key`] names the key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum S3ConfigError {
    /// The endpoint is not an http(s) URL.
    #[error(transparent)]
    Endpoint(#[from] UrlError),
    /// Not a bucket name.
    #[error("`{0}` is not a bucket name")]
    Bucket(String),
    /// No region.
    #[error("required (e.g. us-east-1)")]
    Region,
    /// An access key without its secret.
    #[error("required with access_key_id")]
    SecretMissing,
    /// A secret without its access key.
    #[error("required with secret_access_key")]
    AccessKeyMissing,
    /// A session token without keys.
    #[error("requires access_key_id and secret_access_key")]
    TokenWithoutKeys,
}

impl S3ConfigError {
    /// The key at fault, relative to the bucket's section.
    pub(crate) fn key(&self) -> &'static str {
        match self {
            S3ConfigError::Endpoint(_) => "endpoint",
            S3ConfigError::Bucket(_) => "bucket",
            S3ConfigError::Region => "region",
            S3ConfigError::SecretMissing => "secret_access_key",
            S3ConfigError::AccessKeyMissing => "access_key_id",
            S3ConfigError::TokenWithoutKeys => "session_token",
        }
    }
}

/// A bucket of an S3 route that cannot work: which one (`None`: the primary) and why.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub(crate) struct BucketError {
    /// Index in `replicas`, or `None` for the primary bucket.
    pub(crate) replica: Option<usize>,
    /// What is wrong with it.
    pub(crate) source: S3ConfigError,
}

impl BucketError {
    /// The key at fault, relative to `routes[].s3`.
    pub(crate) fn key(&self) -> String {
        match self.replica {
            Some(i) => format!("replicas[{i}].{}", self.source.key()),
            None => self.source.key().to_string(),
        }
    }
}

/// Why a request could not be signed for a bucket.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignError {
    /// The request path is not a valid URI.
    #[error("bad S3 path {0}")]
    Path(String),
    /// A header could not be set.
    #[error("cannot set a header: {0}")]
    Header(#[source] Box<pingora::Error>),
    /// SigV4 refused the request or its parameters.
    #[error("cannot sign the request: {0}")]
    Sign(String),
}

fn check_bucket(cfg: &BucketConfig) -> Result<OriginUrl, S3ConfigError> {
    let url = OriginUrl::parse(&cfg.endpoint)?;
    let valid =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_';
    if cfg.bucket.is_empty() || !cfg.bucket.chars().all(valid) {
        return Err(S3ConfigError::Bucket(cfg.bucket.clone()));
    }
    if cfg.region.trim().is_empty() {
        return Err(S3ConfigError::Region);
    }
    match (&cfg.access_key_id, &cfg.secret_access_key) {
        (Some(_), None) => return Err(S3ConfigError::SecretMissing),
        (None, Some(_)) => return Err(S3ConfigError::AccessKeyMissing),
        _ => {}
    }
    if cfg.session_token.is_some() && cfg.access_key_id.is_none() {
        return Err(S3ConfigError::TokenWithoutKeys);
    }
    Ok(url)
}

/// How long a bucket that failed is passed over.
const DOWN_FOR: Duration = Duration::from_secs(30);

/// One bucket Strata talks to.
pub(crate) struct S3Target {
    /// Where requests go (the bucket's host under virtual-hosted addressing).
    pub(crate) endpoint: Arc<Endpoint>,
    bucket: String,
    region: String,
    identity: Option<Identity>,
    path_style: bool,
    down_until: AtomicU64,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("host", &self.endpoint.url.host_header())
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl S3Target {
    fn new(cfg: &BucketConfig, timeouts: TimeoutsConfig) -> Result<S3Target, S3ConfigError> {
        let mut origin = check_bucket(cfg)?;
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
            endpoint: Arc::new(Endpoint::new(origin, timeouts)),
            bucket: cfg.bucket.clone(),
            region: cfg.region.clone(),
            identity,
            path_style,
            down_until: AtomicU64::new(0),
        })
    }

    /// The request path for an encoded object key path (`/key?query`).
    pub(crate) fn request_path(&self, key_path: &str) -> String {
        if self.path_style {
            format!("/{}{key_path}", self.bucket)
        } else {
            key_path.to_string()
        }
    }

    /// Addresses `req` (whose URI is a key path) to this bucket and signs it (SigV4, unsigned
    /// payload, so bodies stream). Client credentials and `x-amz-*` headers are removed first.
    pub(crate) fn prepare(&self, req: &mut RequestHeader) -> Result<(), SignError> {
        let key_path = req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let path = self.request_path(&key_path);
        req.set_uri(path.parse().map_err(|_| SignError::Path(path.clone()))?);
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
        let host = self.endpoint.url.host_header();
        req.insert_header(header::HOST, host.clone())
            .map_err(SignError::Header)?;
        let Some(identity) = &self.identity else {
            return Ok(());
        };
        let scheme = if self.endpoint.url.tls {
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
            .map_err(|e| SignError::Sign(e.to_string()))?
            .into();
        let signed_headers = [("host", host.as_str())];
        let signable = SignableRequest::new(
            req.method.as_str(),
            url,
            signed_headers.into_iter(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| SignError::Sign(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| SignError::Sign(e.to_string()))?
            .into_parts();
        for (name, value) in instructions.headers() {
            req.insert_header(name.to_string(), value.to_string())
                .map_err(SignError::Header)?;
        }
        Ok(())
    }

    /// True while this bucket is passed over after a failure.
    pub(crate) fn is_down(&self) -> bool {
        self.down_until.load(Ordering::Relaxed) > unix_now()
    }

    /// Passes this bucket over for a while.
    pub(crate) fn mark_down(&self) {
        self.down_until
            .store(unix_now() + DOWN_FOR.as_secs(), Ordering::Relaxed);
    }
}

/// The buckets behind an S3 route.
#[derive(Debug)]
pub(crate) struct S3Backend {
    targets: Vec<Arc<S3Target>>,
    /// Whether unsafe methods reach the bucket.
    pub(crate) allow_writes: bool,
}

impl S3Backend {
    /// Builds the targets from validated configuration.
    pub(crate) fn new(cfg: &S3Config, timeouts: TimeoutsConfig) -> Result<S3Backend, BucketError> {
        let primary = S3Target::new(&cfg.primary(), timeouts).map_err(|source| BucketError {
            replica: None,
            source,
        })?;
        let mut targets = vec![Arc::new(primary)];
        for (i, r) in cfg.replicas.iter().enumerate() {
            let t = S3Target::new(r, timeouts).map_err(|source| BucketError {
                replica: Some(i),
                source,
            })?;
            targets.push(Arc::new(t));
        }
        Ok(S3Backend {
            targets,
            allow_writes: cfg.allow_writes,
        })
    }

    /// The primary bucket.
    pub(crate) fn primary(&self) -> &S3Target {
        &self.targets[0]
    }

    /// Whether requests are signed with Strata's own credentials (any bucket has keys).
    pub(crate) fn is_signed(&self) -> bool {
        self.targets.iter().any(|t| t.identity.is_some())
    }

    /// Buckets to try for a read: healthy ones in configured order, then the rest.
    pub(crate) fn in_order(&self) -> Vec<Arc<S3Target>> {
        let (up, down): (Vec<_>, Vec<_>) = self.targets.iter().cloned().partition(|t| !t.is_down());
        up.into_iter().chain(down).collect()
    }
}

/// Encodes an object key taken from a client's path as S3 expects in a request path: every
/// byte but unreserved ones and `/` percent-encoded, once (`+` is a plus, not a space).
pub(crate) fn encode_key(client_path: &str) -> String {
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
pub(crate) fn error_code(body: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let start = s.find("<Code>")? + "<Code>".len();
    let end = s[start..].find("</Code>")? + start;
    Some(s[start..end].trim().to_string())
}

/// S3 codes that mean Strata's own credentials are wrong (a configuration fault, not the client's).
pub(crate) fn is_credential_error(code: &str) -> bool {
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
        let t = S3Target::new(&cfg, TimeoutsConfig::default()).unwrap();
        assert_eq!(t.request_path("/k/x"), "/assets/k/x");
        cfg.endpoint = "https://s3.us-east-1.amazonaws.com".into();
        let t = S3Target::new(&cfg, TimeoutsConfig::default()).unwrap();
        assert_eq!(t.request_path("/k"), "/k");
        assert_eq!(t.endpoint.url.host, "assets.s3.us-east-1.amazonaws.com");
        assert!(format!("{cfg:?}").contains("signed: false"));
    }
}
