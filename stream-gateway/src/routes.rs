//! HTTP handlers of the gateway: the SSE stream (as hyper serves it) and the demo page.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::opening::{Answer, GatewayState, STREAM_PATH};

pub fn router(state: GatewayState) -> Router {
    Router::new()
        .route(STREAM_PATH, get(stream))
        .route("/", get(page))
        .with_state(state)
}

async fn page() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(include_str!("../static/index.html")),
    )
}

/// The stream for HTTP/2 and for HTTP/1.1 requests after the first on a connection; CORS and
/// HTTP metrics come from the router's layers.
async fn stream(State(state): State<GatewayState>, headers: HeaderMap, uri: Uri) -> Response {
    Answer::for_request(&state, &headers, uri.query()).await.into_response()
}
