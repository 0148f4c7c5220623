//! Orders in Redis: one script checks the idempotency key, appends the event, stores the order
//! and applies retention, so a request is written completely or not at all.

use std::time::SystemTime;

use async_trait::async_trait;
use fred::interfaces::{ClientLike, HashesInterface};
use fred::types::Value;
use uuid::Uuid;

use super::{CreateOutcome, NewOrder, OrderSnapshot, OrderStore, SnapshotQuery, StoreError};
use crate::domain::{CreatedOrder, Order};
use crate::position::{Epoch, StreamPosition};
use crate::redis::scripts::{CREATE_ORDER, SNAPSHOT, append_args};
use crate::redis::{Failure, RedisConnection, RedisSettings, RetentionSettings, StreamKeys, position, text};

/// Entries one snapshot page scans at most, so a rare customer's page cannot make one script
/// walk the whole stream; the page then ends early with `next` set.
const SNAPSHOT_SCAN: usize = 10_000;

pub struct RedisOrderStore {
    redis: RedisConnection,
    retention: RetentionSettings,
}

impl RedisOrderStore {
    /// Connects to Redis. Succeeds while Redis is down (the clients keep reconnecting and
    /// `check_ready` reports the state); fails only on settings that can never work.
    pub async fn connect(settings: &RedisSettings, retention: RetentionSettings) -> Result<Self, StoreError> {
        let redis = RedisConnection::new(settings)?;
        redis.wait_until_connected().await;
        Ok(Self { redis, retention })
    }

    /// Counts this store's Redis operations in `metrics` (a private registry otherwise).
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.redis.set_metrics(metrics);
        self
    }

    pub fn keys(&self) -> &StreamKeys {
        self.redis.keys()
    }

    /// Creates the order unless `deadline` (on this process' clock) has passed by the time the
    /// script runs on Redis; then nothing is written and the result is `Timeout`. `create`
    /// passes now plus the command timeout: past that its caller has been answered, and a write
    /// must not follow the answer.
    pub async fn create_before(&self, new: NewOrder, deadline: SystemTime) -> Result<CreateOutcome, StoreError> {
        let keys = self.redis.keys();
        let order_id = new.order.order_id;
        let (idempotency_key, fingerprint) = match &new.idempotency {
            Some((key, fingerprint)) => (
                keys.idempotency(&new.order.customer_id, key.as_str()),
                fingerprint.clone(),
            ),
            // Never touched; named so that every key of the call hashes to the stream's slot.
            None => (keys.idempotency("", ""), String::new()),
        };
        let idempotency_ttl_ms = (self.retention.idempotency_ttl.as_millis() as u64).to_string();
        let script_keys = vec![
            keys.stream().to_owned(),
            keys.trimmed().to_owned(),
            keys.order(order_id),
            idempotency_key,
            keys.epoch().to_owned(),
        ];
        let reply = self
            .redis
            .run_before_deadline("create_order", &CREATE_ORDER, deadline, script_keys, |deadline_ms| {
                let mut args = append_args(deadline_ms, &self.retention);
                args.extend([
                    new.event.payload.clone(),
                    new.event.customer_id.clone(),
                    new.event.traceparent.clone().unwrap_or_default(),
                    if new.idempotency.is_some() { "1" } else { "0" }.to_owned(),
                    fingerprint.clone(),
                    idempotency_ttl_ms.clone(),
                    order_id.to_string(),
                    keys.order_prefix().to_owned(),
                    Epoch::random().to_string(),
                ]);
                args
            })
            .await?;
        match reply.as_slice() {
            [outcome, id] if text(outcome) == Some("created") => Ok(CreateOutcome::Created(CreatedOrder {
                order: new.order,
                event_id: position(id)?,
            })),
            [outcome, order, id] if text(outcome) == Some("replayed") => {
                Ok(CreateOutcome::Replayed(created_order(order, id)?))
            }
            [outcome] if text(outcome) == Some("conflict") => Err(StoreError::IdempotencyConflict),
            _ => Err(malformed(format!("create script replied {reply:?}"))),
        }
    }
}

fn malformed(message: String) -> StoreError {
    StoreError::Malformed(message)
}

/// An order as stored: its JSON and the id of its event.
fn created_order(order: &Value, event_id: &Value) -> Result<CreatedOrder, StoreError> {
    let json = text(order).ok_or_else(|| malformed("a stored order is not UTF-8 text".into()))?;
    let order: Order = serde_json::from_str(json).map_err(|e| malformed(format!("a stored order is invalid: {e}")))?;
    Ok(CreatedOrder {
        order,
        event_id: position(event_id)?,
    })
}

#[async_trait]
impl OrderStore for RedisOrderStore {
    async fn create(&self, new: NewOrder) -> Result<CreateOutcome, StoreError> {
        let deadline = self.redis.write_deadline();
        self.create_before(new, deadline).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<CreatedOrder>, StoreError> {
        let key = self.redis.keys().order(id);
        let reply = self
            .redis
            .observed("get_order", async {
                self.redis
                    .client()
                    .with_options(self.redis.options())
                    .hmget::<Value, _, _>(key, vec!["order", "eventId"])
                    .await
            })
            .await
            .map_err(Failure::from)?;
        match reply {
            Value::Array(fields) => match fields.as_slice() {
                [Value::Null, _] => Ok(None),
                [order, event_id] => created_order(order, event_id).map(Some),
                _ => Err(malformed(format!("HMGET replied {fields:?}"))),
            },
            other => Err(malformed(format!("HMGET replied {other:?}"))),
        }
    }

    async fn snapshot(&self, query: &SnapshotQuery) -> Result<OrderSnapshot, StoreError> {
        let keys = self.redis.keys();
        let start = query
            .before
            .map_or_else(|| "+".to_owned(), |before| format!("({before}"));
        // `(0-0` is not a valid range end in Redis: nothing is older than it anyway.
        if query.before == Some(StreamPosition::ZERO) || query.limit == 0 {
            let mut page = self
                .snapshot(&SnapshotQuery {
                    limit: 1,
                    customer_id: Some(String::new()),
                    before: None,
                })
                .await?;
            page.orders.clear();
            page.next = None;
            return Ok(page);
        }
        let reply = self
            .redis
            .observed(
                "snapshot",
                SNAPSHOT.run(
                    &self.redis,
                    vec![keys.stream().to_owned(), keys.epoch().to_owned()],
                    vec![
                        start,
                        query.limit.to_string(),
                        query.customer_id.clone().unwrap_or_default(),
                        SNAPSHOT_SCAN.to_string(),
                    ],
                ),
            )
            .await
            .map_err(Failure::from)?;
        let Value::Array(reply) = reply else {
            return Err(malformed(format!("snapshot script replied {reply:?}")));
        };
        let Ok([position_value, epoch, found, last]) = <[Value; 4]>::try_from(reply) else {
            return Err(malformed(
                "snapshot script replied with the wrong number of values".into(),
            ));
        };
        let found = match found {
            Value::Array(found) => found,
            Value::Null => Vec::new(),
            other => return Err(malformed(format!("snapshot entries {other:?}"))),
        };
        let mut orders = Vec::with_capacity(found.len() / 2);
        for pair in found.chunks_exact(2) {
            let id = position(&pair[0])?;
            // Entries another writer made unreadable are left out, as the stream leaves them out.
            let Some(mut order) = text(&pair[1]).and_then(|data| serde_json::from_str::<serde_json::Value>(data).ok())
            else {
                continue;
            };
            let Some(fields) = order.as_object_mut() else { continue };
            fields.insert("eventId".into(), serde_json::Value::String(id.to_string()));
            orders.push(order);
        }
        // More may be older than what was scanned (the page filled up or the scan budget ran
        // out): the next page starts before it.
        let next = match last {
            Value::Null => None,
            value => Some(position(&value)?),
        };
        Ok(OrderSnapshot {
            orders,
            position: position(&position_value)?,
            epoch: text(&epoch).and_then(Epoch::from_stored),
            next,
        })
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        Ok(self.redis.ping().await?)
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
