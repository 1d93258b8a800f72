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
use serde::Deserialize;
use serde_json::Value;

use crate::config::Dur;

/// `routes[].auth.jwt` as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Accepted algorithms (`HS256`…`EdDSA`); tokens signed otherwise are refused.
    pub algorithms: Vec<String>,
    /// Shared secret for HS* algorithms.
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM public key for RS*/PS*/ES*/EdDSA.
    #[serde(default)]
    pub public_key_file: Option<std::path::PathBuf>,
    /// JWKS document; the token's `kid` selects the key.
    #[serde(default)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// Where to look, in order: `header` (Authorization: Bearer), `query:NAME`, `header:NAME`.
    #[serde(default = "default_sources")]
    pub sources: Vec<String>,
    /// Claim name → accepted values (a scalar claim must equal one; an array must contain one).
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, Vec<Value>>,
    /// Required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud`.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf` (default 30s).
    #[serde(default)]
    pub leeway: Option<Dur>,
}

fn default_sources() -> Vec<String> {
    vec!["header".into()]
}

/// Where a token may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
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
pub struct JwtAuth {
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
pub enum Refusal {
    /// No token in any source (401).
    Missing,
    /// A token that does not verify (401).
    Invalid(String),
    /// A valid token whose claims do not pass (403).
    Forbidden(String),
}

fn parse_alg(s: &str) -> Result<Algorithm, String> {
    s.parse::<Algorithm>()
        .map_err(|_| format!("unknown algorithm `{s}` (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)"))
}

impl JwtAuth {
    /// Builds the check (key paths as given: the config loader made them absolute); errors name
    /// the offending key (relative to `auth.jwt`).
    pub fn new(cfg: &JwtConfig) -> Result<JwtAuth, (String, String)> {
        let bad = |k: &str, m: String| (k.to_string(), m);
        if cfg.algorithms.is_empty() {
            return Err(bad(
                "algorithms",
                "at least one algorithm is required".into(),
            ));
        }
        let algs = cfg
            .algorithms
            .iter()
            .map(|a| parse_alg(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("algorithms", e))?;
        let family = algs[0].family();
        if algs.iter().any(|a| a.family() != family) {
            return Err(bad(
                "algorithms",
                "algorithms must all be of one family (one key type)".into(),
            ));
        }
        let read = |k: &str, p: &Path| {
            std::fs::read(p).map_err(|e| bad(k, format!("cannot read {}: {e}", p.display())))
        };
        let given = [
            cfg.secret.is_some(),
            cfg.public_key_file.is_some(),
            cfg.jwks_file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(bad(
                "secret",
                "give exactly one of secret, public_key_file, jwks_file".into(),
            ));
        }
        let keys = if let Some(secret) = &cfg.secret {
            if family != AlgorithmFamily::Hmac {
                return Err(bad(
                    "secret",
                    "a secret only goes with HS256/384/512".into(),
                ));
            }
            if secret.len() < 16 {
                return Err(bad("secret", "must be at least 16 bytes".into()));
            }
            Keys::One(DecodingKey::from_secret(secret.as_bytes()))
        } else if let Some(path) = &cfg.public_key_file {
            let pem = read("public_key_file", path)?;
            let key = match family {
                AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
                AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
                AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
                AlgorithmFamily::Hmac => {
                    return Err(bad(
                        "public_key_file",
                        "HS* algorithms take a secret, not a key file".into(),
                    ))
                }
            }
            .map_err(|e| {
                bad(
                    "public_key_file",
                    format!("not a {family:?} public key in PEM: {e}"),
                )
            })?;
            Keys::One(key)
        } else if let Some(path) = &cfg.jwks_file {
            let json = read("jwks_file", path)?;
            let set: JwkSet = serde_json::from_slice(&json)
                .map_err(|e| bad("jwks_file", format!("not a JWKS document: {e}")))?;
            let mut by_kid = HashMap::new();
            for jwk in &set.keys {
                if let Some(kid) = &jwk.common.key_id {
                    by_kid
                        .entry(kid.clone())
                        .or_insert_with(|| DecodingKey::from_jwk(jwk).map_err(|e| e.to_string()));
                }
            }
            Keys::Set(by_kid)
        } else {
            unreachable!("exactly one key source was checked above")
        };
        let sources = cfg
            .sources
            .iter()
            .map(|s| match s.split_once(':') {
                None if s == "header" => Ok(Source::Bearer),
                Some(("query", name)) if !name.is_empty() => Ok(Source::Query(name.to_string())),
                Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                    .map(Source::Header)
                    .map_err(|_| format!("`{name}` is not a header name")),
                _ => Err(format!(
                    "unknown source `{s}` (header, query:NAME, header:NAME)"
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("sources", e))?;
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
    pub fn check(&self, req: &mut RequestHeader) -> Result<(), Refusal> {
        let (token, source) = self.find(req).ok_or(Refusal::Missing)?;
        let header =
            jsonwebtoken::decode_header(&token).map_err(|e| Refusal::Invalid(e.to_string()))?;
        let key = match &self.keys {
            Keys::One(k) => k,
            Keys::Set(by_kid) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or(Refusal::Invalid("token has no kid".into()))?;
                by_kid
                    .get(kid)
                    .ok_or(Refusal::Invalid(format!("unknown kid {kid}")))?
                    .as_ref()
                    .map_err(|e| Refusal::Invalid(e.clone()))?
            }
        };
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(&token, key, &self.validation)
                .map_err(|e| Refusal::Invalid(e.to_string()))?;
        for (name, accepted) in &self.claims {
            let ok = match data.claims.get(name) {
                Some(Value::Array(items)) => items.iter().any(|i| accepted.contains(i)),
                Some(v) => accepted.contains(v),
                None => false,
            };
            if !ok {
                return Err(Refusal::Forbidden(format!("claim {name} not accepted")));
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
