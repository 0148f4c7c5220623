//! Who may do what: bearer JWTs checked against a secret, a public key or a JWKS, turned into
//! the grant a handler needs (`ReadAccess`, `WriteAccess`), or no checks at all with `--auth none`.
//!
//! A token comes from `Authorization: Bearer`, else the `access_token` query parameter, else
//! the `access_token` cookie (EventSource cannot send headers). Its claims: `exp` (required),
//! `scope` (space-separated) or `scp` (array) holding `orders:write`, `orders:read`,
//! `orders:read:all`, and an optional `customer_id` that confines the token to one customer.
//!
//! - [`keys`]: where verification keys come from (secret, PEM file, JWKS refreshed in the
//!   background).

pub mod keys;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::{Args, ValueEnum};
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::parse_duration;
use crate::domain::MAX_CUSTOMER_ID_CHARS;
use crate::problem::Problem;
use keys::{KeyLookup, KeySource};

/// The realm every `WWW-Authenticate` challenge names.
const REALM: &str = "sse-orders";

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every API request needs a bearer JWT.
    Jwt,
    /// No checks: anyone may create and read every order (local development only).
    None,
}

#[derive(Args, Debug, Clone, Default)]
pub struct AuthArgs {
    /// `jwt`: every API request needs a bearer JWT; `none`: no checks (local development).
    /// Defaults to jwt for order-api and stream-gateway, to none for the combined sse-orders.
    #[arg(long = "auth", env = "AUTH", value_enum)]
    pub mode: Option<AuthMode>,

    /// HS256 shared secret that tokens are signed with.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file with the RS256 (RSA) or ES256 (P-256) public key that tokens are signed with.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// URL of a JWKS (JSON Web Key Set) to verify tokens with; fetched at start and refreshed
    /// in the background (and early when a token names a key id not yet known).
    #[arg(long, env = "JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// How often the JWKS is fetched again.
    #[arg(long, env = "JWT_JWKS_REFRESH", default_value = "5m", value_parser = parse_refresh)]
    pub jwt_jwks_refresh: Duration,

    /// Tokens must carry this `iss` (not checked when unset).
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Tokens must carry this `aud` (not checked when unset).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock difference tolerated when checking `exp` and `nbf`.
    #[arg(long, env = "JWT_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,
}

fn parse_refresh(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(duration)
}

/// A flag combination the service cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "--auth jwt needs a key to verify tokens: give --jwt-secret, --jwt-public-key-file or --jwt-jwks-url \
         (or --auth none for local development)"
    )]
    NoKey,
    #[error("give only one of --jwt-secret, --jwt-public-key-file and --jwt-jwks-url (got {0})")]
    SeveralKeys(String),
    #[error("--jwt-secret must be at least 32 bytes long (HS256 needs a strong secret)")]
    WeakSecret,
    #[error("--jwt-public-key-file {path}: {reason}")]
    PublicKey { path: String, reason: String },
    #[error("--jwt-jwks-url {url}: {reason}")]
    Jwks { url: String, reason: String },
}

/// What a token allows, as named in its `scope`/`scp` claim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes {
    pub write: bool,
    pub read: bool,
    pub read_all: bool,
}

pub const SCOPE_WRITE: &str = "orders:write";
pub const SCOPE_READ: &str = "orders:read";
pub const SCOPE_READ_ALL: &str = "orders:read:all";

impl Scopes {
    pub const ALL: Self = Self {
        write: true,
        read: true,
        read_all: true,
    };

    fn add(&mut self, scope: &str) {
        match scope {
            SCOPE_WRITE => self.write = true,
            SCOPE_READ => self.read = true,
            SCOPE_READ_ALL => self.read_all = true,
            _ => {}
        }
    }
}

/// The caller of a request, once its token checked out (or anyone, with auth off).
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: Option<String>,
    pub scopes: Scopes,
    /// Set when the token is confined to one customer's orders.
    pub customer: Option<Arc<str>>,
    /// When the token stops being accepted (its `exp` plus the leeway); `None` with auth off.
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for Principal {
    // Never the token itself: only what it grants.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.subject)
            .field("scopes", &self.scopes)
            .field("customer", &self.customer)
            .finish_non_exhaustive()
    }
}

impl Principal {
    /// Everyone, when auth is off.
    pub fn anyone() -> Self {
        Self {
            subject: None,
            scopes: Scopes::ALL,
            customer: None,
            expires_at: None,
        }
    }

    /// The right to read orders: `orders:read` with a `customer_id` for one customer's orders,
    /// `orders:read:all` for everyone's.
    pub fn read_grant(&self) -> Result<Grant, AuthError> {
        match (&self.customer, self.scopes) {
            (Some(customer), scopes) if scopes.read || scopes.read_all => Ok(self.grant(Some(customer.clone()))),
            (None, Scopes { read_all: true, .. }) => Ok(self.grant(None)),
            (None, Scopes { read: true, .. }) => Err(AuthError::Forbidden {
                scope: SCOPE_READ_ALL,
                detail: "a token without a customer_id claim needs the orders:read:all scope to read orders".into(),
            }),
            _ => Err(AuthError::Forbidden {
                scope: SCOPE_READ,
                detail: "reading orders needs the orders:read scope".into(),
            }),
        }
    }

    /// The right to create orders: `orders:write`, for the token's customer only when it has one.
    pub fn write_grant(&self) -> Result<Grant, AuthError> {
        if !self.scopes.write {
            return Err(AuthError::Forbidden {
                scope: SCOPE_WRITE,
                detail: "creating orders needs the orders:write scope".into(),
            });
        }
        Ok(self.grant(self.customer.clone()))
    }

    fn grant(&self, customer: Option<Arc<str>>) -> Grant {
        Grant {
            customer,
            expires_at: self.expires_at,
        }
    }
}

/// What a request may touch: one customer's orders or everyone's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `Some`: only this customer's orders.
    pub customer: Option<Arc<str>>,
    pub expires_at: Option<SystemTime>,
}

impl Grant {
    pub fn everything() -> Self {
        Self {
            customer: None,
            expires_at: None,
        }
    }

    pub fn covers(&self, customer_id: &str) -> bool {
        self.customer.as_deref().is_none_or(|own| own == customer_id)
    }

    /// The 403 for a request about another customer than the token's.
    pub fn other_customer(&self) -> AuthError {
        AuthError::Forbidden {
            scope: SCOPE_READ_ALL,
            detail: "this token may only act for its own customer (the customer_id claim)".into(),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send Authorization: Bearer <token> (or the access_token query parameter or cookie)")]
    Missing,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
    #[error("the keys to verify tokens are not loaded yet; retry shortly")]
    KeysUnavailable,
    #[error("{detail}")]
    Forbidden { scope: &'static str, detail: String },
}

impl AuthError {
    /// The problem body with the matching `WWW-Authenticate` challenge (RFC 6750).
    pub fn problem(&self) -> Problem {
        let challenge = match self {
            AuthError::Missing => format!("Bearer realm=\"{REALM}\""),
            AuthError::Invalid(_) | AuthError::Expired => {
                format!(
                    "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                    self.to_string().replace(['"', '\\'], "'")
                )
            }
            AuthError::KeysUnavailable => {
                return Problem::unavailable(self.to_string());
            }
            AuthError::Forbidden { scope, .. } => {
                format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{scope}\"")
            }
        };
        let (status, kind, title) = match self {
            AuthError::Forbidden { .. } => (StatusCode::FORBIDDEN, "/problems/forbidden", "Forbidden"),
            _ => (
                StatusCode::UNAUTHORIZED,
                "/problems/unauthorized",
                "Authentication required",
            ),
        };
        Problem::new(status, kind, title)
            .detail(self.to_string())
            .header(header::WWW_AUTHENTICATE.as_str(), challenge)
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

/// Checks tokens; shared by every handler of a process.
pub struct Authenticator {
    verifier: Option<Verifier>,
}

struct Verifier {
    keys: KeySource,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("enabled", &self.verifier.is_some())
            .finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<serde_json::Value>,
    #[serde(default)]
    scp: Option<serde_json::Value>,
    #[serde(default)]
    customer_id: Option<serde_json::Value>,
}

fn add_scopes(scopes: &mut Scopes, claim: &serde_json::Value) -> Result<(), AuthError> {
    match claim {
        serde_json::Value::String(text) => text.split_ascii_whitespace().for_each(|s| scopes.add(s)),
        serde_json::Value::Array(items) => {
            for item in items {
                let Some(text) = item.as_str() else {
                    return Err(AuthError::Invalid("scp must be an array of strings".into()));
                };
                scopes.add(text);
            }
        }
        _ => return Err(AuthError::Invalid("scope must be a string and scp an array".into())),
    }
    Ok(())
}

impl Authenticator {
    /// Checks nothing: every request acts for everyone.
    pub fn disabled() -> Arc<Self> {
        Arc::new(Self { verifier: None })
    }

    /// Builds the checks the flags describe. `default` is the binary's mode when `--auth` is not
    /// given; `stop` ends the JWKS refresh.
    pub async fn from_args(
        args: &AuthArgs,
        default: AuthMode,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, AuthConfigError> {
        let mode = args.mode.unwrap_or(default);
        if mode == AuthMode::None {
            tracing::warn!(
                "--auth none: requests are not authenticated; anyone who reaches this port may create and \
                 read every customer's orders (use only for local development)"
            );
            return Ok(Self::disabled());
        }
        let set = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let secret = args.jwt_secret.as_deref().filter(|s| !s.is_empty());
        let file = args.jwt_public_key_file.as_ref().filter(|p| !p.as_os_str().is_empty());
        let jwks = set(&args.jwt_jwks_url);
        let given: Vec<&str> = [
            secret.map(|_| "--jwt-secret"),
            file.map(|_| "--jwt-public-key-file"),
            jwks.as_ref().map(|_| "--jwt-jwks-url"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() > 1 {
            return Err(AuthConfigError::SeveralKeys(given.join(", ")));
        }
        let keys = if let Some(secret) = secret {
            KeySource::secret(secret.as_bytes())?
        } else if let Some(path) = file {
            KeySource::public_key_file(path)?
        } else if let Some(url) = jwks {
            KeySource::jwks(url, args.jwt_jwks_refresh, stop).await?
        } else {
            return Err(AuthConfigError::NoKey);
        };
        Ok(Arc::new(Self {
            verifier: Some(Verifier {
                keys,
                issuer: set(&args.jwt_issuer),
                audience: set(&args.jwt_audience),
                leeway: args.jwt_leeway,
            }),
        }))
    }

    pub fn is_enabled(&self) -> bool {
        self.verifier.is_some()
    }

    /// The caller of a request with these headers and query string.
    pub fn authenticate(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Principal, AuthError> {
        let Some(verifier) = &self.verifier else {
            return Ok(Principal::anyone());
        };
        let token = bearer_token(headers, query)?.ok_or(AuthError::Missing)?;
        verifier.verify(&token)
    }

    /// Checks one token.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        match &self.verifier {
            None => Ok(Principal::anyone()),
            Some(verifier) => verifier.verify(token),
        }
    }
}

impl Verifier {
    fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed token".into()))?;
        let (key, algorithm) = match self.keys.lookup(header.kid.as_deref(), header.alg) {
            KeyLookup::Found(key, algorithm) => (key, algorithm),
            KeyLookup::NotLoaded => return Err(AuthError::KeysUnavailable),
            KeyLookup::Unknown(reason) => return Err(AuthError::Invalid(reason)),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        // Expiry is checked below to the millisecond, the same instant a stream ends.
        validation.validate_exp = false;
        validation.validate_aud = self.audience.is_some();
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            match error.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::Invalid("the token is not valid yet (nbf)".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer (iss)".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience (aud)".into()),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("unexpected signing algorithm".into()),
                ErrorKind::MissingRequiredClaim(claim) => AuthError::Invalid(format!("the {claim} claim is missing")),
                ErrorKind::InvalidClaimFormat(claim) => AuthError::Invalid(format!("the {claim} claim is malformed")),
                _ => AuthError::Invalid("malformed token".into()),
            }
        })?;
        let claims = data.claims;
        let exp = claims
            .exp
            .ok_or_else(|| AuthError::Invalid("the exp claim is missing".into()))?;
        let expires_at = UNIX_EPOCH + Duration::from_secs(exp) + self.leeway;
        if SystemTime::now() >= expires_at {
            return Err(AuthError::Expired);
        }
        let mut scopes = Scopes::default();
        for claim in [&claims.scope, &claims.scp].into_iter().flatten() {
            add_scopes(&mut scopes, claim)?;
        }
        let customer = match claims.customer_id {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(id))
                if !id.is_empty()
                    && id.chars().count() <= MAX_CUSTOMER_ID_CHARS
                    && !id.chars().any(char::is_control) =>
            {
                Some(Arc::from(id))
            }
            Some(_) => {
                return Err(AuthError::Invalid(format!(
                    "customer_id must be a string of 1 to {MAX_CUSTOMER_ID_CHARS} characters"
                )));
            }
        };
        Ok(Principal {
            subject: claims.sub,
            scopes,
            customer,
            expires_at: Some(expires_at),
        })
    }
}

/// The token of a request: `Authorization: Bearer`, else `access_token` in the query, else the
/// `access_token` cookie. An `Authorization` header of another scheme is refused rather than
/// ignored, so a client never silently falls through to a weaker source.
pub fn bearer_token(headers: &HeaderMap, query: Option<&str>) -> Result<Option<String>, AuthError> {
    let mut authorizations = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = authorizations.next() {
        if authorizations.next().is_some() {
            return Err(AuthError::Invalid("more than one Authorization header".into()));
        }
        let text = value
            .to_str()
            .map_err(|_| AuthError::Invalid("the Authorization header is not ASCII".into()))?;
        let (scheme, token) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Invalid(
                "the Authorization header must be `Bearer <token>`".into(),
            ));
        }
        return Ok(Some(token.trim().to_owned()));
    }
    if let Some(token) = query.and_then(|q| query_parameter(q, "access_token")) {
        return Ok(Some(token));
    }
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=') {
                if name == "access_token" && !value.is_empty() {
                    return Ok(Some(value.trim_matches('"').to_owned()));
                }
            }
        }
    }
    Ok(None)
}

/// The first non-empty value of `name` in a query string, percent-decoded.
fn query_parameter(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name && !value.is_empty()).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn authenticate_parts<S>(parts: &Parts, state: &S) -> Result<Principal, AuthError>
where
    Arc<Authenticator>: FromRef<S>,
{
    let auth = Arc::<Authenticator>::from_ref(state);
    auth.authenticate(&parts.headers, parts.uri.query())
}

/// Extractor: the caller may read orders (`orders:read` or `orders:read:all`); the grant says
/// whose. Add it to a handler's arguments to protect it.
#[derive(Debug, Clone)]
pub struct ReadAccess(pub Grant);

/// Extractor: the caller may create orders (`orders:write`); the grant says for whom.
#[derive(Debug, Clone)]
pub struct WriteAccess(pub Grant);

impl<S> FromRequestParts<S> for ReadAccess
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate_parts(parts, state)?.read_grant().map(ReadAccess)
    }
}

impl<S> FromRequestParts<S> for WriteAccess
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate_parts(parts, state)?.write_grant().map(WriteAccess)
    }
}

/// Claims of a token minted by [`mint_hs256`].
#[derive(Debug, Clone, Serialize)]
pub struct DevClaims {
    pub sub: String,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    pub iat: u64,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl DevClaims {
    /// Claims valid from now for `ttl`.
    pub fn new(subject: &str, scopes: &[&str], customer: Option<&str>, ttl: Duration) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Self {
            sub: subject.to_owned(),
            scope: scopes.join(" "),
            customer_id: customer.map(str::to_owned),
            iat: now,
            exp: now + ttl.as_secs().max(1),
            iss: None,
            aud: None,
        }
    }
}

/// An HS256 token for `secret`: what `sse-orders token` prints, and what tests sign with.
pub fn mint_hs256(secret: &[u8], claims: &DevClaims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
}

#[cfg(test)]
mod tests;
