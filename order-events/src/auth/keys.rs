//! `KeySource`: the keys tokens are verified with: an HS256 secret, an RS256/ES256 public key
//! from a PEM file, or a JWKS fetched from a URL and refreshed in the background.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::AuthConfigError;

/// Shortest time between two JWKS fetches triggered by unknown key ids, so tokens with made-up
/// `kid`s cannot turn this service into a load generator against the key server.
const EARLY_REFRESH_SPACING: Duration = Duration::from_secs(30);
/// Retry period while the key server cannot be read (and the refresh period is longer).
const FAILED_FETCH_RETRY: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

pub enum KeySource {
    Static { key: DecodingKey, algorithm: Algorithm },
    Jwks(Arc<JwksKeys>),
}

/// What a token's header finds.
pub enum KeyLookup {
    Found(DecodingKey, Algorithm),
    /// No JWKS could be fetched yet.
    NotLoaded,
    Unknown(String),
}

impl KeySource {
    pub fn secret(secret: &[u8]) -> Result<Self, AuthConfigError> {
        if secret.len() < 32 {
            return Err(AuthConfigError::WeakSecret);
        }
        Ok(Self::Static {
            key: DecodingKey::from_secret(secret),
            algorithm: Algorithm::HS256,
        })
    }

    /// An RSA key means RS256, a P-256 key ES256.
    pub fn public_key_file(path: &Path) -> Result<Self, AuthConfigError> {
        let error = |reason: String| AuthConfigError::PublicKey {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        Self::public_key_pem(&pem).map_err(error)
    }

    pub fn public_key_pem(pem: &[u8]) -> Result<Self, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::Static {
                key,
                algorithm: Algorithm::RS256,
            });
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self::Static {
                key,
                algorithm: Algorithm::ES256,
            });
        }
        Err("not a PEM RSA or P-256 public key (-----BEGIN PUBLIC KEY-----)".into())
    }

    /// Fetches the set once (a failure is logged and retried in the background: the service
    /// starts and answers 503 until keys arrive) and keeps it fresh until `stop`.
    pub async fn jwks(url: String, refresh: Duration, stop: CancellationToken) -> Result<Self, AuthConfigError> {
        let parsed = reqwest::Url::parse(&url).map_err(|e| AuthConfigError::Jwks {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(AuthConfigError::Jwks {
                url,
                reason: "must be an http:// or https:// URL".into(),
            });
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| AuthConfigError::Jwks {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let keys = Arc::new(JwksKeys {
            url,
            client,
            keys: RwLock::new(None),
            refresh_now: Notify::new(),
            last_early: parking_lot::Mutex::new(None),
        });
        if let Err(error) = keys.fetch().await {
            tracing::warn!(url = %keys.url, %error, "cannot fetch the JWKS yet; tokens get 503 until it loads");
        }
        tokio::spawn(keys.clone().refresh_until(refresh, stop));
        Ok(Self::Jwks(keys))
    }

    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> KeyLookup {
        match self {
            Self::Static { key, algorithm } => {
                if alg != *algorithm {
                    return KeyLookup::Unknown(format!("tokens must be signed with {algorithm:?}"));
                }
                KeyLookup::Found(key.clone(), *algorithm)
            }
            Self::Jwks(keys) => keys.lookup(kid, alg),
        }
    }
}

struct JwksKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

pub struct JwksKeys {
    url: String,
    client: reqwest::Client,
    /// `None` until the first successful fetch; keyed by `kid` ("" for a key without one).
    keys: RwLock<Option<HashMap<String, Arc<JwksKey>>>>,
    refresh_now: Notify,
    last_early: parking_lot::Mutex<Option<Instant>>,
}

impl JwksKeys {
    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> KeyLookup {
        let keys = self.keys.read();
        let Some(keys) = keys.as_ref() else {
            return KeyLookup::NotLoaded;
        };
        let found = match kid {
            Some(kid) => keys.get(kid),
            // Without a kid the token can only mean the one key of a one-key set.
            None if keys.len() == 1 => keys.values().next(),
            None => return KeyLookup::Unknown("the token names no key id (kid)".into()),
        };
        match found {
            Some(key) if key.algorithm == alg => KeyLookup::Found(key.key.clone(), key.algorithm),
            Some(_) => KeyLookup::Unknown("the token's algorithm does not match its key".into()),
            None => {
                self.refresh_early();
                KeyLookup::Unknown("unknown key id (kid)".into())
            }
        }
    }

    /// A key was rotated in before our next refresh: fetch again soon, at most every 30 s.
    fn refresh_early(&self) {
        let mut last = self.last_early.lock();
        if last.is_none_or(|at| at.elapsed() >= EARLY_REFRESH_SPACING) {
            *last = Some(Instant::now());
            self.refresh_now.notify_one();
        }
    }

    async fn fetch(&self) -> Result<usize, String> {
        let response = self.client.get(&self.url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        if response.content_length().is_some_and(|n| n as usize > MAX_JWKS_BYTES) {
            return Err("the JWKS is larger than 1 MiB".into());
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("the JWKS is larger than 1 MiB".into());
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        let keys = parse_set(&set);
        if keys.is_empty() {
            return Err("the JWK set holds no RS256 or ES256 signing key".into());
        }
        let count = keys.len();
        *self.keys.write() = Some(keys);
        Ok(count)
    }

    async fn refresh_until(self: Arc<Self>, period: Duration, stop: CancellationToken) {
        let mut failed = self.keys.read().is_none();
        loop {
            let wait = if failed { period.min(FAILED_FETCH_RETRY) } else { period };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.refresh_now.notified() => {}
            }
            match self.fetch().await {
                Ok(count) => {
                    if failed {
                        tracing::info!(url = %self.url, keys = count, "JWKS loaded");
                    }
                    failed = false;
                }
                Err(error) => {
                    // Keep the keys we have: a key server outage must not lock every user out.
                    tracing::warn!(url = %self.url, %error, "JWKS refresh failed; keeping the previous keys");
                    failed = true;
                }
            }
        }
    }
}

/// The signing keys of a set this service can verify with; others (encryption keys, other
/// algorithms) are skipped.
fn parse_set(set: &JwkSet) -> HashMap<String, Arc<JwksKey>> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
        {
            continue;
        }
        let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                if ec.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => continue,
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        keys.insert(kid, Arc::new(JwksKey { key, algorithm }));
    }
    keys
}
