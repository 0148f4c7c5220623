//! stream-gateway: `GET /api/order/stream` serves order events over SSE, each connection with
//! its own cursor.
//!
//! - [`config`]: the clap configuration and the flags this service adds.
//! - [`feed`]: where events come from: the hub (one tail reader, a shared ring) or polling.
//! - [`opening`]: opening a stream on either transport: query and headers read once, access,
//!   start position and limits checked, and one answer: the stream's head, or a problem.
//! - [`delivery`]: one connection's cursor and the loop that writes its stream.
//! - [`routes`]: the stream as hyper serves it (HTTP/2, and HTTP/1.1 after a connection's first
//!   request) and the demo page.
//! - [`fast_path`]: the stream served straight on the socket to HTTP/1.1 clients. It plugs into
//!   `order_events::server` as its [`Interceptor`](order_events::server::Interceptor) (`app`
//!   passes it to `Server::bind`): the server offers it each connection's first request head
//!   before hyper sees the connection.
//! - [`fan_out`]: one writer that puts each new event into every caught-up fast-path socket,
//!   grouped by the customer a stream may see.
//! - [`redis`]: connecting the Redis event log.
//! - [`app`]: `Application`: builds the feed, binds, serves until stopped; [`run`]: the
//!   binary, from its command line to its exit.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod delivery;
pub mod fan_out;
pub mod fast_path;
pub mod feed;
pub mod opening;
pub mod redis;
pub mod routes;

pub use app::Application;
pub use config::{Config, DeliveryMode, GatewayArgs};

use clap::Parser;
use order_events::shutdown::Lifecycle;

/// The stream-gateway binary: parses `args` (the program name first), serves until a signal,
/// drains.
pub async fn run<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let config = Config::parse_from(args);
    let _telemetry = order_events::telemetry::init(&config.telemetry, "stream-gateway")?;
    let lifecycle = Lifecycle::new();
    let app = Application::build(&config, lifecycle.clone()).await?;
    tracing::info!(address = %app.local_addr()?, delivery = ?config.gateway.delivery, "stream-gateway listening");
    tokio::spawn(lifecycle.stop_on_signal(config.shutdown.drain_delay));
    app.run_until_stopped().await?;
    tracing::info!("stream-gateway stopped");
    Ok(())
}
