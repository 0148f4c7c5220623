//! `SseFastPath`: serves `GET /api/order/stream` over HTTP/1.1 straight on the socket. After
//! the response head every write is shared, pre-encoded frames (a close-delimited body needs no
//! chunk framing); while the stream is caught up the fan-out writes it, and the connection's
//! task sleeps until the client leaves or the fan-out hands the stream back.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use futures_util::future::BoxFuture;
use order_events::problem::Problem;
use order_events::server::{Interceptor, RequestHead};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::delivery::{Delivery, sleep_until_opt};
use crate::fan_out::{FanOut, Handoff};
use crate::routes::{GatewayState, StreamQuery, open_delivery};

pub const STREAM_PATH: &str = "/api/order/stream";

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
x-accel-buffering: no\r\nconnection: close\r\n\r\n";

pub struct SseFastPath {
    pub state: GatewayState,
    /// Present in hub mode: writes caught-up streams.
    pub fan_out: Option<Arc<FanOut>>,
}

impl Interceptor for SseFastPath {
    fn wants(&self, head: &RequestHead) -> bool {
        head.method == "GET" && head.version == 1 && head.path() == STREAM_PATH && head.header("upgrade").is_none()
    }

    fn serve(self: Arc<Self>, stream: TcpStream, head: RequestHead) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.handle(stream, head).await })
    }
}

impl SseFastPath {
    async fn handle(&self, mut stream: TcpStream, head: RequestHead) {
        let started = Instant::now();
        let headers = header_map(&head);
        let grant = self
            .state
            .auth
            .authenticate(&headers, head.query())
            .and_then(|principal| principal.read_grant())
            .map_err(|error| error.problem());
        let opened = match (grant, parse_query(head.query())) {
            (Err(problem), _) | (_, Err(problem)) => Err(problem),
            (Ok(grant), Ok(query)) => open_delivery(&self.state, &headers, query, grant).await,
        };
        let cors = self.state.cors.head_lines(head.header("origin"));
        let status = match &opened {
            Ok(_) => 200,
            Err(problem) => problem.status,
        };
        let metrics = &self.state.settings.metrics;
        metrics
            .http_requests
            .with_label_values(&["GET", STREAM_PATH, &status.to_string()])
            .inc();
        metrics
            .http_request_seconds
            .with_label_values(&["GET", STREAM_PATH])
            .observe(started.elapsed().as_secs_f64());
        match opened {
            Ok(delivery) => write_events(stream, delivery, self.fan_out.clone(), &cors).await,
            Err(problem) => {
                let _ = stream.write_all(&problem_response(&problem, &cors)).await;
                let _ = stream.shutdown().await;
            }
        }
    }
}

fn parse_query(query: Option<&str>) -> Result<StreamQuery, Problem> {
    let uri: axum::http::Uri = format!("/?{}", query.unwrap_or(""))
        .parse()
        .map_err(|_| Problem::bad_request("the query string is malformed"))?;
    axum::extract::Query::<StreamQuery>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|_| Problem::bad_request("the query string is malformed"))
}

fn header_map(head: &RequestHead) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(head.headers.len());
    for (name, value) in &head.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            map.append(name, value);
        }
    }
    map
}

/// Writes the stream until it ends, the client goes away, or a write fails. While the stream
/// is caught up it is parked in the fan-out, which writes new events straight into the socket;
/// this task then only waits for the client to leave or the fan-out to hand the stream back.
async fn write_events(stream: TcpStream, mut delivery: Delivery, fan_out: Option<Arc<FanOut>>, cors: &str) {
    // The head and the `retry:` hint leave in one write.
    let Some(first) = delivery.next_chunk().await else {
        return;
    };
    let mut opening = Vec::with_capacity(HEAD.len() + cors.len() + first.len());
    // The CORS lines go before the blank line that ends the head.
    opening.extend_from_slice(&HEAD[..HEAD.len() - 2]);
    opening.extend_from_slice(cors.as_bytes());
    opening.extend_from_slice(b"\r\n");
    opening.extend_from_slice(&first);
    let stream = Arc::new(stream);
    if write_all(&stream, &opening).await.is_err() {
        return;
    }
    drop(opening);
    if !stream_events(&stream, &mut delivery, fan_out).await {
        return;
    }
    // The fan-out let go of the socket when it handed the stream back.
    if let Ok(mut stream) = Arc::try_unwrap(stream) {
        let _ = stream.shutdown().await;
    }
}

/// Writes events until the stream ends (true) or the client or socket is gone (false).
async fn stream_events(stream: &Arc<TcpStream>, delivery: &mut Delivery, fan_out: Option<Arc<FanOut>>) -> bool {
    // Clients send nothing more: reading only tells that the client closed the connection. The
    // future lives as long as the stream, so nothing is registered again per event.
    let mut client_gone = std::pin::pin!(client_gone(stream));
    let mut may_park = true;
    loop {
        if let (true, Some(fan_out), Some((cursor, customer))) = (may_park, &fan_out, delivery.parkable()) {
            if let Some(parked) = fan_out.park(cursor, customer, stream.clone()) {
                let expiry = delivery.expires_at();
                let handoff = tokio::select! {
                    biased;
                    handoff = parked.slot().handed_back() => handoff,
                    _ = &mut client_gone => return false,
                    // The token ran out: the writer hands the stream back and this task ends it.
                    _ = sleep_until_opt(expiry) => {
                        parked.recall();
                        tokio::select! {
                            handoff = parked.slot().handed_back() => handoff,
                            _ = &mut client_gone => return false,
                        }
                    }
                };
                drop(parked);
                match handoff {
                    Handoff::Failed => return false,
                    Handoff::Resume { cursor, pending } => {
                        delivery.resume(cursor);
                        if write_all(stream, &pending).await.is_err() {
                            return false;
                        }
                        // Park again only after writing something: a stream handed back with
                        // nothing owed (its cursor is not the fan-out's) reads on by itself.
                        may_park = !pending.is_empty();
                    }
                }
                continue;
            }
        }
        tokio::select! {
            biased;
            chunk = delivery.next_chunk() => match chunk {
                Some(chunk) => {
                    if write_all(stream, &chunk).await.is_err() {
                        return false;
                    }
                    may_park = true;
                }
                None => return true,
            },
            _ = &mut client_gone => return false,
        }
    }
}

/// Completes when the client has closed its side (or the socket failed).
async fn client_gone(stream: &TcpStream) {
    let mut discard = [0u8; 64];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut discard) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn problem_response(problem: &Problem, cors: &str) -> Vec<u8> {
    let body = serde_json::to_string(problem).unwrap_or_default();
    let reason = axum::http::StatusCode::from_u16(problem.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let retry_after = problem
        .retry_after_secs
        .map(|s| format!("retry-after: {s}\r\n"))
        .unwrap_or_default();
    let extra: String = problem
        .extra_headers()
        .iter()
        .filter(|(_, value)| !value.contains(['\r', '\n']))
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncache-control: no-store\r\n{retry_after}{extra}{cors}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        problem.status,
        order_events::problem::CONTENT_TYPE,
        body.len()
    )
    .into_bytes()
}
