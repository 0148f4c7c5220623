//! HTTP handlers of order-api.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRef, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use order_events::auth::{Authenticator, ReadAccess, WriteAccess};
use order_events::domain::{FieldError, MAX_CUSTOMER_ID_CHARS, Order, OrderCreated, OrderRequest};
use order_events::metrics::Metrics;
use order_events::order_store::{
    CreateOutcome, IdempotencyKey, NewOrder, OrderStore, SnapshotQuery, StoreError, request_fingerprint,
};
use order_events::position::StreamPosition;
use order_events::problem::Problem;
use order_events::strict_json::{self, StrictJsonError};
use order_events::telemetry::current_traceparent;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn OrderStore>,
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Authenticator>,
}

impl FromRef<ApiState> for Arc<Authenticator> {
    fn from_ref(state: &ApiState) -> Self {
        state.auth.clone()
    }
}

pub fn router(state: ApiState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route(
            "/api/order",
            post(create_order).layer(middleware::from_fn_with_state(state.clone(), read_body_in_time)),
        )
        .route("/api/order/{id}", get(get_order))
        .route("/api/orders", get(list_orders))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Reads the whole request body within `--body-read-timeout` of its head: a client trickling
/// its body would otherwise hold a connection and a request slot for as long as it likes.
async fn read_body_in_time(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, state.max_body_bytes);
    match tokio::time::timeout(state.body_read_timeout, read).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(error)) if too_large(&error) => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "/problems/too-large",
            "The request body is too large",
        )
        .detail(format!("send at most {} bytes", state.max_body_bytes))
        .into_response(),
        Ok(Err(_)) => Problem::bad_request("the request body could not be read").into_response(),
        Err(_) => {
            let mut response = Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "/problems/body-timeout",
                "The request body did not arrive in time",
            )
            .detail(format!(
                "send the whole body within {} of the request head",
                humantime::format_duration(state.body_read_timeout)
            ))
            .into_response();
            // The rest of the body may still be on its way: the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

fn too_large(error: &axum::Error) -> bool {
    std::error::Error::source(error).is_some_and(|inner| inner.is::<http_body_util::LengthLimitError>())
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn store_failure(error: StoreError) -> Response {
    match error {
        StoreError::IdempotencyConflict => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/idempotency-key-reused",
            "Idempotency-Key reused with a different request",
        )
        .detail("this Idempotency-Key was already used for a different order; use a new key")
        .into_response(),
        StoreError::Unavailable(_) | StoreError::Timeout => {
            tracing::warn!(%error, "order store unavailable");
            Problem::unavailable("the order store is unavailable; nothing was stored, retry later").into_response()
        }
        StoreError::Malformed(_) => {
            tracing::error!(%error, "order store returned malformed data");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "/problems/internal",
                "Internal error",
            )
            .into_response()
        }
    }
}

#[tracing::instrument(name = "create_order", skip_all, fields(order_id, event_id))]
async fn create_order(
    State(state): State<ApiState>,
    WriteAccess(grant): WriteAccess,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_json(&headers) {
        return Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "/problems/unsupported-media-type",
            "Unsupported content type",
        )
        .detail("send the order as Content-Type: application/json")
        .into_response();
    }
    let json = match strict_json::parse(&body) {
        Ok(json) => json,
        Err(StrictJsonError::DuplicateKey { field }) => {
            return Problem::invalid_fields(vec![FieldError::new(field, "appears more than once")]).into_response();
        }
        Err(error) => return Problem::bad_request(error.to_string()).into_response(),
    };
    let request = match OrderRequest::parse(&json) {
        Ok(request) => request,
        Err(errors) => return Problem::invalid_fields(errors).into_response(),
    };
    if !grant.covers(&request.customer_id) {
        return grant.other_customer().into_response();
    }
    let idempotency = match headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(IdempotencyKey::parse))
    {
        None => None,
        Some(Ok(Ok(key))) => Some((key, request_fingerprint(&request))),
        Some(_) => {
            return Problem::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters").into_response();
        }
    };
    let incoming_traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
    if let Some(parent) = incoming_traceparent.filter(|t| order_events::telemetry::is_traceparent(t)) {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let _ = tracing::Span::current().set_parent(order_events::telemetry::context_from_traceparent(parent));
    }
    let order = Order::create(&request, OffsetDateTime::now_utc());
    let event = OrderCreated::of(&order, current_traceparent(incoming_traceparent));
    let (status, created) = match state
        .store
        .create(NewOrder {
            order,
            event,
            idempotency,
        })
        .await
    {
        Ok(CreateOutcome::Created(created)) => {
            state.metrics.orders_created.inc();
            (StatusCode::CREATED, created)
        }
        Ok(CreateOutcome::Replayed(created)) => (StatusCode::OK, created),
        Err(error) => return store_failure(error),
    };
    let span = tracing::Span::current();
    span.record("order_id", tracing::field::display(created.order.order_id));
    span.record("event_id", tracing::field::display(created.event_id));
    let location = format!("/api/order/{}", created.order.order_id);
    let mut response = (status, axum::Json(&created)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    if status == StatusCode::OK {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

async fn get_order(State(state): State<ApiState>, ReadAccess(grant): ReadAccess, Path(id): Path<String>) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return Problem::not_found(format!(
            "no order has the id `{}`",
            id.chars().take(64).collect::<String>()
        ))
        .into_response();
    };
    match state.store.get(id).await {
        // Another customer's order is answered like a missing one: its existence stays private.
        Ok(Some(order)) if grant.covers(&order.order.customer_id) => axum::Json(order).into_response(),
        Ok(_) => Problem::not_found(format!("no order has the id `{id}`")).into_response(),
        Err(error) => store_failure(error),
    }
}

/// Most orders one snapshot page returns.
pub const MAX_SNAPSHOT_LIMIT: usize = 500;
const DEFAULT_SNAPSHOT_LIMIT: usize = 50;

/// `GET /api/orders?limit=N&customerId=C&before=ID`: the newest orders (one customer's with
/// `customerId`), older than `before` when paging on, with the stream position they are
/// consistent with. Loading this and then following the stream after `position` sees every
/// order exactly once. A token bound to a customer lists that customer's orders only.
async fn list_orders(State(state): State<ApiState>, ReadAccess(grant): ReadAccess, uri: axum::http::Uri) -> Response {
    match snapshot_query(uri.query().unwrap_or("")) {
        Ok(mut query) => {
            if let Some(own) = grant.customer.as_deref() {
                match query.customer_id.as_deref() {
                    Some(asked) if asked != own => return grant.other_customer().into_response(),
                    _ => query.customer_id = Some(own.to_owned()),
                }
            }
            match state.store.snapshot(&query).await {
                Ok(snapshot) => {
                    let mut response = axum::Json(snapshot).into_response();
                    response
                        .headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    response
                }
                Err(error) => store_failure(error),
            }
        }
        Err(problem) => problem.into_response(),
    }
}

fn snapshot_query(query: &str) -> Result<SnapshotQuery, Problem> {
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(query)?;
    let mut parsed = SnapshotQuery {
        limit: DEFAULT_SNAPSHOT_LIMIT,
        customer_id: None,
        before: None,
    };
    let mut errors = Vec::new();
    for (name, value) in pairs {
        match name.as_str() {
            "limit" => match value.parse::<usize>() {
                Ok(limit) if (1..=MAX_SNAPSHOT_LIMIT).contains(&limit) => parsed.limit = limit,
                _ => errors.push(FieldError::new(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_SNAPSHOT_LIMIT}"),
                )),
            },
            "customerId" => {
                if value.is_empty() || value.chars().count() > MAX_CUSTOMER_ID_CHARS {
                    errors.push(FieldError::new(
                        "customerId",
                        format!("must be 1 to {MAX_CUSTOMER_ID_CHARS} characters"),
                    ));
                } else {
                    parsed.customer_id = Some(value);
                }
            }
            "before" => match StreamPosition::parse(&value) {
                Ok(before) => parsed.before = Some(before),
                Err(error) => errors.push(FieldError::new("before", error.to_string())),
            },
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(Problem::invalid_fields(errors))
    }
}

/// `name=value` pairs of a query string, percent-decoded.
fn serde_urlencoded_pairs(query: &str) -> Result<Vec<(String, String)>, Problem> {
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|_| Problem::bad_request("the query string is malformed"))?;
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|_| Problem::bad_request("the query string is malformed"))
}
