//! HTTP handlers of the gateway: the SSE stream and the demo page.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use order_events::auth::{Authenticator, Grant, ReadAccess};
use order_events::cors::Cors;
use order_events::domain::MAX_CUSTOMER_ID_CHARS;
use order_events::position::StreamPosition;
use order_events::problem::Problem;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Delivery, DeliverySettings, OpenConnection};
use crate::feed::Feed;

#[derive(Clone)]
pub struct GatewayState {
    pub feed: Arc<Feed>,
    pub settings: Arc<DeliverySettings>,
    pub replay_window: Duration,
    pub connections: Arc<Semaphore>,
    pub stop: CancellationToken,
    pub auth: Arc<Authenticator>,
    pub cors: Arc<Cors>,
}

impl FromRef<GatewayState> for Arc<Authenticator> {
    fn from_ref(state: &GatewayState) -> Self {
        state.auth.clone()
    }
}

pub fn router(state: GatewayState) -> Router {
    Router::new()
        .route("/api/order/stream", get(stream))
        .route("/", get(page))
        .with_state(state)
}

async fn page() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(include_str!("../static/index.html")),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamQuery {
    pub last_event_id: Option<String>,
    pub customer_id: Option<String>,
}

/// Where a new connection's cursor starts.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    After(StreamPosition),
    ReplayWindow,
}

fn start_from(headers: &HeaderMap, query: &StreamQuery) -> Result<Start, Problem> {
    // Two ids would make the start position a guess.
    if headers.get_all("last-event-id").iter().nth(1).is_some() {
        return Err(Problem::bad_request("send at most one Last-Event-ID header"));
    }
    // An empty Last-Event-ID is what some clients send on their first connection.
    let header = headers
        .get("last-event-id")
        .filter(|v| !v.as_bytes().iter().all(|b| *b == b' '));
    if let Some(value) = header {
        let text = value
            .to_str()
            .map_err(|_| Problem::bad_request("Last-Event-ID must be an event id such as 1732841234567-0"))?;
        let position = StreamPosition::parse(text.trim_matches(' '))
            .map_err(|e| Problem::bad_request(format!("Last-Event-ID: {e}")))?;
        return Ok(Start::After(position));
    }
    if let Some(text) = query.last_event_id.as_deref().filter(|t| !t.is_empty()) {
        let position = StreamPosition::parse(text).map_err(|e| Problem::bad_request(format!("lastEventId: {e}")))?;
        return Ok(Start::After(position));
    }
    Ok(Start::ReplayWindow)
}

async fn stream(
    State(state): State<GatewayState>,
    ReadAccess(grant): ReadAccess,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return Problem::bad_request("the query string is malformed").into_response();
    };
    let delivery = match open_delivery(&state, &headers, query, grant).await {
        Ok(delivery) => delivery,
        Err(problem) => return problem.into_response(),
    };
    let mut response = Response::new(Body::from_stream(delivery.into_stream()));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Checks a stream request and opens its delivery at the position it asks for: the one place
/// both the hyper route and the fast path start a stream. `grant` is what the caller's token
/// may read: a token confined to one customer gets only that customer's events, whatever the
/// start position.
pub async fn open_delivery(
    state: &GatewayState,
    headers: &HeaderMap,
    query: StreamQuery,
    grant: Grant,
) -> Result<Delivery, Problem> {
    let start = start_from(headers, &query)?;
    if let Some(customer) = &query.customer_id {
        if customer.is_empty() || customer.chars().count() > MAX_CUSTOMER_ID_CHARS {
            return Err(Problem::bad_request(format!(
                "customerId must be 1 to {MAX_CUSTOMER_ID_CHARS} characters"
            )));
        }
        if !grant.covers(customer) {
            return Err(grant.other_customer().problem());
        }
    }
    let filter: Option<Arc<str>> = grant
        .customer
        .clone()
        .or_else(|| query.customer_id.as_deref().map(Arc::from));
    if state.stop.is_cancelled() {
        return Err(Problem::unavailable("this instance is shutting down; reconnect"));
    }
    let metrics = &state.settings.metrics;
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        metrics.sse_connections_total.with_label_values(&["rejected"]).inc();
        return Err(Problem::unavailable("too many open streams on this instance").retry_after(2));
    };
    let resumed = matches!(start, Start::After(_));
    let cursor = match start {
        Start::After(position) => position,
        Start::ReplayWindow if state.replay_window.is_zero() => state.feed.current_end().await.map_err(|error| {
            tracing::warn!(%error, "cannot resolve the end of the log");
            Problem::unavailable("the event store is unavailable")
        })?,
        Start::ReplayWindow => {
            let now = state.feed.log().now_ms().await.map_err(|error| {
                tracing::warn!(%error, "cannot read the event store's clock");
                Problem::unavailable("the event store is unavailable")
            })?;
            StreamPosition::before_millis(now.saturating_sub(state.replay_window.as_millis() as u64))
        }
    };
    metrics.sse_connections_total.with_label_values(&["accepted"]).inc();
    Ok(Delivery::new(
        state.feed.clone(),
        state.settings.clone(),
        cursor,
        resumed,
        Grant {
            customer: filter,
            expires_at: grant.expires_at,
        },
        state.stop.clone(),
        OpenConnection::new(permit, state.settings.metrics.clone()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(last: Option<&str>) -> StreamQuery {
        StreamQuery {
            last_event_id: last.map(str::to_owned),
            customer_id: None,
        }
    }

    #[test]
    fn header_wins_over_query() {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", HeaderValue::from_static("5-1"));
        assert_eq!(
            start_from(&headers, &query(Some("9-9"))).unwrap(),
            Start::After(StreamPosition::new(5, 1))
        );
        assert_eq!(
            start_from(&HeaderMap::new(), &query(Some("9-9"))).unwrap(),
            Start::After(StreamPosition::new(9, 9))
        );
        assert_eq!(
            start_from(&HeaderMap::new(), &query(None)).unwrap(),
            Start::ReplayWindow
        );
    }

    #[test]
    fn two_last_event_ids_are_refused() {
        let mut headers = HeaderMap::new();
        headers.append("last-event-id", HeaderValue::from_static("5-1"));
        headers.append("last-event-id", HeaderValue::from_static("5-1"));
        assert!(start_from(&headers, &query(None)).is_err());
    }

    #[test]
    fn malformed_ids_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", HeaderValue::from_static("yesterday"));
        assert!(start_from(&headers, &query(None)).is_err());
        assert!(start_from(&HeaderMap::new(), &query(Some("1-x"))).is_err());
    }
}
