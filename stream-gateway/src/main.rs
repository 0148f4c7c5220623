//! stream-gateway binary: configuration, telemetry, serve, drain.
#![forbid(unsafe_code)]

use clap::Parser;
use order_events::shutdown::Lifecycle;
use stream_gateway::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = order_events::telemetry::init(&config.telemetry, "stream-gateway")?;
    let lifecycle = Lifecycle::new();
    let app = Application::build(&config, lifecycle.clone()).await?;
    tracing::info!(address = %app.local_addr()?, delivery = ?config.gateway.delivery, "stream-gateway listening");
    tokio::spawn(lifecycle.stop_on_signal(config.shutdown.drain_delay));
    app.run_until_stopped().await?;
    tracing::info!("stream-gateway stopped");
    Ok(())
}
