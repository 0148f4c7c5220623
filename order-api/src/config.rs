//! Configuration: shared flag groups plus the flags only order-api reads.

use std::time::Duration;

use clap::{Args, Parser};
use order_events::auth::AuthArgs;
use order_events::config::{ConnectionArgs, EventStoreArgs, ListenArgs, ShutdownArgs, TelemetryArgs, parse_duration};
use order_events::cors::CorsArgs;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "order-api",
    version,
    about = "Validates and stores orders and appends their OrderCreated events"
)]
pub struct Config {
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub store: EventStoreArgs,
    #[command(flatten)]
    pub api: OrderApiArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub cors: CorsArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

#[derive(Args, Debug, Clone)]
pub struct OrderApiArgs {
    /// Largest accepted request body in bytes; larger bodies get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(256..=16_777_216))]
    pub max_body_bytes: u64,

    /// A request body must arrive in full within this, counted from the end of its head; one
    /// still trickling in then gets 408 and its connection is closed.
    #[arg(long, env = "BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_body_read_timeout)]
    pub body_read_timeout: Duration,

    /// Redis retention: keep about this many stream entries (0 = no count bound).
    #[arg(long, env = "STREAM_MAXLEN", default_value_t = 1_000_000)]
    pub stream_maxlen: u64,

    /// Redis retention: drop stream entries older than this (0 = no age bound).
    #[arg(long, env = "STREAM_MAX_AGE", default_value = "24h", value_parser = parse_duration)]
    pub stream_max_age: Duration,

    /// How long an Idempotency-Key is remembered.
    #[arg(long, env = "IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,

    /// In-memory backend: the most orders kept (the oldest are forgotten first).
    #[arg(long, env = "ORDER_CAPACITY", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub order_capacity: u64,
}

fn parse_body_read_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(duration)
}
