//! Configuration: shared flag groups plus the flags only the gateway reads.

use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use order_events::auth::AuthArgs;
use order_events::config::{ConnectionArgs, EventStoreArgs, ListenArgs, ShutdownArgs, TelemetryArgs, parse_duration};
use order_events::cors::CorsArgs;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "stream-gateway",
    version,
    about = "Serves the order event stream over Server-Sent Events"
)]
pub struct Config {
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub store: EventStoreArgs,
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

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// One tail reader per process feeds a shared ring; late cursors catch up from the log.
    Hub,
    /// Every connection polls the log from its own cursor (kept for comparison).
    Poll,
}

#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// How events reach connections (Redis only; the memory log is always read directly).
    #[arg(long, env = "DELIVERY", value_enum, default_value = "hub")]
    pub delivery: DeliveryMode,

    /// A client without Last-Event-ID starts with the events of this last stretch of time
    /// (0 = only events created after it connects).
    #[arg(long, env = "REPLAY_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub replay_window: Duration,

    /// A comment is sent when a stream was silent this long (keeps proxies from cutting it).
    #[arg(long, env = "HEARTBEAT_INTERVAL", default_value = "15s", value_parser = parse_heartbeat)]
    pub heartbeat_interval: Duration,

    /// The `retry:` hint: how long clients wait before reconnecting.
    #[arg(long, env = "RECONNECT_DELAY", default_value = "2s", value_parser = parse_duration)]
    pub reconnect_delay: Duration,

    /// Most SSE connections this process serves; beyond it clients get 503 with Retry-After.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Events the hub's ring holds (Redis hub mode).
    #[arg(long, env = "RING_CAPACITY", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub ring_capacity: u32,

    /// Events per catch-up read for cursors behind the ring.
    #[arg(long, env = "CATCHUP_PAGE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub catchup_page: u32,

    /// Poll mode: time between a connection's reads.
    #[arg(long, env = "POLL_INTERVAL", default_value = "300ms", value_parser = parse_nonzero)]
    pub poll_interval: Duration,

    /// Poll mode: events per read.
    #[arg(long, env = "POLL_COUNT", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub poll_count: u32,
}

fn parse_nonzero(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be greater than 0".into());
    }
    Ok(duration)
}

fn parse_heartbeat(text: &str) -> Result<Duration, String> {
    let duration = parse_nonzero(text)?;
    if duration < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(duration)
}
