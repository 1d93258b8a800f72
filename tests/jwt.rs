//! JWT-guarded routes: each refusal, each token source, each algorithm family; refused
//! requests never reach the origin or the cache.

mod common;

use std::path::Path;

use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "0123456789abcdef-secret";

/// Private and public PEM of a fresh key (`genpkey` arguments).
fn keypair(dir: &Path, name: &str, gen: &[&str]) -> (Vec<u8>, String) {
    let key = format!("{name}.key");
    let mut args = vec!["genpkey"];
    args.extend_from_slice(gen);
    args.extend_from_slice(&["-out", &key]);
    openssl(dir, &args);
    let public = format!("{name}.pub");
    openssl(dir, &["pkey", "-in", &key, "-pubout", "-out", &public]);
    (
        std::fs::read(dir.join(&key)).unwrap(),
        dir.join(&public).display().to_string(),
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"sub": "u1", "exp": now() + 600, "iss": "https://issuer.test", "aud": "strata", "role": "admin"});
    if let (Value::Object(base), Value::Object(more)) = (&mut c, extra) {
        base.extend(more);
    }
    c
}

fn token(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).unwrap()
}

struct Keys {
    rsa: EncodingKey,
    rsa_pub_pem: Vec<u8>,
    other_rsa: EncodingKey,
    ec256: EncodingKey,
    ec384: EncodingKey,
    ed: EncodingKey,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (rsa, rsa_pub) = keypair(
        d,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (other_rsa, _) = keypair(
        d,
        "other",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (ec256, ec256_pub) = keypair(
        d,
        "ec256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let (ec384, ec384_pub) = keypair(
        d,
        "ec384",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    );
    let (ed, ed_pub) = keypair(d, "ed", &["-algorithm", "ed25519"]);
    let keys = Keys {
        rsa: EncodingKey::from_rsa_pem(&rsa).unwrap(),
        rsa_pub_pem: std::fs::read(&rsa_pub).unwrap(),
        other_rsa: EncodingKey::from_rsa_pem(&other_rsa).unwrap(),
        ec256: EncodingKey::from_ec_pem(&ec256).unwrap(),
        ec384: EncodingKey::from_ec_pem(&ec384).unwrap(),
        ed: EncodingKey::from_ed_pem(&ed).unwrap(),
    };
    let mut jwk = Jwk::from_encoding_key(&keys.rsa, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let jwks = d.join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_vec(&JwkSet { keys: vec![jwk] }).unwrap(),
    )
    .unwrap();

    let origin = TestOrigin::start().await;
    for p in ["hs", "rs", "ps", "es", "es384", "ed", "jwks"] {
        for f in ["x", "q", "h", "doc"] {
            origin.put(&format!("/{p}/{f}"), Object::new(format!("{p} {f}")));
        }
    }
    let url = origin.url();
    let route = |name: &str, auth: &str| {
        format!("  - name: {name}\n    path_prefix: /{name}/\n    origin: {url}{name}/\n    auth:\n      jwt:\n{auth}")
    };
    let mut cfg = NodeConfig::new(&url);
    cfg.routes = [
        route("hs", &format!("        algorithms: [HS256]\n        secret: {SECRET}\n        leeway: 5s\n")),
        route(
            "rs",
            &format!(
                "        algorithms: [RS256, RS384]\n        public_key_file: {rsa_pub}\n        sources: [header, \"query:token\", \"header:x-token\"]\n        issuer: https://issuer.test\n        audience: strata\n        claims:\n          role: [admin, editor]\n"
            ),
        ),
        route("ps", &format!("        algorithms: [PS256]\n        public_key_file: {rsa_pub}\n")),
        route("es", &format!("        algorithms: [ES256]\n        public_key_file: {ec256_pub}\n")),
        route("es384", &format!("        algorithms: [ES384]\n        public_key_file: {ec384_pub}\n")),
        route("ed", &format!("        algorithms: [EdDSA]\n        public_key_file: {ed_pub}\n")),
        route("jwks", &format!("        algorithms: [RS256]\n        jwks_file: {}\n", jwks.display())),
    ]
    .concat();
    let node = Strata::start(&cfg);

    let hs = EncodingKey::from_secret(SECRET.as_bytes());
    let ok = claims(json!({}));
    let bearer = |t: &str| vec![("authorization".to_string(), format!("Bearer {t}"))];
    let tampered = {
        let t = token(Algorithm::HS256, &hs, &ok);
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let evil = claims(json!({"role": "root"}));
        parts[1] = base64_url(&serde_json::to_vec(&evil).unwrap());
        parts.join(".")
    };
    let none_alg = format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        base64_url(&serde_json::to_vec(&ok).unwrap())
    );
    // Algorithm confusion: an HS256 token whose "secret" is the RSA public key.
    let confused = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(&keys.rsa_pub_pem),
        &ok,
    );
    let mut kid_header = Header::new(Algorithm::RS256);
    kid_header.kid = Some("k1".into());
    let with_kid = encode(&kid_header, &ok, &keys.rsa).unwrap();
    kid_header.kid = Some("nope".into());
    let unknown_kid = encode(&kid_header, &ok, &keys.rsa).unwrap();

    struct C {
        name: &'static str,
        path: String,
        headers: Vec<(String, String)>,
        status: u16,
    }
    let c = |name, path: &str, headers, status| C {
        name,
        path: path.to_string(),
        headers,
        status,
    };
    let cases = vec![
        c(
            "HS256 valid",
            "/hs/x",
            bearer(&token(Algorithm::HS256, &hs, &ok)),
            200,
        ),
        c("missing token", "/hs/x", vec![], 401),
        c("empty bearer", "/hs/x", bearer(""), 401),
        c("malformed token", "/hs/x", bearer("abc.def"), 401),
        c(
            "wrong secret",
            "/hs/x",
            bearer(&token(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"another-secret-0000"),
                &ok,
            )),
            401,
        ),
        c("tampered payload", "/hs/x", bearer(&tampered), 401),
        c("alg none", "/hs/x", bearer(&none_alg), 401),
        c(
            "HS512 on an HS256 route",
            "/hs/x",
            bearer(&token(Algorithm::HS512, &hs, &ok)),
            401,
        ),
        c(
            "expired",
            "/hs/x",
            bearer(&token(
                Algorithm::HS256,
                &hs,
                &claims(json!({"exp": now() - 60})),
            )),
            401,
        ),
        c(
            "expired within leeway",
            "/hs/x",
            bearer(&token(
                Algorithm::HS256,
                &hs,
                &claims(json!({"exp": now() - 2})),
            )),
            200,
        ),
        c(
            "not yet valid",
            "/hs/x",
            bearer(&token(
                Algorithm::HS256,
                &hs,
                &claims(json!({"nbf": now() + 300})),
            )),
            401,
        ),
        c(
            "no exp claim",
            "/hs/x",
            bearer(&token(Algorithm::HS256, &hs, &json!({"sub": "u"}))),
            401,
        ),
        c(
            "RS256 valid (header)",
            "/rs/x",
            bearer(&token(Algorithm::RS256, &keys.rsa, &ok)),
            200,
        ),
        c(
            "RS384 valid (second pinned algorithm)",
            "/rs/x",
            bearer(&token(Algorithm::RS384, &keys.rsa, &ok)),
            200,
        ),
        c(
            "RS512 not pinned",
            "/rs/x",
            bearer(&token(Algorithm::RS512, &keys.rsa, &ok)),
            401,
        ),
        c(
            "RS256 signed by another key",
            "/rs/x",
            bearer(&token(Algorithm::RS256, &keys.other_rsa, &ok)),
            401,
        ),
        c(
            "algorithm confusion (public key as HS256 secret)",
            "/rs/x",
            bearer(&confused),
            401,
        ),
        c(
            "wrong issuer",
            "/rs/x",
            bearer(&token(
                Algorithm::RS256,
                &keys.rsa,
                &claims(json!({"iss": "https://evil.test"})),
            )),
            401,
        ),
        c(
            "wrong audience",
            "/rs/x",
            bearer(&token(
                Algorithm::RS256,
                &keys.rsa,
                &claims(json!({"aud": "other"})),
            )),
            401,
        ),
        c(
            "claim not accepted",
            "/rs/x",
            bearer(&token(
                Algorithm::RS256,
                &keys.rsa,
                &claims(json!({"role": "viewer"})),
            )),
            403,
        ),
        c(
            "claim array containing an accepted value",
            "/rs/x",
            bearer(&token(
                Algorithm::RS256,
                &keys.rsa,
                &claims(json!({"role": ["viewer", "editor"]})),
            )),
            200,
        ),
        c(
            "claim missing",
            "/rs/x",
            bearer(&token(
                Algorithm::RS256,
                &keys.rsa,
                &json!({"exp": now() + 60, "iss": "https://issuer.test", "aud": "strata"}),
            )),
            403,
        ),
        c(
            "ES256 token on an RS route",
            "/rs/x",
            bearer(&token(Algorithm::ES256, &keys.ec256, &ok)),
            401,
        ),
        c(
            "custom header source",
            "/rs/h",
            vec![("x-token".into(), token(Algorithm::RS256, &keys.rsa, &ok))],
            200,
        ),
        c(
            "PS256 valid",
            "/ps/x",
            bearer(&token(Algorithm::PS256, &keys.rsa, &ok)),
            200,
        ),
        c(
            "ES256 valid",
            "/es/x",
            bearer(&token(Algorithm::ES256, &keys.ec256, &ok)),
            200,
        ),
        c(
            "ES384 valid",
            "/es384/x",
            bearer(&token(Algorithm::ES384, &keys.ec384, &ok)),
            200,
        ),
        c(
            "ES384 token on an ES256 route",
            "/es/x",
            bearer(&token(Algorithm::ES384, &keys.ec384, &ok)),
            401,
        ),
        c(
            "EdDSA valid",
            "/ed/x",
            bearer(&token(Algorithm::EdDSA, &keys.ed, &ok)),
            200,
        ),
        c("JWKS with a known kid", "/jwks/x", bearer(&with_kid), 200),
        c(
            "JWKS with an unknown kid",
            "/jwks/x",
            bearer(&unknown_kid),
            401,
        ),
        c(
            "JWKS token without kid",
            "/jwks/x",
            bearer(&token(Algorithm::RS256, &keys.rsa, &ok)),
            401,
        ),
        c(
            "query source on a header-only route",
            &format!("/hs/x?token={}", token(Algorithm::HS256, &hs, &ok)),
            vec![],
            401,
        ),
    ];
    let client = reqwest::Client::new();
    let mut failures = vec![];
    for case in &cases {
        let before = origin.seen().len();
        let mut rb = client.get(node.url(&case.path));
        for (k, v) in &case.headers {
            rb = rb.header(k, v);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let challenge = r.headers().get("www-authenticate").cloned();
        // The exchange ends with its body: a fill it started is then over, and not counted
        // against the next case.
        let _ = r.bytes().await;
        let reached = origin.seen().len() - before;
        if status != case.status {
            failures.push(format!(
                "{}: status {status}, want {}",
                case.name, case.status
            ));
        }
        if status == 401
            && !challenge.is_some_and(|c| c.to_str().unwrap_or("").starts_with("Bearer"))
        {
            failures.push(format!(
                "{}: 401 without WWW-Authenticate: Bearer",
                case.name
            ));
        }
        if status >= 400 && reached > 0 {
            failures.push(format!(
                "{}: a refused request reached the origin",
                case.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failing:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(cases.len() >= 25);

    // Tokens never travel to the origin.
    for s in origin.seen() {
        assert!(!s.headers.contains_key("authorization"), "{s:?}");
        assert!(!s.headers.contains_key("x-token"), "{s:?}");
        assert!(!s.target.contains("token="), "{s:?}");
    }

    // A query token is not part of the cache key: another user's token hits the same object.
    let t1 = token(Algorithm::RS256, &keys.rsa, &ok);
    let t2 = token(Algorithm::RS256, &keys.rsa, &claims(json!({"sub": "u2"})));
    let r = reqwest::get(node.url(&format!("/rs/q?token={t1}")))
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), cache_status(&r)),
        (200, "strata; fwd=uri-miss; stored".into())
    );
    // Read to the end: until then the object may still be filling.
    let _ = r.bytes().await;
    let r = reqwest::get(node.url(&format!("/rs/q?token={t2}")))
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), cache_status(&r)),
        (200, "strata; hit".into())
    );
    assert_eq!(origin.hits("/rs/q"), 1);

    // A cached private object is never served without a valid token.
    let r = client
        .get(node.url("/rs/doc"))
        .headers(hm(&bearer(&t1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "rs doc");
    for bad in [
        vec![],
        bearer("garbage"),
        bearer(&token(
            Algorithm::RS256,
            &keys.rsa,
            &claims(json!({"role": "viewer"})),
        )),
    ] {
        let r = client
            .get(node.url("/rs/doc"))
            .headers(hm(&bad))
            .send()
            .await
            .unwrap();
        assert!(r.status().as_u16() == 401 || r.status().as_u16() == 403);
        assert_ne!(r.text().await.unwrap(), "rs doc");
    }
}

fn hm(pairs: &[(String, String)]) -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

fn base64_url(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (c as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn a_bad_jwt_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.yaml");
    let write_and_check = |auth: &str| {
        std::fs::write(
            &conf,
            format!("listen: 127.0.0.1:1\ncache:\n  memory: 1MiB\nroutes:\n  - name: a\n    path_prefix: /\n    origin: http://127.0.0.1:2/\n    auth:\n      jwt:\n{auth}"),
        )
        .unwrap();
        strata_cmd(&["check"], &conf)
    };
    for (auth, key) in [
        ("        algorithms: [HS999]\n        secret: 0123456789abcdef\n", "routes[0].auth.jwt.algorithms"),
        ("        algorithms: [RS256]\n        secret: 0123456789abcdef\n", "routes[0].auth.jwt.secret"),
        ("        algorithms: [HS256]\n        secret: short\n", "routes[0].auth.jwt.secret"),
        ("        algorithms: [RS256]\n        public_key_file: /nonexistent.pem\n", "routes[0].auth.jwt.public_key_file"),
        ("        algorithms: [HS256]\n        secret: 0123456789abcdef\n        sources: [cookie]\n", "routes[0].auth.jwt.sources"),
        ("        algorithms: [HS256, RS256]\n        secret: 0123456789abcdef\n", "routes[0].auth.jwt.algorithms"),
        ("        algorithm: [HS256]\n", "algorithm"),
    ] {
        let (ok, err) = write_and_check(auth);
        assert!(!ok, "{auth}");
        assert!(err.contains(key), "{auth}: {err}");
    }
}
