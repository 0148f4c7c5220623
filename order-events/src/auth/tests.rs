use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::*;

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";
const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/rsa-private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/rsa-public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/ec-private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/ec-public.pem");
const JWKS: &str = include_str!("../../tests/fixtures/jwks.json");

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn args() -> AuthArgs {
    AuthArgs {
        mode: Some(AuthMode::Jwt),
        jwt_jwks_refresh: Duration::from_secs(300),
        jwt_leeway: Duration::from_secs(30),
        ..AuthArgs::default()
    }
}

async fn hs256_auth(configure: impl FnOnce(&mut AuthArgs)) -> Arc<Authenticator> {
    let mut args = args();
    args.jwt_secret = Some(SECRET.into());
    configure(&mut args);
    Authenticator::from_args(&args, AuthMode::Jwt, CancellationToken::new())
        .await
        .unwrap()
}

fn sign(algorithm: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: serde_json::Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn hs256(claims: serde_json::Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn valid(extra: serde_json::Value) -> serde_json::Value {
    let mut claims = json!({"sub": "user-1", "exp": now() + 600});
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    claims
}

#[tokio::test]
async fn hs256_token_grants_its_scopes_and_customer() {
    let auth = hs256_auth(|_| {}).await;
    let principal = auth
        .verify(&hs256(valid(
            json!({"scope": "orders:read orders:write", "customer_id": "c-1"}),
        )))
        .unwrap();
    assert_eq!(principal.customer.as_deref(), Some("c-1"));
    assert!(principal.scopes.read && principal.scopes.write && !principal.scopes.read_all);
    assert_eq!(principal.read_grant().unwrap().customer.as_deref(), Some("c-1"));
    assert_eq!(principal.write_grant().unwrap().customer.as_deref(), Some("c-1"));

    let principal = auth.verify(&hs256(valid(json!({"scp": ["orders:read:all"]})))).unwrap();
    assert_eq!(
        principal.read_grant().unwrap(),
        Grant {
            customer: None,
            expires_at: principal.expires_at
        }
    );
    assert!(matches!(
        principal.write_grant(),
        Err(AuthError::Forbidden { scope: SCOPE_WRITE, .. })
    ));
}

#[tokio::test]
async fn reading_everyone_needs_read_all() {
    let auth = hs256_auth(|_| {}).await;
    let principal = auth.verify(&hs256(valid(json!({"scope": "orders:read"})))).unwrap();
    assert!(matches!(
        principal.read_grant(),
        Err(AuthError::Forbidden {
            scope: SCOPE_READ_ALL,
            ..
        })
    ));
    let principal = auth.verify(&hs256(valid(json!({"scope": "orders:write"})))).unwrap();
    assert!(matches!(
        principal.read_grant(),
        Err(AuthError::Forbidden { scope: SCOPE_READ, .. })
    ));
    // A write-only back-office token may create orders for anyone.
    assert_eq!(principal.write_grant().unwrap().customer, None);
}

#[tokio::test]
async fn expiry_is_checked_with_the_leeway() {
    let auth = hs256_auth(|_| {}).await;
    let recent = auth
        .verify(&hs256(json!({"exp": now() - 10, "scope": "orders:read:all"})))
        .unwrap();
    // Accepted within the leeway, and the stream ends when the leeway runs out.
    let expected = UNIX_EPOCH + Duration::from_secs(now() - 10 + 30);
    let ends = recent.expires_at.unwrap();
    assert!(ends.duration_since(expected).unwrap_or_else(|e| e.duration()) <= Duration::from_secs(1));
    assert!(matches!(
        auth.verify(&hs256(json!({"exp": now() - 120}))),
        Err(AuthError::Expired)
    ));
    assert!(matches!(
        auth.verify(&hs256(json!({"scope": "orders:read"}))),
        Err(AuthError::Invalid(reason)) if reason.contains("exp")
    ));
    assert!(matches!(
        auth.verify(&hs256(valid(json!({"nbf": now() + 3600})))),
        Err(AuthError::Invalid(_))
    ));
}

#[tokio::test]
async fn bad_signatures_and_algorithms_are_refused() {
    let auth = hs256_auth(|_| {}).await;
    let other = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
        valid(json!({})),
    );
    assert!(matches!(auth.verify(&other), Err(AuthError::Invalid(_))));
    let rsa = sign(
        Algorithm::RS256,
        None,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        valid(json!({})),
    );
    assert!(matches!(auth.verify(&rsa), Err(AuthError::Invalid(_))));
    assert!(matches!(auth.verify("not.a.token"), Err(AuthError::Invalid(_))));
    // `alg: none` never verifies.
    let unsigned = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&valid(json!({"scope": "orders:read:all"})).to_string())
    );
    assert!(matches!(auth.verify(&unsigned), Err(AuthError::Invalid(_))));
}

fn b64(text: &str) -> String {
    use std::fmt::Write;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            let _ = out.write_char(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_set() {
    let auth = hs256_auth(|args| {
        args.jwt_issuer = Some("https://idp.example".into());
        args.jwt_audience = Some("orders".into());
    })
    .await;
    let good = hs256(valid(json!({"iss": "https://idp.example", "aud": "orders"})));
    assert!(auth.verify(&good).is_ok());
    for claims in [
        valid(json!({"iss": "https://evil.example", "aud": "orders"})),
        valid(json!({"iss": "https://idp.example", "aud": "billing"})),
        valid(json!({"aud": "orders"})),
        valid(json!({"iss": "https://idp.example"})),
    ] {
        assert!(matches!(auth.verify(&hs256(claims)), Err(AuthError::Invalid(_))));
    }
}

#[tokio::test]
async fn rs256_and_es256_public_key_files_verify_their_tokens() {
    let dir = std::env::temp_dir().join(format!("sse-orders-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, public, algorithm, private) in [
        (
            "rsa.pem",
            RSA_PUBLIC,
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        ),
        (
            "ec.pem",
            EC_PUBLIC,
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, public).unwrap();
        let mut args = args();
        args.jwt_public_key_file = Some(path);
        let auth = Authenticator::from_args(&args, AuthMode::Jwt, CancellationToken::new())
            .await
            .unwrap();
        let token = sign(algorithm, None, &private, valid(json!({"scope": "orders:read:all"})));
        assert!(auth.verify(&token).unwrap().scopes.read_all, "{name}");
        // The same claims signed as HS256 with the public key as secret are refused.
        let confused = sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(public),
            valid(json!({"scope": "orders:read:all"})),
        );
        assert!(auth.verify(&confused).is_err(), "{name}");
    }
    let mut args = args();
    args.jwt_public_key_file = Some(dir.join("missing.pem"));
    let error = Authenticator::from_args(&args, AuthMode::Jwt, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--jwt-public-key-file"), "{error}");
    std::fs::remove_dir_all(dir).unwrap();
}

async fn serve_jwks(body: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/jwks.json"), hits)
}

#[tokio::test]
async fn jwks_keys_verify_by_kid_and_unknown_kids_refresh_at_most_every_30s() {
    use std::sync::atomic::Ordering;
    let (url, hits) = serve_jwks(JWKS).await;
    let mut args = args();
    args.jwt_jwks_url = Some(url);
    let stop = CancellationToken::new();
    let auth = Authenticator::from_args(&args, AuthMode::Jwt, stop.clone())
        .await
        .unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let ec = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    let claims = valid(json!({"scope": "orders:read", "customer_id": "c-9"}));
    assert!(
        auth.verify(&sign(Algorithm::RS256, Some("rsa-test"), &rsa, claims.clone()))
            .is_ok()
    );
    assert!(
        auth.verify(&sign(Algorithm::ES256, Some("ec-test"), &ec, claims.clone()))
            .is_ok()
    );
    // A key used under another key's id, a missing kid in a two-key set, an unknown kid.
    assert!(
        auth.verify(&sign(Algorithm::RS256, Some("ec-test"), &rsa, claims.clone()))
            .is_err()
    );
    assert!(
        auth.verify(&sign(Algorithm::RS256, None, &rsa, claims.clone()))
            .is_err()
    );
    for _ in 0..5 {
        assert!(matches!(
            auth.verify(&sign(Algorithm::RS256, Some("rotated"), &rsa, claims.clone())),
            Err(AuthError::Invalid(_))
        ));
    }
    // One early refresh for all five unknown kids.
    crate::testing::eventually(Duration::from_secs(5), "one early JWKS refresh", || {
        let hits = hits.clone();
        async move { hits.load(Ordering::SeqCst) == 2 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    stop.cancel();
}

#[tokio::test]
async fn unreachable_jwks_answers_unavailable_until_loaded() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    drop(listener);
    let mut args = args();
    args.jwt_jwks_url = Some(url);
    let stop = CancellationToken::new();
    let auth = Authenticator::from_args(&args, AuthMode::Jwt, stop.clone())
        .await
        .unwrap();
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let token = sign(Algorithm::RS256, Some("rsa-test"), &rsa, valid(json!({})));
    let error = auth.verify(&token).unwrap_err();
    assert!(matches!(error, AuthError::KeysUnavailable));
    assert_eq!(error.problem().status, 503);
    stop.cancel();
}

#[tokio::test]
async fn start_fails_naming_the_missing_or_conflicting_flags() {
    let error = Authenticator::from_args(&args(), AuthMode::Jwt, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("--jwt-secret, --jwt-public-key-file or --jwt-jwks-url")
    );
    let mut both = args();
    both.jwt_secret = Some(SECRET.into());
    both.jwt_jwks_url = Some("http://127.0.0.1:1/jwks".into());
    let error = Authenticator::from_args(&both, AuthMode::Jwt, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--jwt-secret, --jwt-jwks-url"), "{error}");
    let mut weak = args();
    weak.jwt_secret = Some("short".into());
    assert!(matches!(
        Authenticator::from_args(&weak, AuthMode::Jwt, CancellationToken::new()).await,
        Err(AuthConfigError::WeakSecret)
    ));
    // No flag at all: the binary's default decides; `none` needs no key.
    let mut unset = args();
    unset.mode = None;
    let open = Authenticator::from_args(&unset, AuthMode::None, CancellationToken::new())
        .await
        .unwrap();
    assert!(!open.is_enabled());
    assert_eq!(open.authenticate(&HeaderMap::new(), None).unwrap(), Principal::anyone());
}

#[test]
fn token_comes_from_header_then_query_then_cookie() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_static("theme=dark; access_token=from-cookie"),
    );
    assert_eq!(bearer_token(&headers, None).unwrap().as_deref(), Some("from-cookie"));
    assert_eq!(
        bearer_token(&headers, Some("customerId=a&access_token=from%2Equery"))
            .unwrap()
            .as_deref(),
        Some("from.query")
    );
    headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  from-header "));
    assert_eq!(
        bearer_token(&headers, Some("access_token=q")).unwrap().as_deref(),
        Some("from-header")
    );
    headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwdw=="));
    assert!(matches!(bearer_token(&headers, None), Err(AuthError::Invalid(_))));
    headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"));
    headers.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
    assert!(bearer_token(&headers, None).is_err());
    assert_eq!(bearer_token(&HeaderMap::new(), Some("access_token=")).unwrap(), None);
}

#[tokio::test]
async fn refusals_are_problems_with_a_bearer_challenge() {
    let auth = hs256_auth(|_| {}).await;
    let missing = auth.authenticate(&HeaderMap::new(), None).unwrap_err().problem();
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.extra_headers(),
        vec![("www-authenticate", "Bearer realm=\"sse-orders\"".to_owned())]
    );
    let expired = auth.verify(&hs256(json!({"exp": now() - 600}))).unwrap_err().problem();
    assert_eq!(expired.status, 401);
    assert!(expired.extra_headers()[0].1.contains("error=\"invalid_token\""));
    let principal = auth.verify(&hs256(valid(json!({"scope": "orders:read"})))).unwrap();
    let forbidden = principal.write_grant().unwrap_err().problem();
    assert_eq!(forbidden.status, 403);
    assert!(forbidden.extra_headers()[0].1.contains("scope=\"orders:write\""));
}

#[test]
fn bad_customer_claims_are_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let auth = runtime.block_on(hs256_auth(|_| {}));
    for customer in [json!(""), json!(42), json!("a\nb"), json!("x".repeat(200))] {
        let token = hs256(valid(json!({"scope": "orders:read", "customer_id": customer})));
        assert!(matches!(auth.verify(&token), Err(AuthError::Invalid(_))), "{customer}");
    }
}

#[test]
fn minted_dev_tokens_verify() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let auth = runtime.block_on(hs256_auth(|_| {}));
    let claims = DevClaims::new("dev", &[SCOPE_READ, SCOPE_WRITE], Some("c-7"), Duration::from_secs(60));
    let token = mint_hs256(SECRET.as_bytes(), &claims).unwrap();
    let principal = auth.verify(&token).unwrap();
    assert_eq!(principal.subject.as_deref(), Some("dev"));
    assert_eq!(principal.customer.as_deref(), Some("c-7"));
}
