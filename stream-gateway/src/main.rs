//! stream-gateway binary: configuration, telemetry, serve, drain ([`stream_gateway::run`]).
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stream_gateway::run(std::env::args_os()).await
}
