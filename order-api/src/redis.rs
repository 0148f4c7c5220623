//! Connecting order-api to Redis.

use std::sync::Arc;

use order_events::config::EventStoreArgs;
use order_events::metrics::Metrics;
use order_events::order_store::OrderStore;
use order_events::order_store::redis::RedisOrderStore;
use order_events::redis::{RedisSettings, RetentionSettings};

use crate::config::OrderApiArgs;

pub async fn connect(
    url: &str,
    store: &EventStoreArgs,
    api: &OrderApiArgs,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<dyn OrderStore>> {
    let settings = RedisSettings {
        url: url.to_owned(),
        stream_key: store.stream_key.clone(),
        command_timeout: store.redis_timeout,
    };
    let retention = RetentionSettings {
        max_len: api.stream_maxlen,
        max_age: api.stream_max_age,
        idempotency_ttl: api.idempotency_ttl,
    };
    let orders = RedisOrderStore::connect(&settings, retention)
        .await
        .map_err(|e| anyhow::anyhow!("--redis-url: {e}"))?
        .with_metrics(metrics);
    Ok(Arc::new(orders))
}
