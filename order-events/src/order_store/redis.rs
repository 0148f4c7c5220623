//! Orders in Redis: one script checks the idempotency key, appends the event, stores the order
//! and applies retention, so a request is written completely or not at all.

use std::time::SystemTime;

use async_trait::async_trait;
use fred::interfaces::{ClientLike, HashesInterface};
use fred::types::Value;
use uuid::Uuid;

use super::{CreateOutcome, NewOrder, OrderStore, StoreError};
use crate::domain::{CreatedOrder, Order};
use crate::position::Epoch;
use crate::redis_client::{
    Failure, LuaScript, RedisConnection, RedisSettings, RetentionSettings, StreamKeys, append_args, position,
    retention_lua, text,
};

/// KEYS: stream, trim marker, the new order's hash, the idempotency record (only touched when
/// ARGV[7] is '1', but always named so that a cluster routes every key to one slot), epoch.
/// ARGV: deadline ms, max_len, max_age ms, order JSON, customer, traceparent, use key ('1'/'0'),
/// fingerprint, idempotency TTL ms (0 = no expiry), order id, order key prefix, epoch to record
/// if the stream has none.
///
/// A replay reads the original order's hash, whose name is built here from its id: it shares the
/// stream key's hash tag, so it lives on the script's slot (cluster URLs require the tag).
static CREATE_ORDER: LuaScript = LuaScript::new(concat!(
    retention_lua!(),
    r#"
local now_ms = server_now_ms()
if now_ms > tonumber(ARGV[1]) then return expired(now_ms) end
if ARGV[7] == '1' then
  local seen = redis.call('GET', KEYS[4])
  if seen then
    local fingerprint, order_id = string.match(seen, '^(%S+) (%S+)$')
    if fingerprint ~= ARGV[8] then return {'conflict'} end
    local original = redis.call('HMGET', ARGV[11] .. order_id, 'order', 'eventId')
    if original[1] and original[2] then return {'replayed', original[1], original[2]} end
    -- The original order is gone (deleted by hand): this request creates it anew.
  end
end
ensure_epoch(KEYS[5], ARGV[12])
local id = redis.call('XADD', KEYS[1], '*', unpack(event_fields(ARGV[4], ARGV[5], ARGV[6])))
redis.call('HSET', KEYS[3], 'order', ARGV[4], 'eventId', id)
if ARGV[7] == '1' then
  local record = ARGV[8] .. ' ' .. ARGV[10]
  if tonumber(ARGV[9]) > 0 then
    redis.call('SET', KEYS[4], record, 'PX', ARGV[9])
  else
    redis.call('SET', KEYS[4], record)
  end
end
apply_retention(KEYS[1], KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]), now_ms)
return {'created', id}
"#
));

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

    async fn check_ready(&self) -> Result<(), StoreError> {
        Ok(self.redis.ping().await?)
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
