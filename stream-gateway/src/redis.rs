//! Connecting the gateway to the Redis event log.

use std::sync::Arc;

use order_events::config::EventStoreArgs;
use order_events::event_log::redis::RedisEventLog;
use order_events::metrics::Metrics;
use order_events::redis::RedisSettings;

pub async fn connect(url: &str, store: &EventStoreArgs, metrics: Arc<Metrics>) -> anyhow::Result<Arc<RedisEventLog>> {
    let settings = RedisSettings {
        url: url.to_owned(),
        stream_key: store.stream_key.clone(),
        command_timeout: store.redis_timeout,
    };
    let log = RedisEventLog::connect(&settings)
        .await
        .map_err(|e| anyhow::anyhow!("--redis-url: {e}"))?
        .with_metrics(metrics);
    Ok(Arc::new(log))
}
