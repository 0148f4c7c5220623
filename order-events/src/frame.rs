//! SSE framing: each event is encoded once into shared bytes that every connection writes as is.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::position::{Epoch, StreamPosition};

/// The SSE event name of an `OrderCreated` event.
pub const ORDER_CREATED: &str = "order-created";
/// The SSE event name that tells a client its cursor fell behind retention.
pub const RESET: &str = "reset";

/// An event as it travels through the gateway: its position, the customer it belongs to (for the
/// `customerId` filter) and its complete SSE frame.
#[derive(Clone, Debug)]
pub struct EncodedEvent {
    pub position: StreamPosition,
    pub customer_id: Arc<str>,
    pub frame: Bytes,
    /// The W3C `traceparent` of the request that created the event, when it was recorded.
    pub traceparent: Option<Arc<str>>,
}

impl EncodedEvent {
    pub fn new(position: StreamPosition, customer_id: &str, payload: &str) -> Self {
        Self {
            position,
            customer_id: Arc::from(customer_id),
            frame: encode_event(position, ORDER_CREATED, payload),
            traceparent: None,
        }
    }

    pub fn with_traceparent(mut self, traceparent: Option<&str>) -> Self {
        self.traceparent = traceparent.map(Arc::from);
        self
    }
}

/// `id:`, `event:` and the payload as `data:` lines. Compact JSON never holds a raw line break,
/// so it is one `data:` line; anything else is split so that no text can start a new field.
pub fn encode_event(position: StreamPosition, event: &str, payload: &str) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + event.len() + 48);
    frame.put_slice(b"id: ");
    frame.put_slice(position.to_string().as_bytes());
    frame.put_slice(b"\nevent: ");
    frame.put_slice(event.as_bytes());
    frame.put_u8(b'\n');
    put_data(&mut frame, payload);
    frame.put_u8(b'\n');
    frame.freeze()
}

fn put_data(frame: &mut BytesMut, payload: &str) {
    let mut rest = payload;
    loop {
        frame.put_slice(b"data: ");
        match rest.find(['\r', '\n']) {
            None => {
                frame.put_slice(rest.as_bytes());
                frame.put_u8(b'\n');
                return;
            }
            Some(at) => {
                frame.put_slice(&rest.as_bytes()[..at]);
                frame.put_u8(b'\n');
                let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[at + skip..];
            }
        }
    }
}

/// The reconnection hint every stream starts with.
pub fn retry_frame(millis: u64) -> Bytes {
    Bytes::from(format!("retry: {millis}\n\n"))
}

/// A comment line: keeps proxies from closing an idle stream and is ignored by clients.
pub const HEARTBEAT: Bytes = Bytes::from_static(b": heartbeat\n\n");

/// Why a stream sends `reset`: the client must re-sync (for instance over REST) because the
/// events it would need to continue exactly are not there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// Retention trimmed events after the cursor; delivery continues with the oldest held.
    BehindRetention,
    /// The cursor names an event this history does not have (Redis restarted without
    /// persistence, or failed over to a replica that missed writes): what the client saw is
    /// gone. Delivery continues after the newest position both histories share.
    HistoryLost,
    /// The cursor is past the end of the log: the events the client saw were lost with the end
    /// of the stream, or the id was never issued. Delivery continues at the end.
    AheadOfLog,
    /// The event store refused to read after the cursor; delivery continues at the end.
    Refused,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::BehindRetention => "cursor-behind-retention",
            ResetReason::HistoryLost => "history-lost",
            ResetReason::AheadOfLog => "cursor-ahead-of-log",
            ResetReason::Refused => "cursor-refused",
        }
    }
}

/// What a `reset` tells the client.
#[derive(Clone, Debug)]
pub struct Reset<'a> {
    pub reason: ResetReason,
    /// The cursor that could not be continued.
    pub requested: StreamPosition,
    /// The oldest event still held, when known.
    pub oldest: Option<StreamPosition>,
    /// Delivery continues with the events after this position.
    pub resume_after: StreamPosition,
    /// The history delivery continues in.
    pub epoch: Option<&'a Epoch>,
}

/// Tells a client that it cannot continue exactly after `requested`. It carries no `id:`, so the
/// client's cursor only moves with the next real event.
pub fn reset_frame(reset: &Reset<'_>) -> Bytes {
    let payload = serde_json::json!({
        "reason": reset.reason.as_str(),
        "lastEventId": reset.requested,
        "oldestId": reset.oldest,
        "resumeAfter": reset.resume_after,
        "epoch": reset.epoch,
    });
    let mut frame = BytesMut::new();
    frame.put_slice(b"event: ");
    frame.put_slice(RESET.as_bytes());
    frame.put_slice(b"\n");
    put_data(&mut frame, &payload.to_string());
    frame.put_u8(b'\n');
    frame.freeze()
}

/// The SSE event name that ends a stream whose token expired.
pub const TOKEN_EXPIRED: &str = "token-expired";

/// Ends a stream whose bearer token is no longer valid: the client should fetch a new token and
/// reconnect with it (and its last event id), rather than retry with the old one.
pub fn token_expired_frame(expired_at: time::OffsetDateTime) -> Bytes {
    let at = expired_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let payload = serde_json::json!({
        "reason": "token-expired",
        "expiredAt": at,
        "detail": "the access token of this stream expired; reconnect with a new token and the last event id",
    });
    let mut frame = BytesMut::new();
    frame.put_slice(b"event: ");
    frame.put_slice(TOKEN_EXPIRED.as_bytes());
    frame.put_slice(b"\n");
    put_data(&mut frame, &payload.to_string());
    frame.put_u8(b'\n');
    frame.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_an_event_on_three_lines() {
        let frame = encode_event(StreamPosition::new(17, 2), ORDER_CREATED, r#"{"a":1}"#);
        assert_eq!(&frame[..], b"id: 17-2\nevent: order-created\ndata: {\"a\":1}\n\n");
    }

    #[test]
    fn line_breaks_in_payload_cannot_start_fields() {
        let frame = encode_event(
            StreamPosition::new(1, 0),
            ORDER_CREATED,
            "x\n\nevent: evil\r\ndata: y\rz",
        );
        assert_eq!(
            std::str::from_utf8(&frame).unwrap(),
            "id: 1-0\nevent: order-created\ndata: x\ndata: \ndata: event: evil\ndata: data: y\ndata: z\n\n"
        );
    }

    #[test]
    fn reset_names_the_oldest_event_held() {
        let epoch = Epoch::from_stored("e1").unwrap();
        let frame = reset_frame(&Reset {
            reason: ResetReason::BehindRetention,
            requested: StreamPosition::new(1, 0),
            oldest: Some(StreamPosition::new(5, 0)),
            resume_after: StreamPosition::new(4, 0),
            epoch: Some(&epoch),
        });
        let text = std::str::from_utf8(&frame).unwrap();
        assert!(text.starts_with("event: reset\ndata: {"));
        assert!(text.contains(r#""oldestId":"5-0""#));
        assert!(text.contains(r#""reason":"cursor-behind-retention""#));
        assert!(text.contains(r#""epoch":"e1""#));
        assert!(text.ends_with("}\n\n"));
    }
}
