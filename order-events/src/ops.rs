//! Operational routes every service mounts (`/healthz`, `/readyz`, `/metrics`) and the HTTP
//! metrics middleware.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::shutdown::Lifecycle;

/// What a service must reach to be ready (its Redis, for instance).
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    async fn check(&self) -> Result<(), String>;
}

/// Ready when every check passes.
pub struct AllReady(pub Vec<Arc<dyn ReadinessCheck>>);

#[async_trait]
impl ReadinessCheck for AllReady {
    async fn check(&self) -> Result<(), String> {
        for check in &self.0 {
            check.check().await?;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct OpsState {
    readiness: Arc<dyn ReadinessCheck>,
    lifecycle: Lifecycle,
    metrics: Arc<Metrics>,
}

/// How often the process checks its own readiness, so `sse_orders_ready` is current even when
/// nothing scrapes `/readyz`.
pub const READINESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps `sse_orders_ready` up to date from the process itself: the readiness checks run every
/// [`READINESS_INTERVAL`] (and draining sets it to 0 at once) until the lifecycle stops.
pub fn spawn_readiness_probe(readiness: Arc<dyn ReadinessCheck>, lifecycle: Lifecycle, metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        let stop = lifecycle.stop_token();
        let mut tick = tokio::time::interval(READINESS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let ready = !lifecycle.is_draining() && readiness.check().await.is_ok();
            // Draining may have begun while the checks ran.
            metrics.ready.set(i64::from(ready && !lifecycle.is_draining()));
        }
        metrics.ready.set(0);
    });
}

pub fn ops_router(readiness: Arc<dyn ReadinessCheck>, lifecycle: Lifecycle, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], "{\"status\":\"ok\"}") }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(OpsState {
            readiness,
            lifecycle,
            metrics,
        })
}

async fn readyz(State(state): State<OpsState>) -> Response {
    let metrics = &state.metrics;
    if state.lifecycle.is_draining() {
        metrics.ready.set(0);
        return Problem::unavailable("draining: this instance is shutting down").into_response();
    }
    match state.readiness.check().await {
        Ok(()) => {
            metrics.ready.set(1);
            ([(header::CONTENT_TYPE, "application/json")], "{\"status\":\"ready\"}").into_response()
        }
        Err(reason) => {
            metrics.ready.set(0);
            Problem::unavailable(reason).into_response()
        }
    }
}

async fn render_metrics(State(state): State<OpsState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Counts requests by route template (never by raw path, which would explode label values).
pub async fn track_http(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    metrics
        .http_requests
        .with_label_values(&[method.as_str(), route.as_str(), status.as_str()])
        .inc();
    metrics
        .http_request_seconds
        .with_label_values(&[method.as_str(), route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(%method, %route, "request failed");
    }
    response
}

/// Adds the operational routes and the layers every service shares: HTTP metrics, one problem
/// body for every error, a 404 problem for unknown paths, and panics turned into 500s. Also
/// starts the readiness probe that keeps `sse_orders_ready` current.
pub fn finish_router(
    router: Router,
    readiness: Arc<dyn ReadinessCheck>,
    lifecycle: Lifecycle,
    metrics: Arc<Metrics>,
) -> Router {
    spawn_readiness_probe(readiness.clone(), lifecycle.clone(), metrics.clone());
    router
        .merge(ops_router(readiness, lifecycle, metrics.clone()))
        .fallback(|| async { Problem::not_found("no such route").into_response() })
        .layer(axum::middleware::map_response(crate::problem::problem_for_plain_errors))
        .layer(axum::middleware::from_fn_with_state(metrics, track_http))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "/problems/internal",
                "Internal error",
            )
            .into_response()
        }))
}
