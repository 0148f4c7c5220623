//! sse-orders in one process: order-api and stream-gateway mounted on one port, sharing one
//! event log (in memory by default, Redis when `--redis-url` is given).
//!
//! - [`Config`]: every flag of both services.
//! - [`Application`]: builds both routers over the shared log, binds, serves until stopped.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use order_api::OrderApiArgs;
use order_api::app::{StoreReady, order_store};
use order_events::auth::{AuthArgs, AuthMode, Authenticator};
use order_events::config::{EventStoreArgs, ListenArgs, ShutdownArgs, TelemetryArgs};
use order_events::cors::{Cors, CorsArgs};
use order_events::event_log::memory::MemoryLog;
use order_events::ops::{AllReady, finish_router};
use order_events::server::Server;
use order_events::shutdown::Lifecycle;
use stream_gateway::GatewayArgs;
use stream_gateway::app::{FeedReady, build_feed, gateway_router};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "sse-orders",
    version,
    about = "Orders streamed to browsers over Server-Sent Events: order-api, stream-gateway and the demo page on one port"
)]
pub struct Config {
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub store: EventStoreArgs,
    #[command(flatten)]
    pub api: OrderApiArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub cors: CorsArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

pub struct Application {
    server: Server,
}

impl Application {
    pub async fn build(config: &Config, lifecycle: Lifecycle) -> anyhow::Result<Self> {
        let memory_log = config.store.redis_url.is_none().then(|| {
            Arc::new(MemoryLog::new(
                config.store.log_capacity as usize,
                config.store.log_max_age(),
            ))
        });
        // Zero-config by default: `cargo run` serves the demo without tokens (with a warning).
        let auth = Authenticator::from_args(&config.auth, AuthMode::None, lifecycle.stop_token()).await?;
        let cors = Cors::new(&config.cors);
        let store = order_store(&config.store, &config.api, memory_log.clone()).await?;
        let feed = Arc::new(build_feed(&config.store, &config.gateway, memory_log, &lifecycle).await?);
        let api = order_api::router(order_api::ApiState {
            store: store.clone(),
            max_body_bytes: config.api.max_body_bytes as usize,
            auth: auth.clone(),
        });
        let (gateway, fast_path) = gateway_router(
            feed.clone(),
            &config.gateway,
            &config.shutdown,
            &lifecycle,
            auth,
            cors.clone(),
        );
        let readiness = AllReady(vec![Arc::new(StoreReady(store)), Arc::new(FeedReady(feed))]);
        let router = cors.apply(finish_router(
            api.merge(gateway),
            Arc::new(readiness),
            lifecycle.clone(),
        ));
        let server = Server::bind(
            &config.listen,
            router,
            Some(fast_path),
            lifecycle,
            config.shutdown.shutdown_grace,
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
