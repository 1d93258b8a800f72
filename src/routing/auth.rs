//! JWT-guarded routes: where the token is looked for, how it is verified, which claims pass.
//!
//! Auth runs before the cache is consulted, so a cached private object is never served to a
//! client without a valid token. The token is removed from the request once checked: it is not
//! part of the cache key (the query parameter form) and is not sent to the origin.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use http::{header, HeaderName};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use pingora::http::RequestHeader;
use serde_json::Value;

use crate::config::JwtConfig;

/// Where a token may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// A query parameter.
    Query(String),
    /// A request header of its own.
    Header(HeaderName),
}

#[derive(Clone)]
enum Keys {
    One(DecodingKey),
    /// JWKS keys by `kid` (the first of a kid wins), converted once; a key that does not
    /// convert refuses the tokens that name it.
    Set(HashMap<String, Result<DecodingKey, String>>),
}

/// A configured JWT check.
#[derive(Clone)]
pub(crate) struct JwtAuth {
    keys: Keys,
    validation: Validation,
    sources: Vec<Source>,
    claims: Vec<(String, Vec<Value>)>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys or secrets.
        f.debug_struct("JwtAuth")
            .field("algorithms", &self.validation.algorithms)
            .field("sources", &self.sources)
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No token in any source (401).
    Missing,
    /// A token that does not verify (401).
    Invalid(InvalidToken),
    /// A valid token whose claim is not accepted (403).
    Forbidden {
        /// The claim's name.
        claim: String,
    },
}

/// Why a token does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidToken {
    /// The JWKS has several keys and the token names none.
    #[error("token has no kid")]
    NoKid,
    /// The token names a key the JWKS does not have.
    #[error("unknown kid {0}")]
    UnknownKid(String),
    /// The key the token names could not be converted.
    #[error("key {kid} is unusable: {reason}")]
    BadKey {
        /// The key id.
        kid: String,
        /// Why the key did not convert.
        reason: String,
    },
    /// Malformed, badly signed, expired, or of the wrong issuer or audience.
    #[error("{0}")]
    Rejected(jsonwebtoken::errors::Error),
}

/// A JWT configuration that cannot work; [`AuthError::key`] names the key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    /// No algorithm.
    #[error("at least one algorithm is required")]
    NoAlgorithm,
    /// An algorithm name jsonwebtoken does not know.
    #[error(
        "unknown algorithm `{0}` (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)"
    )]
    UnknownAlgorithm(String),
    /// Algorithms of several key types.
    #[error("algorithms must all be of one family (one key type)")]
    MixedFamilies,
    /// Not exactly one of secret, public_key_file, jwks_file.
    #[error("give exactly one of secret, public_key_file, jwks_file")]
    KeySource,
    /// A secret with non-HMAC algorithms.
    #[error("a secret only goes with HS256/384/512")]
    SecretFamily,
    /// A secret too short to resist guessing.
    #[error("must be at least 16 bytes")]
    ShortSecret,
    /// A key file with HMAC algorithms.
    #[error("HS* algorithms take a secret, not a key file")]
    KeyFileFamily,
    /// A key file that cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// `public_key_file` or `jwks_file`.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A key file that is not a public key of the algorithms' family.
    #[error("not a {family:?} public key in PEM: {source}")]
    Pem {
        /// The algorithms' family.
        family: AlgorithmFamily,
        /// jsonwebtoken's error.
        source: jsonwebtoken::errors::Error,
    },
    /// A JWKS file that is not one.
    #[error("not a JWKS document: {0}")]
    Jwks(#[source] serde_json::Error),
    /// A token source that is not `header`, `query:NAME` or `header:NAME`.
    #[error("unknown source `{0}` (header, query:NAME, header:NAME)")]
    Source(String),
    /// `header:NAME` with a NAME that is no header name.
    #[error("`{0}` is not a header name")]
    HeaderName(String),
}

impl AuthError {
    /// The key at fault, relative to `auth.jwt`.
    pub(crate) fn key(&self) -> &'static str {
        match self {
            AuthError::NoAlgorithm | AuthError::UnknownAlgorithm(_) | AuthError::MixedFamilies => {
                "algorithms"
            }
            AuthError::KeySource | AuthError::SecretFamily | AuthError::ShortSecret => "secret",
            AuthError::KeyFileFamily | AuthError::Pem { .. } => "public_key_file",
            AuthError::Read { key, .. } => key,
            AuthError::Jwks(_) => "jwks_file",
            AuthError::Source(_) | AuthError::HeaderName(_) => "sources",
        }
    }
}

impl JwtAuth {
    /// Builds the check (key paths as given: the config loader made them absolute).
    pub(crate) fn new(cfg: &JwtConfig) -> Result<JwtAuth, AuthError> {
        let algs = cfg
            .algorithms
            .iter()
            .map(|a| {
                a.parse::<Algorithm>()
                    .map_err(|_| AuthError::UnknownAlgorithm(a.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let family = algs.first().ok_or(AuthError::NoAlgorithm)?.family();
        if algs.iter().any(|a| a.family() != family) {
            return Err(AuthError::MixedFamilies);
        }
        let read = |key: &'static str, p: &Path| {
            std::fs::read(p).map_err(|source| AuthError::Read {
                key,
                path: p.to_path_buf(),
                source,
            })
        };
        let keys = match (&cfg.secret, &cfg.public_key_file, &cfg.jwks_file) {
            (Some(secret), None, None) => {
                if family != AlgorithmFamily::Hmac {
                    return Err(AuthError::SecretFamily);
                }
                if secret.len() < 16 {
                    return Err(AuthError::ShortSecret);
                }
                Keys::One(DecodingKey::from_secret(secret.as_bytes()))
            }
            (None, Some(path), None) => {
                let pem = read("public_key_file", path)?;
                let key = match family {
                    AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
                    AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
                    AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
                    AlgorithmFamily::Hmac => return Err(AuthError::KeyFileFamily),
                }
                .map_err(|source| AuthError::Pem { family, source })?;
                Keys::One(key)
            }
            (None, None, Some(path)) => {
                let json = read("jwks_file", path)?;
                let set: JwkSet = serde_json::from_slice(&json).map_err(AuthError::Jwks)?;
                let mut by_kid = HashMap::new();
                for jwk in &set.keys {
                    if let Some(kid) = &jwk.common.key_id {
                        by_kid.entry(kid.clone()).or_insert_with(|| {
                            DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())
                        });
                    }
                }
                Keys::Set(by_kid)
            }
            _ => return Err(AuthError::KeySource),
        };
        let sources = cfg
            .sources
            .iter()
            .map(|s| match s.split_once(':') {
                None if s == "header" => Ok(Source::Bearer),
                Some(("query", name)) if !name.is_empty() => Ok(Source::Query(name.to_string())),
                Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                    .map(Source::Header)
                    .map_err(|_| AuthError::HeaderName(name.to_string())),
                _ => Err(AuthError::Source(s.clone())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut validation = Validation::new(algs[0]);
        validation.algorithms = algs;
        validation.leeway = cfg.leeway.map_or(30, |d| d.0.as_secs());
        validation.validate_nbf = true;
        validation.validate_aud = cfg.audience.is_some();
        if let Some(aud) = &cfg.audience {
            validation.set_audience(&[aud]);
        }
        let mut required: HashSet<String> = ["exp".to_string()].into();
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            required.insert("iss".into());
        }
        if cfg.audience.is_some() {
            required.insert("aud".into());
        }
        validation.required_spec_claims = required;
        Ok(JwtAuth {
            keys,
            validation,
            sources,
            claims: cfg.claims.clone().into_iter().collect(),
        })
    }

    /// Finds and checks the token; on success removes it from the request.
    pub(crate) fn check(&self, req: &mut RequestHeader) -> Result<(), Refusal> {
        let (token, source) = self.find(req).ok_or(Refusal::Missing)?;
        let rejected = |e: jsonwebtoken::errors::Error| Refusal::Invalid(InvalidToken::Rejected(e));
        let header = jsonwebtoken::decode_header(&token).map_err(rejected)?;
        let key = match &self.keys {
            Keys::One(k) => k,
            Keys::Set(by_kid) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or(Refusal::Invalid(InvalidToken::NoKid))?;
                by_kid
                    .get(kid)
                    .ok_or_else(|| Refusal::Invalid(InvalidToken::UnknownKid(kid.to_string())))?
                    .as_ref()
                    .map_err(|reason| {
                        Refusal::Invalid(InvalidToken::BadKey {
                            kid: kid.to_string(),
                            reason: reason.clone(),
                        })
                    })?
            }
        };
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(&token, key, &self.validation)
                .map_err(rejected)?;
        for (name, accepted) in &self.claims {
            let ok = match data.claims.get(name) {
                Some(Value::Array(items)) => items.iter().any(|i| accepted.contains(i)),
                Some(v) => accepted.contains(v),
                None => false,
            };
            if !ok {
                return Err(Refusal::Forbidden {
                    claim: name.clone(),
                });
            }
        }
        strip(req, &source);
        Ok(())
    }

    fn find(&self, req: &RequestHeader) -> Option<(String, Source)> {
        for s in &self.sources {
            let found = match s {
                Source::Bearer => req
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        let (scheme, token) = v.trim().split_once(' ')?;
                        scheme
                            .eq_ignore_ascii_case("bearer")
                            .then(|| token.trim().to_string())
                    }),
                Source::Header(name) => req
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim().to_string()),
                Source::Query(name) => req.uri.query().and_then(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == name.as_str())
                        .map(|(_, v)| v.into_owned())
                }),
            };
            if let Some(t) = found.filter(|t| !t.is_empty()) {
                return Some((t, s.clone()));
            }
        }
        None
    }
}

/// Removes the checked token from the request: from the cache key and from the origin's view.
fn strip(req: &mut RequestHeader, source: &Source) {
    match source {
        Source::Bearer => {
            req.remove_header(&header::AUTHORIZATION);
        }
        Source::Header(name) => {
            req.remove_header(name);
        }
        Source::Query(name) => {
            let Some(q) = req.uri.query() else { return };
            let kept: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k != name.as_str())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let path = req.uri.path().to_string();
            let pq = if kept.is_empty() {
                path
            } else {
                let q = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(kept)
                    .finish();
                format!("{path}?{q}")
            };
            if let Ok(uri) = pq.parse() {
                req.set_uri(uri);
            }
        }
    }
}
