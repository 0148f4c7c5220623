//! The fred clients of one backend: a command pool, dedicated connections for blocking reads,
//! and write deadlines judged on Redis' clock.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fred::clients::{Client, Pool};
use fred::error::Error as FredError;
use fred::interfaces::ClientLike;
use fred::types::config::{Config, Options, ReconnectPolicy, TcpConfig, UnresponsiveConfig};
use fred::types::{Builder, Value};

use super::keys::has_hash_tag;
use super::scripts::LuaScript;
use super::settings::redact_credentials;
use super::{DEFAULT_STREAM_KEY, Failure, RedisSettings, StreamKeys, text};
use crate::metrics::Metrics;

/// Connections per backend for ordinary commands. Each one pipelines, so a few are plenty; the
/// blocking tail read has a connection of its own on top of these.
const POOL_SIZE: usize = 2;

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

#[cfg(test)]
mod tests {
    use super::*;

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
