//! Flag groups shared by the binaries; each flag has an environment variable of the same name.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Parses durations such as `10s`, `300ms`, `1h` or a bare `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text.trim()).map_err(|e| format!("`{text}` is not a duration such as 10s or 300ms: {e}"))
}

#[derive(Args, Debug, Clone)]
pub struct ListenArgs {
    /// Address to serve HTTP/1.1 and cleartext HTTP/2 on (port 0 picks a free port).
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Length of the queue of connections waiting to be accepted.
    #[arg(long, env = "LISTEN_BACKLOG", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub listen_backlog: u32,
}

/// How long a connection may take to send a request, and to stay open with nothing to do.
#[derive(Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// A connection must send a complete request head within this (counted from the accept for
    /// the first request, from its first byte for later keep-alive requests); else it is closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "5s", value_parser = parse_timeout)]
    pub header_read_timeout: Duration,

    /// An HTTP/1.1 keep-alive or h2c connection with no request in flight is closed after this.
    /// Open SSE streams always have a response in flight and are never closed by it.
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,
}

impl Default for ConnectionArgs {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(duration)
}

#[derive(Args, Debug, Clone)]
pub struct EventStoreArgs {
    /// Redis URL (redis://, rediss://, redis-sentinel://, redis-cluster://). Without it events and
    /// orders live in this process' memory.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Redis stream key; its `{hash tag}` keeps the orders on the same cluster slot.
    #[arg(long, env = "STREAM_KEY", default_value = "{orders}:events")]
    pub stream_key: String,

    /// Timeout of each Redis command.
    #[arg(long, env = "REDIS_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub redis_timeout: Duration,

    /// In-memory log: the most events held.
    #[arg(long, env = "LOG_CAPACITY", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub log_capacity: u64,

    /// In-memory log: the oldest event held (0 = no age bound).
    #[arg(long, env = "LOG_MAX_AGE", default_value = "1h", value_parser = parse_duration)]
    pub log_max_age: Duration,
}

impl EventStoreArgs {
    pub fn log_max_age(&self) -> Option<Duration> {
        (!self.log_max_age.is_zero()).then_some(self.log_max_age)
    }
}

#[derive(Args, Debug, Clone)]
pub struct ShutdownArgs {
    /// After SIGTERM, how long to keep serving while reporting not ready (load balancers
    /// stop routing here in the meantime).
    #[arg(long, env = "DRAIN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub drain_delay: Duration,

    /// After the drain delay, how long open streams and requests get to finish before exit.
    /// SSE streams close spread over half this window (at most 10 s) so clients do not all
    /// reconnect at once.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Args, Debug, Clone)]
pub struct TelemetryArgs {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// OTLP gRPC endpoint for traces (e.g. http://otel-collector:4317); no export when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Service name reported in traces.
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,
}
