//! sse-orders binary: both services and the demo page on one port.
#![forbid(unsafe_code)]

use clap::Parser;
use order_events::shutdown::Lifecycle;
use sse_orders::{Application, Command, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Some(Command::Token(token)) = &config.command {
        println!("{}", token.mint()?);
        return Ok(());
    }
    let _telemetry = order_events::telemetry::init(&config.telemetry, "sse-orders")?;
    let lifecycle = Lifecycle::new();
    let app = Application::build(&config, lifecycle.clone()).await?;
    let address = app.local_addr()?;
    let backend = if config.store.redis_url.is_some() {
        "redis"
    } else {
        "memory"
    };
    tracing::info!(%address, backend, "sse-orders listening; open http://{address}/ for the live order page");
    tokio::spawn(lifecycle.stop_on_signal(config.shutdown.drain_delay));
    app.run_until_stopped().await?;
    tracing::info!("sse-orders stopped");
    Ok(())
}
