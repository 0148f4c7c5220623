//! order-api binary: configuration, telemetry, serve, drain ([`order_api::run`]).
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    order_api::run(std::env::args_os()).await
}
