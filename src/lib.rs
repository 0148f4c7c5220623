//! sse-orders in one process: order-api and stream-gateway mounted on one port, sharing one
//! event log (in memory by default, Redis when `--redis-url` is given).
//!
//! - [`Config`]: every flag of both services, and the `token` subcommand.
//! - [`TokenArgs`]: minting an HS256 development token.
//! - [`Application`]: builds both routers over the shared log, binds, serves until stopped.
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use order_api::OrderApiArgs;
use order_api::app::{StoreReady, order_store};
use order_events::auth::{AuthArgs, AuthMode, Authenticator, DevClaims, mint_hs256};
use order_events::config::{ConnectionArgs, EventStoreArgs, ListenArgs, ShutdownArgs, TelemetryArgs};
use order_events::cors::{Cors, CorsArgs};
use order_events::event_log::memory::MemoryLog;
use order_events::metrics::Metrics;
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
#[command(args_conflicts_with_subcommands = true)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
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

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Print an HS256 token signed with a shared secret, for development and tests (run the
    /// services with the same --jwt-secret).
    Token(TokenArgs),
}

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// The HS256 secret (at least 32 bytes), the same the services get as --jwt-secret.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Confine the token to this customer's orders (the customer_id claim).
    #[arg(long)]
    pub customer: Option<String>,
    /// Scopes to grant, comma-separated: orders:write, orders:read, orders:read:all.
    #[arg(long, value_delimiter = ',', default_value = "orders:read,orders:write", value_parser = parse_scope)]
    pub scope: Vec<String>,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = order_events::config::parse_duration)]
    pub ttl: std::time::Duration,
    /// The `sub` claim.
    #[arg(long, default_value = "dev")]
    pub subject: String,
    /// The `iss` claim (match the services' --jwt-issuer).
    #[arg(long, env = "JWT_ISSUER")]
    pub issuer: Option<String>,
    /// The `aud` claim (match the services' --jwt-audience).
    #[arg(long, env = "JWT_AUDIENCE")]
    pub audience: Option<String>,
}

fn parse_scope(text: &str) -> Result<String, String> {
    use order_events::auth::{SCOPE_READ, SCOPE_READ_ALL, SCOPE_WRITE};
    match text.trim() {
        scope @ (SCOPE_READ | SCOPE_READ_ALL | SCOPE_WRITE) => Ok(scope.to_owned()),
        other => Err(format!(
            "`{other}` is not one of orders:write, orders:read, orders:read:all"
        )),
    }
}

impl TokenArgs {
    /// The signed token.
    pub fn mint(&self) -> anyhow::Result<String> {
        if self.secret.len() < 32 {
            anyhow::bail!("--secret must be at least 32 bytes long, like the services' --jwt-secret");
        }
        let scopes: Vec<&str> = self.scope.iter().map(String::as_str).collect();
        let mut claims = DevClaims::new(&self.subject, &scopes, self.customer.as_deref(), self.ttl);
        claims.iss = self.issuer.clone();
        claims.aud = self.audience.clone();
        Ok(mint_hs256(self.secret.as_bytes(), &claims)?)
    }
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
        // One registry for both services: they are one process to Prometheus.
        let metrics = Arc::new(Metrics::new());
        let store = order_store(&config.store, &config.api, memory_log.clone(), metrics.clone()).await?;
        let feed = Arc::new(build_feed(&config.store, &config.gateway, memory_log, &lifecycle, metrics.clone()).await?);
        let api = order_api::router(order_api::ApiState {
            store: store.clone(),
            max_body_bytes: config.api.max_body_bytes as usize,
            body_read_timeout: config.api.body_read_timeout,
            metrics: metrics.clone(),
            auth: auth.clone(),
        });
        let (gateway, fast_path) = gateway_router(
            feed.clone(),
            &config.gateway,
            &config.shutdown,
            &lifecycle,
            metrics.clone(),
            auth,
            cors.clone(),
        );
        let readiness = AllReady(vec![Arc::new(StoreReady(store)), Arc::new(FeedReady(feed))]);
        let router = cors.apply(finish_router(
            api.merge(gateway),
            Arc::new(readiness),
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
