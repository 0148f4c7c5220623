//! Redis connections for the Redis backends: fred clients built from a URL, the key names derived
//! from the stream key, the Lua scripts they run, and how Redis failures map onto backend errors.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fred::clients::{Client, Pool};
use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::config::{Config, Options, ReconnectPolicy, TcpConfig, UnresponsiveConfig};
use fred::types::{Builder, Value};
use uuid::Uuid;

use crate::event_log::LogError;
use crate::metrics::Metrics;
use crate::order_store::StoreError;
use crate::position::StreamPosition;

/// The default stream key: its `{orders}` hash tag puts every derived key on one cluster slot.
pub const DEFAULT_STREAM_KEY: &str = "{orders}:events";

/// Connections per backend for ordinary commands. Each one pipelines, so a few are plenty; the
/// blocking tail read has a connection of its own on top of these.
const POOL_SIZE: usize = 2;

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

/// Every key name, derived from the stream key so that its hash tag covers them all.
#[derive(Clone, Debug)]
pub struct StreamKeys {
    stream: String,
    trimmed: String,
    epoch: String,
    order_prefix: String,
    idempotency_prefix: String,
}

impl StreamKeys {
    pub fn new(stream_key: &str) -> Self {
        Self {
            stream: stream_key.to_owned(),
            trimmed: format!("{stream_key}:trimmed"),
            epoch: format!("{stream_key}:epoch"),
            order_prefix: format!("{stream_key}:order:"),
            idempotency_prefix: format!("{stream_key}:idem:"),
        }
    }

    /// The stream of `OrderCreated` events.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The largest entry id retention ever removed from the stream.
    pub fn trimmed(&self) -> &str {
        &self.trimmed
    }

    /// The stream's epoch: names its current history (see [`crate::position::Epoch`]).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The hash holding one order (`order`, `eventId`).
    pub fn order(&self, id: Uuid) -> String {
        format!("{}{id}", self.order_prefix)
    }

    pub(crate) fn order_prefix(&self) -> &str {
        &self.order_prefix
    }

    /// The record of one customer's idempotency key (`<fingerprint> <order id>`). The customer
    /// id is length-prefixed (in bytes), so no customer's keys can be named like another's.
    pub fn idempotency(&self, customer_id: &str, key: &str) -> String {
        format!("{}{}:{customer_id}:{key}", self.idempotency_prefix, customer_id.len())
    }
}

/// Whether Redis Cluster would put `key` and every key derived from it on one slot: it hashes only
/// the first non-empty `{...}` of a key.
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// `redis://user:secret@host` → `redis://***@host`, for logs.
fn redact_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..].find(['/', '?']).map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_owned(),
    }
}

/// A Redis failure, before each backend turns it into its own error type.
#[derive(Debug)]
pub(crate) enum Failure {
    Unavailable(String),
    /// Redis answered the command with an `ERR` reply: the same command will fail again.
    Refused(String),
    Timeout,
    Malformed(String),
}

impl From<FredError> for Failure {
    fn from(error: FredError) -> Self {
        match error.kind() {
            ErrorKind::Timeout => Failure::Timeout,
            // A reply of the wrong shape or type is a data problem that retrying will not fix.
            ErrorKind::InvalidArgument | ErrorKind::Parse | ErrorKind::Protocol | ErrorKind::NotFound => {
                Failure::Malformed(error.to_string())
            }
            // An `ERR` reply (say `ERR Invalid stream ID`) is about the command, not the server.
            ErrorKind::Unknown if error.details().starts_with("ERR") => Failure::Refused(error.to_string()),
            // Connection loss, fail-fast refusals while reconnecting, cluster and sentinel
            // trouble, LOADING, BUSY, READONLY...: all transient from a request's point of view.
            _ => Failure::Unavailable(error.to_string()),
        }
    }
}

impl From<Failure> for LogError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unavailable(message) => LogError::Unavailable(message),
            Failure::Refused(message) => LogError::Refused(message),
            Failure::Timeout => LogError::Timeout,
            Failure::Malformed(message) => LogError::Malformed(message),
        }
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            // A write Redis refused wrote nothing; the caller may retry (503).
            Failure::Unavailable(message) | Failure::Refused(message) => StoreError::Unavailable(message),
            Failure::Timeout => StoreError::Timeout,
            Failure::Malformed(message) => StoreError::Malformed(message),
        }
    }
}

/// The command pool and key names of one backend, plus what it takes to open a dedicated
/// connection.
#[derive(Clone)]
pub(crate) struct RedisConnection {
    builder: Builder,
    pool: Pool,
    keys: StreamKeys,
    settings: RedisSettings,
    options: Options,
    /// Redis' clock minus ours in milliseconds, learned when Redis refuses a write as late that
    /// our clock says is not: deadlines are judged on Redis' clock, and one running ahead of ours
    /// by more than the command timeout would otherwise refuse every write.
    clock_skew_ms: Arc<AtomicI64>,
    metrics: Arc<Metrics>,
}

impl RedisConnection {
    /// Builds the pool and starts connecting in the background. Redis being down is not an
    /// error: the clients keep reconnecting, commands fail fast meanwhile and readiness says so.
    /// Only settings that can never work (a bad URL) fail.
    pub(crate) fn new(settings: &RedisSettings) -> Result<Self, Failure> {
        let builder = client_builder(settings)?;
        let pool = builder
            .build_pool(POOL_SIZE)
            .map_err(|e| Failure::Unavailable(format!("cannot create Redis clients: {e}")))?;
        // The connection task runs as long as the clients; nothing needs its handle.
        drop(pool.connect());
        Ok(Self {
            builder,
            pool,
            keys: StreamKeys::new(&settings.stream_key),
            settings: settings.clone(),
            options: command_options(settings.command_timeout),
            clock_skew_ms: Arc::new(AtomicI64::new(0)),
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// Counts this connection's operations in `metrics` (a private registry until then).
    pub(crate) fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        self.metrics = metrics;
    }

    /// Times one Redis operation (all its round trips) and counts its failure.
    pub(crate) async fn observed<T, E>(&self, op: &str, operation: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        let started = Instant::now();
        let result = operation.await;
        self.metrics.observe_redis(op, started, &result);
        result
    }

    /// Gives the pool up to one command timeout to connect, so that the first requests after
    /// start-up do not fail only because the connection was still being made.
    pub(crate) async fn wait_until_connected(&self) {
        wait_until_connected(&self.pool, &self.settings).await;
    }

    /// A client of its own, for commands that block their connection (`XREAD BLOCK`): on the
    /// shared pool they would stall every command pipelined behind them.
    pub(crate) fn dedicated_client(&self) -> Result<Client, Failure> {
        let client = self
            .builder
            .build()
            .map_err(|e| Failure::Unavailable(format!("cannot create a Redis client: {e}")))?;
        drop(client.connect());
        Ok(client)
    }

    pub(crate) fn keys(&self) -> &StreamKeys {
        &self.keys
    }

    pub(crate) fn command_timeout(&self) -> Duration {
        self.settings.command_timeout
    }

    /// Options every command runs with (see [`command_options`]).
    pub(crate) fn options(&self) -> &Options {
        &self.options
    }

    /// A pooled client, preferring one that is connected.
    pub(crate) fn client(&self) -> &Client {
        self.pool.next_connected()
    }

    /// The deadline a write started now passes to its script: past it the caller has its answer
    /// (a timeout), and a write must not happen after that.
    pub(crate) fn write_deadline(&self) -> SystemTime {
        SystemTime::now() + self.settings.command_timeout
    }

    /// `deadline` on Redis' clock, in milliseconds since the epoch.
    pub(crate) fn deadline_on_redis_clock(&self, deadline: SystemTime) -> u64 {
        let skew = self.clock_skew_ms.load(Ordering::Relaxed);
        epoch_ms(deadline).saturating_add_signed(skew)
    }

    /// Called when Redis refused a write as past `deadline` at `redis_now_ms`. Returns whether the
    /// refusal came from clock skew rather than lateness (our clock has not reached the deadline),
    /// after adjusting to the skew, so the caller may try once more.
    pub(crate) fn refused_by_skewed_clock(&self, deadline: SystemTime, redis_now_ms: u64) -> bool {
        let now = SystemTime::now();
        if now >= deadline {
            return false;
        }
        // Measured on receipt of the reply, this errs towards Redis' clock being behind, which
        // only makes deadlines slightly stricter.
        let skew = redis_now_ms as i64 - epoch_ms(now) as i64;
        let previous = self.clock_skew_ms.swap(skew, Ordering::Relaxed);
        tracing::warn!(
            skew_ms = skew,
            previous_skew_ms = previous,
            "Redis' clock is ahead of ours; write deadlines now allow for it"
        );
        true
    }

    /// Runs a script that writes only before a deadline: `args` gets the deadline on Redis'
    /// clock and returns every argument. A refusal as late (`{'expired', now}`) becomes
    /// `Timeout`, except when it came from clock skew: then it is tried once more with the
    /// deadline moved onto Redis' clock, which is safe because a refused script wrote nothing.
    pub(crate) async fn run_before_deadline(
        &self,
        op: &str,
        script: &LuaScript,
        deadline: SystemTime,
        keys: Vec<String>,
        args: impl Fn(u64) -> Vec<String>,
    ) -> Result<Vec<Value>, Failure> {
        let mut tried_again = false;
        loop {
            let script_args = args(self.deadline_on_redis_clock(deadline));
            let reply = self.observed(op, script.run(self, keys.clone(), script_args)).await?;
            let Value::Array(reply) = reply else {
                return Err(Failure::Malformed(format!("{op} script replied {reply:?}")));
            };
            let redis_now = match reply.as_slice() {
                [outcome, now] if text(outcome) == Some("expired") => text(now).and_then(|now| now.parse().ok()),
                _ => return Ok(reply),
            };
            let skewed = redis_now.is_some_and(|now| self.refused_by_skewed_clock(deadline, now));
            if tried_again || !skewed {
                return Err(Failure::Timeout);
            }
            tried_again = true;
        }
    }

    /// PING within the command timeout.
    pub(crate) async fn ping(&self) -> Result<(), Failure> {
        self.observed("ping", async {
            let _: Value = self.client().with_options(&self.options).ping(None).await?;
            Ok::<_, FredError>(())
        })
        .await
        .map_err(Failure::from)
    }
}

/// Commands fail at once while their connection is down instead of waiting in fred's queue to be
/// replayed after a reconnect (a caller that got an error must not see its write happen later),
/// are written at most once, and give up after the command timeout.
fn command_options(timeout: Duration) -> Options {
    Options {
        fail_fast: true,
        max_attempts: Some(1),
        timeout: Some(timeout),
        ..Options::default()
    }
}

fn client_builder(settings: &RedisSettings) -> Result<Builder, Failure> {
    let url = redact_credentials(&settings.url);
    let mut config =
        Config::from_url(&settings.url).map_err(|e| Failure::Unavailable(format!("invalid Redis URL {url}: {e}")))?;
    if settings.command_timeout.is_zero() {
        return Err(Failure::Unavailable(
            "the Redis command timeout must be positive".into(),
        ));
    }
    if config.server.is_clustered() && !has_hash_tag(&settings.stream_key) {
        return Err(Failure::Unavailable(format!(
            "stream key `{}` has no {{hash tag}}: on Redis Cluster its orders, idempotency keys and trim marker \
             would land on other slots than the stream (use e.g. `{DEFAULT_STREAM_KEY}`)",
            settings.stream_key
        )));
    }
    // The first connection goes through the reconnect policy like every later one, so a process
    // started while Redis is down comes up and connects when Redis does.
    config.fail_fast = false;

    let timeout = settings.command_timeout;
    // A connection with a reply overdue this long is presumed dead (a vanished host sends no
    // reset) and replaced, which also lets a sentinel setup find the new primary.
    let unresponsive = (timeout * 2).max(Duration::from_secs(1));
    let mut builder = Builder::from_config(config);
    builder
        // Retry forever: a Redis outage must never leave a process that needs a restart.
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
        .with_performance_config(|performance| {
            performance.default_command_timeout = timeout;
        })
        .with_connection_config(|connection| {
            connection.connection_timeout = timeout;
            connection.internal_command_timeout = timeout;
            connection.max_command_attempts = 1;
            connection.unresponsive = UnresponsiveConfig {
                max_timeout: Some(unresponsive),
                interval: (unresponsive / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)),
            };
            connection.tcp = TcpConfig {
                nodelay: Some(true),
                ..TcpConfig::default()
            };
        });
    Ok(builder)
}

/// Waits up to one command timeout for `client` to connect; Redis being down just ends the wait.
pub(crate) async fn wait_until_connected(client: &impl ClientLike, settings: &RedisSettings) {
    let connected = tokio::time::timeout(settings.command_timeout, client.wait_for_connect()).await;
    if !matches!(connected, Ok(Ok(()))) && !client.is_connected() {
        tracing::warn!(
            url = %redact_credentials(&settings.url),
            "Redis is not reachable yet; connecting in the background"
        );
    }
}

/// Milliseconds since the epoch, as Redis' `TIME` counts them.
fn epoch_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A Lua script run by its SHA-1. The hash is learned from `SCRIPT LOAD` on first use; a server
/// that lost its script cache (a restart flushes it) answers `NOSCRIPT` and gets the source once
/// through `EVAL`, which caches it again.
pub(crate) struct LuaScript {
    source: &'static str,
    sha: OnceLock<String>,
}

impl LuaScript {
    pub(crate) const fn new(source: &'static str) -> Self {
        Self {
            source,
            sha: OnceLock::new(),
        }
    }

    pub(crate) async fn run(
        &self,
        redis: &RedisConnection,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, FredError> {
        let client = redis.client().with_options(redis.options());
        let sha = match self.sha.get() {
            Some(sha) => sha.clone(),
            None => {
                let sha: String = client.script_load(self.source).await?;
                // Every server computes the same hash for the same source, so a race is harmless.
                let _ = self.sha.set(sha.clone());
                sha
            }
        };
        match client.evalsha::<Value, _, _, _>(sha, keys.clone(), args.clone()).await {
            Err(error) if error.details().starts_with("NOSCRIPT") => client.eval(self.source, keys, args).await,
            result => result,
        }
    }
}

/// Lua shared by the scripts that append to the stream: reading Redis' clock (a script refuses a
/// write past its deadline with `{'expired', now_ms}`), and retention that records exactly the
/// largest id it removes.
///
/// Redis' own `max-deleted-entry-id` is not updated by `XADD MAXLEN` or `XTRIM` (7.0), so a reader
/// could not tell "your events were trimmed" from "there were none": the scripts trim themselves
/// and keep the largest removed id in the trim marker. Ids are compared as decimal strings, which
/// stays exact past 2^53 where Lua's numbers would not.
macro_rules! retention_lua {
    () => {
        r#"
local function greater_decimal(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

local function id_greater(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if not b_ms then return a_ms ~= nil end
  if not a_ms then return false end
  if a_ms ~= b_ms then return greater_decimal(a_ms, b_ms) end
  return greater_decimal(a_seq, b_seq)
end

local function server_now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local function expired(now_ms)
  return {'expired', string.format('%.0f', now_ms)}
end

local function record_trimmed(marker, victim)
  local current = redis.call('GET', marker)
  if not current or id_greater(victim, current) then
    redis.call('SET', marker, victim)
  end
end

-- Count bound with 1 % slack (never less than one entry), at most 10000 entries per call so a
-- lowered bound shrinks the stream over several appends instead of in one long script.
-- Age bound: everything stamped before now - max_age.
local function apply_retention(stream, marker, max_len, max_age_ms, now_ms)
  if max_len > 0 then
    local excess = redis.call('XLEN', stream) - max_len
    if excess >= math.max(1, math.floor(max_len / 100)) then
      local victims = math.min(excess, 10000)
      local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', victims + 1)
      record_trimmed(marker, head[victims][1])
      redis.call('XTRIM', stream, 'MINID', head[victims + 1][1])
    end
  end
  if max_age_ms > 0 and now_ms > max_age_ms then
    -- Reading the oldest entry is cheap; the reverse search is not, so it runs only when
    -- something has actually expired.
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
    if #oldest == 0 or tonumber(string.match(oldest[1][1], '^(%d+)-')) >= now_ms - max_age_ms then
      return
    end
    local boundary = string.format('%.0f-0', now_ms - max_age_ms)
    local last = redis.call('XREVRANGE', stream, '(' .. boundary, '-', 'COUNT', 1)
    if #last > 0 then
      record_trimmed(marker, last[1][1])
      redis.call('XTRIM', stream, 'MINID', boundary)
    end
  end
end

-- A stream without an epoch gets one with its first entry (a new stream, or one recreated after
-- its history was lost together with the epoch).
local function ensure_epoch(key, candidate)
  if redis.call('EXISTS', key) == 0 then
    redis.call('SET', key, candidate)
  end
end

local function event_fields(data, customer, traceparent)
  local fields = {'data', data, 'customer', customer}
  if traceparent ~= '' then
    fields[5] = 'traceparent'
    fields[6] = traceparent
  end
  return fields
end
"#
    };
}
pub(crate) use retention_lua;

/// The arguments every appending script starts with: the write deadline (on Redis' clock) and
/// the retention bounds.
pub(crate) fn append_args(deadline_ms: u64, retention: &RetentionSettings) -> Vec<String> {
    vec![
        deadline_ms.to_string(),
        retention.max_len.to_string(),
        (retention.max_age.as_millis() as u64).to_string(),
    ]
}

/// The text of a bulk string reply, if it is valid UTF-8.
pub(crate) fn text(value: &Value) -> Option<&str> {
    match value {
        Value::String(text) => Some(text),
        Value::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

/// A stream entry id from a reply.
pub(crate) fn position(value: &Value) -> Result<StreamPosition, Failure> {
    let id = text(value).ok_or_else(|| Failure::Malformed(format!("expected a stream id, got {value:?}")))?;
    StreamPosition::parse(id).map_err(|e| Failure::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_every_key_from_the_stream_key() {
        let keys = StreamKeys::new(DEFAULT_STREAM_KEY);
        let id = Uuid::nil();
        assert_eq!(keys.stream(), "{orders}:events");
        assert_eq!(keys.trimmed(), "{orders}:events:trimmed");
        assert_eq!(keys.epoch(), "{orders}:events:epoch");
        assert_eq!(
            keys.order(id),
            "{orders}:events:order:00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(keys.idempotency("c-1", "k-1"), "{orders}:events:idem:3:c-1:k-1");
        assert_ne!(keys.idempotency("a:1", "b"), keys.idempotency("a", "1:b"));
    }

    #[test]
    fn recognises_hash_tags_as_redis_cluster_does() {
        assert!(has_hash_tag("{orders}:events"));
        assert!(has_hash_tag("app:{orders}"));
        assert!(!has_hash_tag("orders:events"));
        assert!(!has_hash_tag("{}:events"));
        assert!(!has_hash_tag("{orders"));
    }

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

    #[tokio::test]
    async fn moves_write_deadlines_onto_a_redis_clock_that_runs_ahead() {
        // Nothing listens on port 1: the clients just keep retrying in the background.
        let redis = RedisConnection::new(&RedisSettings {
            url: "redis://127.0.0.1:1".into(),
            stream_key: DEFAULT_STREAM_KEY.into(),
            command_timeout: Duration::from_secs(2),
        })
        .unwrap();
        let deadline = SystemTime::now() + Duration::from_secs(2);
        assert_eq!(redis.deadline_on_redis_clock(deadline), epoch_ms(deadline));

        let redis_now = epoch_ms(SystemTime::now()) + 60_000;
        assert!(redis.refused_by_skewed_clock(deadline, redis_now));
        let moved = redis.deadline_on_redis_clock(deadline) - epoch_ms(deadline);
        assert!((59_000..=60_000).contains(&moved), "{moved}");
        // Past the deadline on our clock as well, a refusal is plain lateness.
        assert!(!redis.refused_by_skewed_clock(SystemTime::now() - Duration::from_millis(1), redis_now));
    }

    #[test]
    fn refuses_urls_and_timeouts_that_cannot_work() {
        let settings = |url: &str, timeout_ms: u64, key: &str| RedisSettings {
            url: url.into(),
            stream_key: key.into(),
            command_timeout: Duration::from_millis(timeout_ms),
        };
        assert!(client_builder(&settings("redis://127.0.0.1:6390", 2000, DEFAULT_STREAM_KEY)).is_ok());
        assert!(client_builder(&settings("not a url", 2000, DEFAULT_STREAM_KEY)).is_err());
        assert!(client_builder(&settings("redis://127.0.0.1:6390", 0, DEFAULT_STREAM_KEY)).is_err());
        assert!(client_builder(&settings("redis-cluster://127.0.0.1:7000", 2000, "events")).is_err());
        assert!(client_builder(&settings("redis-cluster://127.0.0.1:7000", 2000, DEFAULT_STREAM_KEY)).is_ok());
        assert!(
            client_builder(&settings(
                "redis-sentinel://127.0.0.1:26379/0?sentinelServiceName=mymaster",
                2000,
                DEFAULT_STREAM_KEY
            ))
            .is_ok()
        );
    }
}
