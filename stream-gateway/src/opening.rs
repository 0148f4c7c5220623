//! Opening a stream on either transport: the request read once, then one `Answer` to send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use order_events::auth::{Authenticator, Grant};
use order_events::cors::Cors;
use order_events::domain::MAX_CUSTOMER_ID_CHARS;
use order_events::metrics::Metrics;
use order_events::position::StreamPosition;
use order_events::problem::Problem;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Delivery, DeliverySettings, OpenConnection};
use crate::feed::Feed;

pub const STREAM_PATH: &str = "/api/order/stream";

/// Headers of every stream response: proxies must neither buffer nor cache it.
const STREAM_HEADERS: [(HeaderName, &str); 3] = [
    (header::CONTENT_TYPE, "text/event-stream"),
    (header::CACHE_CONTROL, "no-cache"),
    (HeaderName::from_static("x-accel-buffering"), "no"),
];

/// What opening a stream needs; shared by the hyper route and the fast path.
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

/// A stream request answered: the status and headers every transport sends, then the body.
/// CORS headers are the transport's to add (hyper's router adds them to every response).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: AnswerBody,
}

pub enum AnswerBody {
    /// The stream was opened: its events follow the head.
    Events(Delivery),
    /// The request was refused: a problem+json body.
    Problem(Bytes),
}

impl Answer {
    /// Answers a request for the stream with these headers and query string: who may read
    /// what, where the stream starts, whether this instance takes it.
    pub async fn for_request(state: &GatewayState, headers: &HeaderMap, query: Option<&str>) -> Self {
        match open(state, headers, query).await {
            Ok(delivery) => Self {
                status: StatusCode::OK,
                headers: STREAM_HEADERS
                    .into_iter()
                    .map(|(name, value)| (name, HeaderValue::from_static(value)))
                    .collect(),
                body: AnswerBody::Events(delivery),
            },
            Err(problem) => {
                // Rendered as every other HTTP error; the body is already in memory, so
                // collecting it neither waits nor fails.
                let (head, body) = problem.into_response().into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
                Self {
                    status: head.status,
                    headers: head.headers,
                    body: AnswerBody::Problem(body),
                }
            }
        }
    }

    /// Counts the request as the HTTP metrics middleware counts the routes it serves; for a
    /// transport the middleware does not see.
    pub fn record(&self, metrics: &Metrics, started: Instant) {
        metrics.observe_http("GET", STREAM_PATH, self.status, started);
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let body = match self.body {
            AnswerBody::Events(delivery) => Body::from_stream(delivery.into_stream()),
            AnswerBody::Problem(body) => Body::from(body),
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamQuery {
    last_event_id: Option<String>,
    customer_id: Option<String>,
}

impl StreamQuery {
    fn parse(query: Option<&str>) -> Result<Self, Problem> {
        let malformed = || Problem::bad_request("the query string is malformed");
        let uri: axum::http::Uri = format!("/?{}", query.unwrap_or("")).parse().map_err(|_| malformed())?;
        axum::extract::Query::<Self>::try_from_uri(&uri)
            .map(|query| query.0)
            .map_err(|_| malformed())
    }
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

/// Checks a stream request and opens its delivery at the position it asks for. A token
/// confined to one customer gets only that customer's events, whatever the start position.
async fn open(state: &GatewayState, headers: &HeaderMap, query: Option<&str>) -> Result<Delivery, Problem> {
    // Access first: a caller without it learns nothing about its request.
    let grant = state
        .auth
        .authenticate(headers, query)
        .and_then(|principal| principal.read_grant())
        .map_err(|error| error.problem())?;
    let query = StreamQuery::parse(query)?;
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

    #[test]
    fn the_query_string_is_read_once_and_unknown_keys_are_ignored() {
        let query = StreamQuery::parse(Some("lastEventId=5-1&customerId=c%2D1&access_token=t")).unwrap();
        assert_eq!(query.last_event_id.as_deref(), Some("5-1"));
        assert_eq!(query.customer_id.as_deref(), Some("c-1"));
        assert!(StreamQuery::parse(None).unwrap().customer_id.is_none());
        assert!(StreamQuery::parse(Some("customerId=a&customerId=b")).is_err());
    }
}
