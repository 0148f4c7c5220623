//! order-api: `POST /api/order` validates an order and stores it together with its
//! `OrderCreated` event; `GET /api/order/{id}` reads it back.
//!
//! - [`config`]: the clap configuration of the binary and the flags this service adds.
//! - [`routes`]: the HTTP handlers and `router(state)`.
//! - [`redis`]: connecting the Redis order store.
//! - [`app`]: `Application`: builds the store, binds, serves until stopped; [`run`]: the
//!   binary, from its command line to its exit.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod redis;
pub mod routes;

pub use app::Application;
pub use config::{Config, OrderApiArgs};
pub use routes::{ApiState, router};

use clap::Parser;
use order_events::shutdown::Lifecycle;

/// The order-api binary: parses `args` (the program name first), serves until a signal, drains.
pub async fn run<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let config = Config::parse_from(args);
    let _telemetry = order_events::telemetry::init(&config.telemetry, "order-api")?;
    let lifecycle = Lifecycle::new();
    let app = Application::build(&config, lifecycle.clone()).await?;
    tracing::info!(address = %app.local_addr()?, "order-api listening");
    tokio::spawn(lifecycle.stop_on_signal(config.shutdown.drain_delay));
    app.run_until_stopped().await?;
    tracing::info!("order-api stopped");
    Ok(())
}
