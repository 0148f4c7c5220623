//! `SseFastPath`: serves `GET /api/order/stream` over HTTP/1.1 straight on the socket. After
//! the response head every write is shared, pre-encoded frames (a close-delimited body needs no
//! chunk framing); while the stream is caught up the fan-out writes it, and the connection's
//! task sleeps until the client leaves or the fan-out hands the stream back.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use futures_util::future::BoxFuture;
use order_events::server::{Interceptor, RequestHead};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::delivery::{Delivery, sleep_until_opt};
use crate::fan_out::{FanOut, Handoff};
use crate::opening::{Answer, AnswerBody, GatewayState, STREAM_PATH};

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
        let answer = Answer::for_request(&self.state, &header_map(&head), head.query()).await;
        answer.record(&self.state.settings.metrics, started);
        let cors = self.state.cors.head_lines(head.header("origin"));
        let date = http_date(time::OffsetDateTime::now_utc());
        match answer.body {
            AnswerBody::Events(delivery) => {
                let response_head = http1_head(answer.status, &date, &answer.headers, &cors, None);
                write_events(stream, response_head, delivery, self.fan_out.clone()).await;
            }
            AnswerBody::Problem(body) => {
                let mut response = http1_head(answer.status, &date, &answer.headers, &cors, Some(body.len()));
                response.extend_from_slice(&body);
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
            }
        }
    }
}

/// An HTTP/1.1 response head with `headers`, the CORS lines and, for a body of known length,
/// its `content-length`. The connection closes after the body, which ends a stream's body.
fn http1_head(
    status: StatusCode,
    date: &str,
    headers: &HeaderMap,
    cors: &str,
    content_length: Option<usize>,
) -> Vec<u8> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut head = format!("HTTP/1.1 {} {reason}\r\ndate: {date}\r\n", status.as_u16()).into_bytes();
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(cors.as_bytes());
    if let Some(length) = content_length {
        head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// An IMF-fixdate (RFC 9110 §5.6.7), as hyper writes in its `date` header.
fn http_date(at: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    at.to_offset(time::UtcOffset::UTC).format(FORMAT).unwrap_or_default()
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
async fn write_events(stream: TcpStream, mut opening: Vec<u8>, mut delivery: Delivery, fan_out: Option<Arc<FanOut>>) {
    // The head and the `retry:` hint leave in one write.
    let Some(first) = delivery.next_chunk().await else {
        return;
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_carries_the_answers_headers_then_cors_then_its_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/problem+json"));
        headers.insert("retry-after", HeaderValue::from_static("2"));
        let date = "Wed, 02 Dec 2026 18:14:20 GMT";
        let head = http1_head(
            StatusCode::SERVICE_UNAVAILABLE,
            date,
            &headers,
            "vary: origin\r\n",
            Some(12),
        );
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\ndate: Wed, 02 Dec 2026 18:14:20 GMT\r\n\
             content-type: application/problem+json\r\nretry-after: 2\r\n\
             vary: origin\r\ncontent-length: 12\r\nconnection: close\r\n\r\n"
        );
        let head = http1_head(StatusCode::OK, date, &HeaderMap::new(), "", None);
        assert_eq!(
            head,
            b"HTTP/1.1 200 OK\r\ndate: Wed, 02 Dec 2026 18:14:20 GMT\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn dates_are_written_as_http_dates() {
        let at = time::macros::datetime!(2026-12-02 08:04:05 UTC);
        assert_eq!(http_date(at), "Wed, 02 Dec 2026 08:04:05 GMT");
    }
}
