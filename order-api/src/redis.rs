//! Connecting order-api to Redis.

use std::sync::Arc;

use order_events::config::EventStoreArgs;
use order_events::order_store::OrderStore;

use crate::config::OrderApiArgs;

pub async fn connect(_url: &str, _store: &EventStoreArgs, _api: &OrderApiArgs) -> anyhow::Result<Arc<dyn OrderStore>> {
    anyhow::bail!("--redis-url: the Redis backend is not available in this build")
}
