//! order-api binary: configuration, telemetry, serve, drain.
#![forbid(unsafe_code)]

use clap::Parser;
use order_api::{Application, Config};
use order_events::shutdown::Lifecycle;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = order_events::telemetry::init(&config.telemetry, "order-api")?;
    let lifecycle = Lifecycle::new();
    let app = Application::build(&config, lifecycle.clone()).await?;
    tracing::info!(address = %app.local_addr()?, "order-api listening");
    tokio::spawn(lifecycle.stop_on_signal(config.shutdown.drain_delay));
    app.run_until_stopped().await?;
    tracing::info!("order-api stopped");
    Ok(())
}
