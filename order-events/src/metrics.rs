//! The Prometheus metrics both services expose on `/metrics`.

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric of one application, in a registry of its own: each `Application` builds one and
/// hands it to everything it runs, so several applications in one process (tests) never share
/// counters.
pub struct Metrics {
    pub registry: Registry,
    pub sse_connections: IntGauge,
    pub sse_connections_total: IntCounterVec,
    pub events_delivered: IntCounter,
    pub delivery_lag: Histogram,
    pub catchup_reads: IntCounter,
    pub resets: IntCounterVec,
    pub cursor_errors: IntCounterVec,
    pub history_changes: IntCounter,
    pub orders_created: IntCounter,
    pub redis_errors: IntCounterVec,
    pub redis_command_seconds: HistogramVec,
    pub http_requests: IntCounterVec,
    pub http_request_seconds: HistogramVec,
    pub event_log_retained: IntGauge,
    pub ready: IntGauge,
    pub fan_out_parked: IntGauge,
    pub fan_out_handbacks: IntCounter,
    pub fan_out_deliveries: IntCounter,
    pub fan_out_cpu: CounterVec,
    pub connections_closed: IntCounterVec,
    pub accept_errors: IntCounterVec,
}

const PREFIX: &str = "sse_orders";

fn name(short: &str) -> String {
    format!("{PREFIX}_{short}")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        // Metric definitions are constants; they can only fail on a programming error.
        #[allow(clippy::unwrap_used)]
        let metrics = Self {
            sse_connections: IntGauge::new(name("sse_connections"), "Open SSE connections").unwrap(),
            sse_connections_total: IntCounterVec::new(
                Opts::new(name("sse_connections_total"), "SSE connection attempts by outcome"),
                &["outcome"],
            )
            .unwrap(),
            events_delivered: IntCounter::new(name("events_delivered_total"), "Events written to SSE connections")
                .unwrap(),
            delivery_lag: Histogram::with_opts(
                HistogramOpts::new(
                    name("delivery_lag_seconds"),
                    "Time from event creation to its write to a client",
                )
                .buckets(latency_buckets.clone()),
            )
            .unwrap(),
            catchup_reads: IntCounter::new(
                name("catchup_reads_total"),
                "Reads from the log by cursors behind the ring",
            )
            .unwrap(),
            resets: IntCounterVec::new(
                Opts::new(
                    name("resets_total"),
                    "Reset events sent, by reason (cursor-behind-retention, history-lost, cursor-ahead-of-log)",
                ),
                &["reason"],
            )
            .unwrap(),
            cursor_errors: IntCounterVec::new(
                Opts::new(
                    name("cursor_errors_total"),
                    "Streams whose cursor the event store refused to read after, by what the stream did (reset, close)",
                ),
                &["action"],
            )
            .unwrap(),
            history_changes: IntCounter::new(
                name("history_changes_total"),
                "Times the tail reader found the stream's history replaced (new epoch) and re-checked every cursor",
            )
            .unwrap(),
            orders_created: IntCounter::new(name("orders_created_total"), "Orders created").unwrap(),
            redis_errors: IntCounterVec::new(
                Opts::new(name("redis_errors_total"), "Failed Redis operations"),
                &["op"],
            )
            .unwrap(),
            redis_command_seconds: HistogramVec::new(
                HistogramOpts::new(name("redis_command_seconds"), "Redis operation latency")
                    .buckets(latency_buckets.clone()),
                &["op"],
            )
            .unwrap(),
            http_requests: IntCounterVec::new(
                Opts::new(name("http_requests_total"), "HTTP requests by route and status"),
                &["method", "route", "status"],
            )
            .unwrap(),
            http_request_seconds: HistogramVec::new(
                HistogramOpts::new(
                    name("http_request_seconds"),
                    "HTTP request latency (until response headers)",
                )
                .buckets(latency_buckets),
                &["method", "route"],
            )
            .unwrap(),
            event_log_retained: IntGauge::new(name("event_log_retained_events"), "Events held in this process' ring")
                .unwrap(),
            ready: IntGauge::new(name("ready"), "1 when the process reports ready").unwrap(),
            fan_out_parked: IntGauge::new(
                name("fan_out_parked_connections"),
                "Caught-up connections the fan-out writer writes to directly",
            )
            .unwrap(),
            fan_out_handbacks: IntCounter::new(
                name("fan_out_handbacks_total"),
                "Connections handed back to their own task (socket full, cursor behind, or shutdown)",
            )
            .unwrap(),
            fan_out_deliveries: IntCounter::new(
                name("fan_out_deliveries_total"),
                "Events the fan-out writer wrote into parked connections (part of events_delivered_total)",
            )
            .unwrap(),
            fan_out_cpu: CounterVec::new(
                Opts::new(
                    name("fan_out_cpu_seconds_total"),
                    "CPU time of the fan-out writer by work: events (new events into parked connections), heartbeats, admissions (catching up connections that park)",
                ),
                &["work"],
            )
            .unwrap(),
            connections_closed: IntCounterVec::new(
                Opts::new(
                    name("connections_closed_total"),
                    "Connections the server closed: a request head not complete within --header-read-timeout, nothing in flight for --idle-timeout, or a malformed or oversized first head",
                ),
                &["reason"],
            )
            .unwrap(),
            accept_errors: IntCounterVec::new(
                Opts::new(
                    name("accept_errors_total"),
                    "Failed accepts; fd_exhausted when the process or system is out of file descriptors",
                ),
                &["kind"],
            )
            .unwrap(),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.sse_connections.clone()),
            Box::new(metrics.sse_connections_total.clone()),
            Box::new(metrics.events_delivered.clone()),
            Box::new(metrics.delivery_lag.clone()),
            Box::new(metrics.catchup_reads.clone()),
            Box::new(metrics.resets.clone()),
            Box::new(metrics.cursor_errors.clone()),
            Box::new(metrics.history_changes.clone()),
            Box::new(metrics.orders_created.clone()),
            Box::new(metrics.redis_errors.clone()),
            Box::new(metrics.redis_command_seconds.clone()),
            Box::new(metrics.http_requests.clone()),
            Box::new(metrics.http_request_seconds.clone()),
            Box::new(metrics.event_log_retained.clone()),
            Box::new(metrics.ready.clone()),
            Box::new(metrics.fan_out_parked.clone()),
            Box::new(metrics.fan_out_handbacks.clone()),
            Box::new(metrics.fan_out_deliveries.clone()),
            Box::new(metrics.fan_out_cpu.clone()),
            Box::new(metrics.connections_closed.clone()),
            Box::new(metrics.accept_errors.clone()),
        ];
        for collector in collectors {
            // Names are unique constants, so registration cannot collide.
            #[allow(clippy::unwrap_used)]
            metrics.registry.register(collector).unwrap();
        }
        metrics
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// Counts one answered HTTP request and its time: the one place both transports record
    /// `http_requests_total` and `http_request_duration_seconds`.
    pub fn observe_http(&self, method: &str, route: &str, status: axum::http::StatusCode, started: std::time::Instant) {
        self.http_requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.http_request_seconds
            .with_label_values(&[method, route])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Times one Redis operation and counts its failure.
    pub fn observe_redis<T, E>(&self, op: &str, started: std::time::Instant, result: &Result<T, E>) {
        self.redis_command_seconds
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.redis_errors.with_label_values(&[op]).inc();
        }
    }
}
