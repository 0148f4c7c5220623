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
    metrics.observe_http(&method, &route, status, started);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(%method, %route, "request failed");
    }
    response
}

/// What is wrong with a request's `Host` (RFC 9112 §3.2, RFC 9113 §8.3.1), if anything. HTTP/1.1
/// needs exactly one; HTTP/1.0 at most one; HTTP/2 needs `:authority` or one `Host`, and the two
/// must agree when both are sent. A value must be a `host[:port]` (empty only beside an
/// authority-less target).
pub fn host_problem<'a>(
    version: axum::http::Version,
    hosts: impl IntoIterator<Item = &'a [u8]>,
    authority: Option<&str>,
) -> Option<&'static str> {
    use axum::http::Version;
    let hosts: Vec<&[u8]> = hosts.into_iter().take(2).collect();
    if hosts.len() > 1 {
        return Some("a request must not carry more than one Host header");
    }
    let host = hosts.first().copied();
    if let Some(host) = host {
        let valid = host.is_empty()
            || (!host.contains(&b'@')
                && std::str::from_utf8(host).is_ok_and(|h| h.parse::<axum::http::uri::Authority>().is_ok()));
        if !valid {
            return Some("the Host header must be host[:port]");
        }
    }
    match version {
        Version::HTTP_2 | Version::HTTP_3 => match (host, authority) {
            (None, None) => Some("an HTTP/2 request needs :authority or a Host header"),
            (Some(host), Some(authority)) if !host.eq_ignore_ascii_case(authority.as_bytes()) => {
                Some("the Host header differs from :authority")
            }
            _ => None,
        },
        Version::HTTP_09 | Version::HTTP_10 => None,
        _ if host.is_none() => Some("an HTTP/1.1 request needs a Host header"),
        _ => None,
    }
}

/// Refuses requests with a missing, repeated or malformed `Host` with a 400 problem.
async fn check_host(request: Request, next: Next) -> Response {
    let problem = host_problem(
        request.version(),
        request
            .headers()
            .get_all(header::HOST)
            .iter()
            .map(HeaderValue::as_bytes),
        request.uri().authority().map(|a| a.as_str()),
    );
    match problem {
        Some(problem) => Problem::bad_request(problem).into_response(),
        None => next.run(request).await,
    }
}

/// Adds the operational routes and the layers every service shares: HTTP metrics, one problem
/// body for every error, a 400 for a bad `Host`, a 404 problem for unknown paths, and panics
/// turned into 500s. Also starts the readiness probe that keeps `sse_orders_ready` current.
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
        .layer(axum::middleware::from_fn(check_host))
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

#[cfg(test)]
mod tests {
    use axum::http::Version;

    use super::*;

    #[test]
    fn http1_needs_exactly_one_well_formed_host() {
        let one: [&[u8]; 1] = [b"example.com:8080"];
        assert_eq!(host_problem(Version::HTTP_11, one, None), None);
        assert_eq!(host_problem(Version::HTTP_11, [&b""[..]], None), None);
        assert!(host_problem(Version::HTTP_11, [], None).is_some());
        assert!(host_problem(Version::HTTP_11, [&b"a"[..], b"a"], None).is_some());
        assert!(host_problem(Version::HTTP_10, [&b"a"[..], b"b"], None).is_some());
        assert_eq!(host_problem(Version::HTTP_10, [], None), None);
        for bad in [&b"a b"[..], b"user@host", b"host/path", b"\xff"] {
            assert!(host_problem(Version::HTTP_11, [bad], None).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn http2_needs_an_authority_that_host_agrees_with() {
        assert_eq!(host_problem(Version::HTTP_2, [], Some("a:1")), None);
        assert_eq!(host_problem(Version::HTTP_2, [&b"A:1"[..]], Some("a:1")), None);
        assert_eq!(host_problem(Version::HTTP_2, [&b"a:1"[..]], None), None);
        assert!(host_problem(Version::HTTP_2, [], None).is_some());
        assert!(host_problem(Version::HTTP_2, [&b"b:1"[..]], Some("a:1")).is_some());
        assert!(host_problem(Version::HTTP_2, [&b"a:1"[..], b"a:1"], Some("a:1")).is_some());
    }
}
