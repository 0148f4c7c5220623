//! `Application`: builds the event log and feed from the configuration, binds, and serves until
//! the lifecycle stops. Integration tests drive the service through this type.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use order_events::auth::{AuthMode, Authenticator};
use order_events::config::{EventStoreArgs, ShutdownArgs};
use order_events::cors::Cors;
use order_events::event_log::EventLog;
use order_events::event_log::memory::MemoryLog;
use order_events::metrics::Metrics;
use order_events::ops::{ReadinessCheck, finish_router};
use order_events::server::{Interceptor, Server};
use order_events::shutdown::Lifecycle;
use tokio::sync::Semaphore;

use crate::config::{Config, DeliveryMode, GatewayArgs};
use crate::delivery::DeliverySettings;
use crate::fan_out::FanOut;
use crate::fast_path::SseFastPath;
use crate::feed::Feed;
use crate::opening::GatewayState;
use crate::routes::router;

/// Ready while the log answers and, in hub mode, the tail reader follows it.
pub struct FeedReady(pub Arc<Feed>);

#[async_trait]
impl ReadinessCheck for FeedReady {
    async fn check(&self) -> Result<(), String> {
        self.0.log().check_ready().await.map_err(|e| e.to_string())?;
        if !self.0.is_following() {
            return Err("the tail reader has not reached the end of the log yet".into());
        }
        Ok(())
    }
}

/// Ages out the memory log even while nothing is appended.
pub fn spawn_memory_sweeper(log: Arc<MemoryLog>, lifecycle: &Lifecycle, metrics: Arc<Metrics>) {
    let stop = lifecycle.stop_token();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    log.evict_expired();
                    metrics.event_log_retained.set(log.ring().len() as i64);
                }
            }
        }
    });
}

/// The feed the flags describe. `memory_log` is used when no Redis URL is given (the combined
/// binary passes the log its order-api writes to).
pub async fn build_feed(
    store: &EventStoreArgs,
    gateway: &GatewayArgs,
    memory_log: Option<Arc<MemoryLog>>,
    lifecycle: &Lifecycle,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Feed> {
    let Some(url) = &store.redis_url else {
        let log =
            memory_log.unwrap_or_else(|| Arc::new(MemoryLog::new(store.log_capacity as usize, store.log_max_age())));
        spawn_memory_sweeper(log.clone(), lifecycle, metrics);
        return Ok(Feed::memory(log));
    };
    let log: Arc<dyn EventLog> = crate::redis::connect(url, store, metrics.clone()).await?;
    Ok(match gateway.delivery {
        // The tail reader outlives the stop signal: draining streams are fed until each closes.
        DeliveryMode::Hub => Feed::hub(log, gateway.ring_capacity as usize, lifecycle.finished_token(), metrics),
        DeliveryMode::Poll => Feed::Poll {
            log,
            interval: gateway.poll_interval,
            count: gateway.poll_count as usize,
        },
    })
}

/// The gateway's routes over `feed`, and the fast path that serves the same stream to HTTP/1.1
/// clients straight on the socket.
pub fn gateway_router(
    feed: Arc<Feed>,
    gateway: &GatewayArgs,
    shutdown: &ShutdownArgs,
    lifecycle: &Lifecycle,
    metrics: Arc<Metrics>,
    auth: Arc<Authenticator>,
    cors: Arc<Cors>,
) -> (Router, Arc<dyn Interceptor>) {
    let settings = DeliverySettings {
        heartbeat: gateway.heartbeat_interval,
        reconnect_delay: gateway.reconnect_delay,
        // Half the grace spreads reconnects while leaving time for the last frames to flush.
        close_spread: (shutdown.shutdown_grace / 2).min(Duration::from_secs(10)),
        catchup_page: gateway.catchup_page as usize,
        metrics: metrics.clone(),
    };
    let state = GatewayState {
        feed,
        settings: Arc::new(settings),
        replay_window: gateway.replay_window,
        connections: Arc::new(Semaphore::new(gateway.max_connections as usize)),
        stop: lifecycle.stop_token(),
        auth,
        cors,
    };
    let fan_out = match &*state.feed {
        Feed::Hub { ring, .. } => Some(FanOut::spawn(
            ring.clone(),
            gateway.heartbeat_interval,
            lifecycle.stop_token(),
            metrics,
        )),
        Feed::Poll { .. } => None,
    };
    (router(state.clone()), Arc::new(SseFastPath { state, fan_out }))
}

pub struct Application {
    server: Server,
}

impl Application {
    pub async fn build(config: &Config, lifecycle: Lifecycle) -> anyhow::Result<Self> {
        if config.store.redis_url.is_none() {
            tracing::warn!(
                "no --redis-url: stream-gateway keeps events in its own memory, shared with no other process; \
                 run `sse-orders` for the single-process setup"
            );
        }
        let auth = Authenticator::from_args(&config.auth, AuthMode::Jwt, lifecycle.stop_token()).await?;
        let cors = Cors::new(&config.cors);
        let metrics = Arc::new(Metrics::new());
        let feed = Arc::new(build_feed(&config.store, &config.gateway, None, &lifecycle, metrics.clone()).await?);
        let (routes, fast_path) = gateway_router(
            feed.clone(),
            &config.gateway,
            &config.shutdown,
            &lifecycle,
            metrics.clone(),
            auth,
            cors.clone(),
        );
        let router = cors.apply(finish_router(
            routes,
            Arc::new(FeedReady(feed)),
            lifecycle.clone(),
            metrics.clone(),
        ));
        let server = Server::bind(
            &config.listen,
            &config.connection,
            router,
            Some(fast_path),
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
