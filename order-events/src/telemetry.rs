//! Logs (JSON or text) through `tracing`, and traces exported over OTLP when configured.

use std::io::IsTerminal;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryArgs};

/// Flushes pending spans when dropped at the end of `main`.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("trace export shutdown failed: {error}");
            }
        }
    }
}

pub fn init(args: &TelemetryArgs, default_service: &str) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(&args.log_filter)
        .map_err(|e| anyhow::anyhow!("--log-filter/RUST_LOG `{}` is invalid: {e}", args.log_filter))?;
    let fmt = match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_current_span(true).boxed(),
        // Colour only for a terminal: escape codes make piped and collected logs unreadable.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let service = args.service_name.clone().unwrap_or_else(|| default_service.to_owned());
    let provider = match &args.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| anyhow::anyhow!("--otlp-endpoint `{endpoint}`: {e}"))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(service.clone())
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service.clone()))
            .boxed()
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| anyhow::anyhow!("tracing already initialised: {e}"))?;
    Ok(TelemetryGuard { provider })
}

/// The W3C `traceparent` of the current span, or of the incoming request when traces are not
/// exported, so the event written for a request can be linked back to it.
pub fn current_traceparent(incoming: Option<&str>) -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier
        .remove("traceparent")
        .or_else(|| incoming.filter(|v| is_traceparent(v)).map(str::to_owned))
}

/// `00-<32 hex>-<16 hex>-<2 hex>`.
pub fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    parts.len() == 4 && hex(parts[0], 2) && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2)
}

/// The context of a parent `traceparent`, for linking a delivery span to the request that
/// created the event.
pub fn context_from_traceparent(traceparent: &str) -> opentelemetry::Context {
    let mut carrier = std::collections::HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    TraceContextPropagator::new().extract(&carrier)
}
