//! The Redis Streams event log: catch-up reads and the trim marker in one script, the tail
//! followed with `XREAD BLOCK` on a connection of its own.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use fred::clients::Client;
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, StreamsInterface};
use fred::types::Value;
use fred::types::config::Options;
use parking_lot::Mutex;

use super::{CursorCheck, EventLog, LogError, LogPage, Lost};
use crate::domain::OrderCreated;
use crate::frame::EncodedEvent;
use crate::position::{Epoch, StreamPosition};
use crate::redis::scripts::{APPEND, LAST_POSITION, READ_AFTER, RENEW_EPOCH, SERVER_TIME, append_args};
use crate::redis::{
    Failure, RedisConnection, RedisSettings, RetentionSettings, StreamKeys, position, text, wait_until_connected,
};

pub struct RedisEventLog {
    redis: RedisConnection,
    /// The connection `XREAD BLOCK` waits on. Concurrent `follow` calls take turns on it, so the
    /// design has one follower per process (the gateway's tail reader).
    follower: tokio::sync::Mutex<Client>,
    retention: RetentionSettings,
    /// The newest malformed entry already warned about, so a skipped entry is reported once and
    /// not on every read that passes it.
    warned_through: Mutex<StreamPosition>,
}

impl RedisEventLog {
    /// Connects to Redis. Succeeds while Redis is down (the clients keep reconnecting and
    /// `check_ready` reports the state); fails only on settings that can never work.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, LogError> {
        let redis = RedisConnection::new(settings)?;
        let follower = redis.dedicated_client()?;
        tokio::join!(redis.wait_until_connected(), wait_until_connected(&follower, settings));
        Ok(Self {
            redis,
            follower: tokio::sync::Mutex::new(follower),
            retention: RetentionSettings::default(),
            warned_through: Mutex::new(StreamPosition::ZERO),
        })
    }

    /// Counts this log's Redis operations in `metrics` (a private registry otherwise).
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.redis.set_metrics(metrics);
        self
    }

    /// The retention `append` applies (none by default: a gateway only reads).
    pub fn with_retention(mut self, retention: RetentionSettings) -> Self {
        self.retention = retention;
        self
    }

    pub fn keys(&self) -> &StreamKeys {
        self.redis.keys()
    }

    /// Runs the read script after `after`; without `entries` it only checks the position.
    async fn run_read(&self, after: StreamPosition, limit: usize, entries: bool) -> Result<ReadReply, LogError> {
        let keys = self.redis.keys();
        // Nothing can follow the largest id, and Redis refuses `(` of it as a range start.
        let entries = entries && after != StreamPosition::MAX;
        let reply = self
            .redis
            .observed(
                "read_after",
                READ_AFTER.run(
                    &self.redis,
                    vec![
                        keys.stream().to_owned(),
                        keys.trimmed().to_owned(),
                        keys.epoch().to_owned(),
                    ],
                    vec![
                        after.to_string(),
                        limit.max(1).to_string(),
                        if entries { "1" } else { "0" }.to_owned(),
                    ],
                ),
            )
            .await
            .map_err(Failure::from)?;
        let Value::Array(reply) = reply else {
            return Err(malformed(format!("read script replied {reply:?}")));
        };
        let Ok([marker, entries, epoch, held, before]) = <[Value; 5]>::try_from(reply) else {
            return Err(malformed("read script replied with the wrong number of values".into()));
        };
        let optional_position = |value: &Value| match value {
            Value::Null => Ok(None),
            value => position(value).map(Some),
        };
        let marker = optional_position(&marker)?;
        let before = optional_position(&before)?;
        let held = matches!(held, Value::Integer(1));
        let epoch = text(&epoch).and_then(Epoch::from_stored);
        let floor = marker.unwrap_or(StreamPosition::ZERO);
        let cursor = if held || after == StreamPosition::ZERO || after <= floor {
            CursorCheck::Held
        } else {
            CursorCheck::Missing {
                resume_after: before.unwrap_or(StreamPosition::ZERO).max(floor),
            }
        };
        Ok(ReadReply {
            marker,
            entries,
            epoch,
            cursor,
        })
    }

    /// One page after `after`, and how far it looked: past entries that were skipped as
    /// malformed, so `follow` can wait beyond them instead of finding them again and again.
    async fn read_page(&self, after: StreamPosition, limit: usize) -> Result<(LogPage, StreamPosition), LogError> {
        let mut scan = after;
        let mut checked = None;
        loop {
            let reply = self.run_read(scan, limit, true).await?;
            // What the page says about `after` comes from the first read, the one made after it.
            let (cursor, epoch) = checked
                .get_or_insert_with(|| (reply.cursor, reply.epoch.clone()))
                .clone();
            let batch = self.decode_entries(reply.entries)?;
            let page = |events, lost| LogPage {
                events,
                lost,
                cursor,
                epoch: epoch.clone(),
                trimmed_through: reply.marker,
            };
            // Retention removes the oldest entries first, so a marker past `after` means events
            // after `after` are gone, and what the stream still holds starts with this batch.
            if let Some(through) = reply.marker.filter(|marker| *marker > after) {
                let lost = Lost {
                    oldest: batch.first_seen,
                    through,
                };
                let scanned = batch.last_seen.unwrap_or(scan);
                return Ok((page(batch.events, Some(lost)), scanned));
            }
            match batch.last_seen {
                // Only malformed entries: look further rather than return a page that ends early.
                Some(last) if batch.events.is_empty() => scan = last,
                last => return Ok((page(batch.events, None), last.unwrap_or(scan))),
            }
        }
    }

    /// Decodes `[[id, [field, value, ...]], ...]`, skipping entries without a UTF-8 `data` and
    /// `customer` (written by something else): they are reported, never allowed to stop a reader.
    fn decode_entries(&self, entries: Value) -> Result<Batch, LogError> {
        let entries = match entries {
            Value::Array(entries) => entries,
            Value::Null => Vec::new(),
            other => return Err(malformed(format!("expected stream entries, got {other:?}"))),
        };
        let mut batch = Batch::default();
        for entry in entries {
            let Value::Array(mut parts) = entry else {
                return Err(malformed(format!("expected a stream entry, got {entry:?}")));
            };
            if parts.len() != 2 {
                return Err(malformed(format!("expected a stream entry, got {parts:?}")));
            }
            let fields = parts.pop().unwrap_or(Value::Null);
            let id = position(&parts[0])?;
            batch.first_seen.get_or_insert(id);
            batch.last_seen = Some(id);
            match decode_event(id, &fields) {
                Ok(event) => batch.events.push(event),
                Err(problem) => self.warn_skipped(id, problem),
            }
        }
        Ok(batch)
    }

    fn warn_skipped(&self, id: StreamPosition, problem: &str) {
        let mut warned = self.warned_through.lock();
        if id > *warned {
            *warned = id;
            tracing::warn!(%id, stream = self.redis.keys().stream(), problem, "skipping a malformed stream entry");
        }
    }

    /// `XREAD BLOCK` on the follower's connection. A timed-out block replies nil, which is read
    /// as a raw value: fred's typed helpers turn it into an error.
    async fn block_for_entries(&self, after: StreamPosition, limit: usize, wait: Duration) -> Result<Value, LogError> {
        let follower = self.follower.lock().await;
        let options = Options {
            timeout: Some(wait + self.redis.command_timeout()),
            ..self.redis.options().clone()
        };
        let block_ms = (wait.as_millis() as u64).max(1);
        let reply = self
            .redis
            .observed("follow", async {
                follower
                    .with_options(&options)
                    .xread::<Value, _, _>(
                        Some(limit as u64),
                        Some(block_ms),
                        self.redis.keys().stream(),
                        after.to_string(),
                    )
                    .await
            })
            .await;
        reply.map_err(|e: FredError| Failure::from(e).into())
    }
}

struct ReadReply {
    marker: Option<StreamPosition>,
    entries: Value,
    epoch: Option<Epoch>,
    cursor: CursorCheck,
}

#[derive(Default)]
struct Batch {
    events: Vec<EncodedEvent>,
    /// The first and last entry ids read, malformed or not.
    first_seen: Option<StreamPosition>,
    last_seen: Option<StreamPosition>,
}

fn malformed(message: String) -> LogError {
    LogError::Malformed(message)
}

fn decode_event(id: StreamPosition, fields: &Value) -> Result<EncodedEvent, &'static str> {
    let Value::Array(fields) = fields else {
        return Err("the entry has no fields");
    };
    let (mut data, mut customer, mut traceparent) = (None, None, None);
    for pair in fields.chunks_exact(2) {
        match text(&pair[0]) {
            Some("data") => data = Some(text(&pair[1]).ok_or("`data` is not UTF-8 text")?),
            Some("customer") => customer = Some(text(&pair[1]).ok_or("`customer` is not UTF-8 text")?),
            // A malformed traceparent only loses the trace link, never the event.
            Some("traceparent") => traceparent = text(&pair[1]).filter(|t| crate::telemetry::is_traceparent(t)),
            _ => {}
        }
    }
    let data = data.ok_or("the entry has no `data` field")?;
    let customer = customer.ok_or("the entry has no `customer` field")?;
    Ok(EncodedEvent::new(id, customer, data).with_traceparent(traceparent))
}

/// The entries of one stream in an `XREAD` reply: `[[key, entries]]`, or a map under RESP3.
fn xread_entries(reply: Value) -> Result<Value, LogError> {
    match reply {
        Value::Null => Ok(Value::Null),
        Value::Array(mut streams) => match streams.pop() {
            None => Ok(Value::Null),
            Some(Value::Array(mut stream)) if stream.len() == 2 => Ok(stream.pop().unwrap_or(Value::Null)),
            Some(other) => Err(malformed(format!("unexpected XREAD reply {other:?}"))),
        },
        Value::Map(streams) => Ok(streams.inner().into_values().next().unwrap_or(Value::Null)),
        other => Err(malformed(format!("unexpected XREAD reply {other:?}"))),
    }
}

#[async_trait]
impl EventLog for RedisEventLog {
    async fn append(&self, event: OrderCreated) -> Result<StreamPosition, LogError> {
        let keys = self.redis.keys();
        let traceparent = event.traceparent.unwrap_or_default();
        let reply = self
            .redis
            .run_before_deadline(
                "append",
                &APPEND,
                self.redis.write_deadline(),
                vec![
                    keys.stream().to_owned(),
                    keys.trimmed().to_owned(),
                    keys.epoch().to_owned(),
                ],
                |deadline_ms| {
                    let mut args = append_args(deadline_ms, &self.retention);
                    args.extend([
                        event.payload.clone(),
                        event.customer_id.clone(),
                        traceparent.clone(),
                        Epoch::random().to_string(),
                    ]);
                    args
                },
            )
            .await?;
        match reply.as_slice() {
            [outcome, id] if text(outcome) == Some("appended") => Ok(position(id)?),
            _ => Err(malformed(format!("append script replied {reply:?}"))),
        }
    }

    async fn read_after(&self, after: StreamPosition, limit: usize) -> Result<LogPage, LogError> {
        Ok(self.read_page(after, limit).await?.0)
    }

    async fn follow(&self, after: StreamPosition, limit: usize, wait: Duration) -> Result<LogPage, LogError> {
        let deadline = Instant::now() + wait;
        let (page, mut scan) = self.read_page(after, limit).await?;
        if !page.events.is_empty() || page.lost.is_some() || page.cursor != CursorCheck::Held {
            return Ok(page);
        }
        // Nothing new: what the first read said about `after` still stands.
        let quiet = page;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(quiet);
            }
            let entries = xread_entries(self.block_for_entries(scan, limit.max(1), remaining).await?)?;
            if matches!(entries, Value::Null) {
                return Ok(quiet);
            }
            let batch = self.decode_entries(entries)?;
            // Events appended and trimmed between the first read and the blocking read would be
            // skipped silently by the latter; the marker says whether that happened. A failover
            // in between would put the entries on another history: the check of `after` on the
            // node that answers now says whether that happened.
            let check = self.run_read(after, limit, false).await?;
            if check.marker.is_some_and(|marker| marker > after) || check.cursor != CursorCheck::Held {
                return self.read_after(after, limit).await;
            }
            if !batch.events.is_empty() {
                return Ok(LogPage {
                    events: batch.events,
                    lost: None,
                    cursor: check.cursor,
                    epoch: check.epoch,
                    trimmed_through: check.marker,
                });
            }
            scan = batch.last_seen.unwrap_or(scan);
        }
    }

    async fn last_position(&self) -> Result<StreamPosition, LogError> {
        let reply = self
            .redis
            .observed(
                "last_position",
                LAST_POSITION.run(&self.redis, vec![self.redis.keys().stream().to_owned()], vec![]),
            )
            .await
            .map_err(Failure::from)?;
        match reply {
            Value::Null => Ok(StreamPosition::ZERO),
            value => Ok(position(&value)?),
        }
    }

    async fn renew_epoch(&self, seen: Option<&Epoch>) -> Result<Option<Epoch>, LogError> {
        let fresh = Epoch::random();
        let reply = self
            .redis
            .observed(
                "renew_epoch",
                RENEW_EPOCH.run(
                    &self.redis,
                    vec![self.redis.keys().epoch().to_owned()],
                    vec![
                        seen.map_or(String::new(), |e| e.as_str().to_owned()),
                        fresh.as_str().to_owned(),
                    ],
                ),
            )
            .await
            .map_err(Failure::from)?;
        Ok(text(&reply).and_then(Epoch::from_stored))
    }

    async fn now_ms(&self) -> Result<u64, LogError> {
        let reply = self
            .redis
            .observed(
                "time",
                SERVER_TIME.run(&self.redis, vec![self.redis.keys().stream().to_owned()], vec![]),
            )
            .await
            .map_err(Failure::from)?;
        let parts: Option<Vec<u64>> = match &reply {
            Value::Array(parts) => parts
                .iter()
                .map(|part| match part {
                    Value::Integer(n) => u64::try_from(*n).ok(),
                    other => text(other).and_then(|t| t.parse().ok()),
                })
                .collect(),
            _ => None,
        };
        match parts.as_deref() {
            Some([seconds, micros]) => Ok(seconds * 1000 + micros / 1000),
            _ => Err(malformed(format!("TIME replied {reply:?}"))),
        }
    }

    async fn check_ready(&self) -> Result<(), LogError> {
        Ok(self.redis.ping().await?)
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
