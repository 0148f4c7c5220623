//! What the Redis backends are configured with: where Redis is, and how much history they keep.

use std::fmt;
use std::time::Duration;

/// The default stream key: its `{orders}` hash tag puts every derived key on one cluster slot.
pub const DEFAULT_STREAM_KEY: &str = "{orders}:events";

/// Where Redis is and how long a command may take.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://`, `rediss://`, `redis-sentinel://` or `redis-cluster://` URL (fred's syntax:
    /// a sentinel URL names its service with `?sentinelServiceName=`).
    pub url: String,
    /// The stream key; every other key is derived from it.
    pub stream_key: String,
    /// The longest one command may take; a blocking read adds its wait to it.
    pub command_timeout: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_credentials(&self.url))
            .field("stream_key", &self.stream_key)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

/// How much history the stream keeps and how long idempotency keys are remembered. Applied by
/// every append, so whoever writes the stream (order-api) decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Keep about this many entries (0 = no count bound). Trimming waits until 1 % more have
    /// accumulated, then trims back to exactly `max_len`.
    pub max_len: u64,
    /// Drop entries older than this, judged by Redis' clock (zero = no age bound).
    pub max_age: Duration,
    /// How long an `Idempotency-Key` is remembered (zero = for good).
    pub idempotency_ttl: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            max_len: 0,
            max_age: Duration::ZERO,
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// `redis://user:secret@host` → `redis://***@host`, for logs.
pub(crate) fn redact_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..].find(['/', '?']).map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_credentials_in_logged_urls() {
        assert_eq!(
            redact_credentials("redis://user:secret@db:6379/0"),
            "redis://***@db:6379/0"
        );
        assert_eq!(redact_credentials("redis://db:6379"), "redis://db:6379");
        assert_eq!(
            redact_credentials("redis-sentinel://:pw@s1:26379/0?sentinelServiceName=m"),
            "redis-sentinel://***@s1:26379/0?sentinelServiceName=m"
        );
        let settings = RedisSettings {
            url: "rediss://u:p@h".into(),
            stream_key: DEFAULT_STREAM_KEY.into(),
            command_timeout: Duration::from_secs(2),
        };
        assert!(!format!("{settings:?}").contains(":p@"));
    }
}
