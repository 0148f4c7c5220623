//! One suite per abstraction, every backend: each case takes a backend that opens fresh, empty
//! instances and runs unchanged against the memory backends and the Redis ones.

mod event_log;
mod order_store;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use order_events::event_log::EventLog;
use order_events::event_log::memory::MemoryLog;
use order_events::event_log::redis::RedisEventLog;
use order_events::order_store::OrderStore;
use order_events::order_store::memory::MemoryOrderStore;
use order_events::order_store::redis::RedisOrderStore;
use order_events::redis::RedisSettings;

use crate::helpers::{RedisServer, keep_last, settings};

/// An order store and the event log it writes its events to, as order-api and the gateway see
/// one deployment.
pub struct StoreWithLog {
    pub store: Arc<dyn OrderStore>,
    pub log: Arc<dyn EventLog>,
}

/// Opens empty stores and logs of one kind.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A new, empty store and its log, which keeps at most `retain` events (`None`: as many as
    /// it likes).
    async fn open(&self, retain: Option<u64>) -> StoreWithLog;
}

/// Orders the memory store keeps: more than any case creates, so only the log's bound applies.
const MEMORY_STORE_CAPACITY: usize = 100_000;

pub struct MemoryBackend;

#[async_trait]
impl Backend for MemoryBackend {
    async fn open(&self, retain: Option<u64>) -> StoreWithLog {
        let capacity = retain.map_or(100_000, |n| n as usize);
        let log = Arc::new(MemoryLog::new(capacity, None));
        StoreWithLog {
            store: Arc::new(MemoryOrderStore::new(log.clone(), MEMORY_STORE_CAPACITY)),
            log,
        }
    }
}

/// A private Redis per test; each store and log pair gets a stream key of its own, missing at
/// first as on a fresh server.
pub struct RedisBackend {
    server: RedisServer,
    opened: AtomicUsize,
}

impl RedisBackend {
    pub fn start() -> Self {
        Self {
            server: RedisServer::start(),
            opened: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn open(&self, retain: Option<u64>) -> StoreWithLog {
        let n = self.opened.fetch_add(1, Ordering::Relaxed);
        let settings = RedisSettings {
            stream_key: format!("{{orders-{n}}}:events"),
            ..settings(&self.server.url())
        };
        let retention = keep_last(retain.unwrap_or(0));
        let log = RedisEventLog::connect(&settings)
            .await
            .unwrap()
            .with_retention(retention);
        let store = RedisOrderStore::connect(&settings, retention).await.unwrap();
        StoreWithLog {
            store: Arc::new(store),
            log: Arc::new(log),
        }
    }
}
