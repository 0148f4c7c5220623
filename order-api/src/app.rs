//! `Application`: builds the order store from the configuration, binds, and serves until the
//! lifecycle stops. Integration tests drive the service through this type.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use order_events::auth::{AuthMode, Authenticator};
use order_events::config::EventStoreArgs;
use order_events::cors::Cors;
use order_events::event_log::memory::MemoryLog;
use order_events::metrics::Metrics;
use order_events::ops::{ReadinessCheck, finish_router};
use order_events::order_store::OrderStore;
use order_events::order_store::memory::MemoryOrderStore;
use order_events::server::Server;
use order_events::shutdown::Lifecycle;

use crate::config::{Config, OrderApiArgs};
use crate::routes::{ApiState, router};

pub struct Application {
    server: Server,
}

/// Ready while the store answers.
pub struct StoreReady(pub Arc<dyn OrderStore>);

#[async_trait]
impl ReadinessCheck for StoreReady {
    async fn check(&self) -> Result<(), String> {
        self.0.check_ready().await.map_err(|e| e.to_string())
    }
}

/// The order store the flags describe: Redis when a URL is given, else memory backed by `log`.
pub async fn order_store(
    store: &EventStoreArgs,
    api: &OrderApiArgs,
    memory_log: Option<Arc<MemoryLog>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<dyn OrderStore>> {
    match &store.redis_url {
        Some(url) => crate::redis::connect(url, store, api, metrics).await,
        None => {
            let log = memory_log
                .unwrap_or_else(|| Arc::new(MemoryLog::new(store.log_capacity as usize, store.log_max_age())));
            Ok(Arc::new(MemoryOrderStore::new(log, api.order_capacity as usize)))
        }
    }
}

impl Application {
    pub async fn build(config: &Config, lifecycle: Lifecycle) -> anyhow::Result<Self> {
        if config.store.redis_url.is_none() {
            tracing::warn!(
                "no --redis-url: order-api keeps events in its own memory, shared with no other process; \
                 run `sse-orders` for the single-process setup"
            );
        }
        let auth = Authenticator::from_args(&config.auth, AuthMode::Jwt, lifecycle.stop_token()).await?;
        let metrics = Arc::new(Metrics::new());
        let store = order_store(&config.store, &config.api, None, metrics.clone()).await?;
        let state = ApiState {
            store: store.clone(),
            max_body_bytes: config.api.max_body_bytes as usize,
            body_read_timeout: config.api.body_read_timeout,
            metrics: metrics.clone(),
            auth,
        };
        let router = finish_router(
            router(state),
            Arc::new(StoreReady(store)),
            lifecycle.clone(),
            metrics.clone(),
        );
        let router = Cors::new(&config.cors).apply(router);
        let server = Server::bind(
            &config.listen,
            &config.connection,
            router,
            None,
            lifecycle,
            config.shutdown.shutdown_grace,
            metrics,
        )?;
        Ok(Self { server })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.server.local_addr()
    }

    pub async fn run_until_stopped(self) -> io::Result<()> {
        self.server.run_until_stopped().await
    }
}
