//! sse-orders binary: both services and the demo page on one port. Started under the name
//! `order-api` or `stream-gateway` (a link to it, as in the container image), it is that
//! service instead, flags and all: one binary in the image rather than three.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::Path;

use clap::Parser;
use order_events::shutdown::Lifecycle;
use sse_orders::{Application, Command, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = args.first().map(Path::new).and_then(Path::file_name);
    match invoked_as.and_then(|name| name.to_str()) {
        Some("order-api") => return order_api::run(args).await,
        Some("stream-gateway") => return stream_gateway::run(args).await,
        _ => {}
    }
    let config = Config::parse_from(args);
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
