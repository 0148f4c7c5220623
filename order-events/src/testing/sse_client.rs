//! A streaming `text/event-stream` parser for tests: bytes in, events out, following the
//! WHATWG rules as a browser's EventSource does.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

/// One dispatched SSE event (or a comment), as a browser's EventSource would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    Event {
        id: Option<String>,
        event: String,
        data: String,
    },
    Comment(String),
    Retry(u64),
}

/// A streaming parser of `text/event-stream` following the WHATWG rules: lines end with CRLF,
/// LF or CR; `field: value` with one optional space; blank line dispatches; `:` starts a comment.
pub struct SseClient {
    body: BoxStream<'static, Result<bytes::Bytes, String>>,
    buffer: BytesMut,
    pending: std::collections::VecDeque<Sse>,
    id: Option<String>,
    event: String,
    data: Vec<String>,
    pub last_event_id: Option<String>,
    ended: bool,
}

impl SseClient {
    pub fn new(body: BoxStream<'static, Result<bytes::Bytes, String>>) -> Self {
        Self {
            body,
            buffer: BytesMut::new(),
            pending: Default::default(),
            id: None,
            event: String::new(),
            data: Vec::new(),
            last_event_id: None,
            ended: false,
        }
    }

    /// Reads a streaming response's body.
    pub fn from_response(response: reqwest::Response) -> Self {
        Self::new(response.bytes_stream().map(|r| r.map_err(|e| e.to_string())).boxed())
    }

    fn take_line(&mut self) -> Option<String> {
        let at = self.buffer.iter().position(|b| *b == b'\n' || *b == b'\r')?;
        // A CR at the very end may be the first half of CRLF: wait for more bytes.
        if self.buffer[at] == b'\r' && at + 1 == self.buffer.len() && !self.ended {
            return None;
        }
        let line = String::from_utf8(self.buffer[..at].to_vec()).expect("UTF-8 stream");
        let skip = if self.buffer[at] == b'\r' && self.buffer.get(at + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        self.buffer.advance(at + skip);
        Some(line)
    }

    fn parse_lines(&mut self) {
        while let Some(line) = self.take_line() {
            if line.is_empty() {
                if !self.data.is_empty() {
                    let event = if self.event.is_empty() {
                        "message".to_owned()
                    } else {
                        std::mem::take(&mut self.event)
                    };
                    self.pending.push_back(Sse::Event {
                        id: self.id.take(),
                        event,
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                self.event.clear();
                self.id = None;
                continue;
            }
            if let Some(comment) = line.strip_prefix(':') {
                self.pending.push_back(Sse::Comment(comment.trim_start().to_owned()));
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field.to_owned(), value.strip_prefix(' ').unwrap_or(value).to_owned()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "data" => self.data.push(value),
                "event" => self.event = value,
                "id" if !value.contains('\0') => {
                    self.last_event_id = Some(value.clone());
                    self.id = Some(value);
                }
                "retry" => {
                    if let Ok(ms) = value.parse() {
                        self.pending.push_back(Sse::Retry(ms));
                    }
                }
                _ => {}
            }
        }
    }

    /// The next item, or `None` when the stream ended or `deadline` passed.
    pub async fn next_until(&mut self, deadline: Instant) -> Option<Sse> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            match timeout_at(deadline, self.body.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => {
                    self.ended = true;
                    self.parse_lines();
                }
                Ok(Some(Ok(chunk))) => {
                    self.buffer.extend_from_slice(&chunk);
                    self.parse_lines();
                }
            }
        }
    }

    /// The next `order-created` or `reset` event (skipping comments and retry hints).
    pub async fn next_event(&mut self, deadline: Instant) -> Option<(Option<String>, String, String)> {
        loop {
            match self.next_until(deadline).await? {
                Sse::Event { id, event, data } => return Some((id, event, data)),
                Sse::Comment(_) | Sse::Retry(_) => continue,
            }
        }
    }

    /// Reads order events up to and including the one with id `last`, returning their ids;
    /// panics on any other event or when the stream ends before `deadline`.
    pub async fn order_ids_through(&mut self, last: &str, deadline: Instant) -> Vec<String> {
        let mut ids = Vec::new();
        loop {
            let (id, event, data) = self.next_event(deadline).await.expect("the stream continues");
            assert_eq!(event, "order-created", "{data}");
            let id = id.expect("an order event has an id");
            let done = id == last;
            ids.push(id);
            if done {
                return ids;
            }
        }
    }

    /// Reads order events until `count` arrived; panics on timeout with what was read.
    pub async fn collect_orders(&mut self, count: usize, within: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + within;
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            match self.next_event(deadline).await {
                Some((Some(id), event, data)) if event == "order-created" => {
                    events.push((id, serde_json::from_str(&data).expect("event data is JSON")))
                }
                Some(other) => panic!("unexpected event {other:?}"),
                None => panic!("only {} of {count} events arrived in {within:?}", events.len()),
            }
        }
        events
    }

    /// Reads order events until `count` arrived, keeping ids and raw data (no JSON parsing).
    pub async fn collect_raw(&mut self, count: usize, within: Duration) -> Vec<(String, String)> {
        let deadline = Instant::now() + within;
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            match self.next_event(deadline).await {
                Some((Some(id), event, data)) if event == "order-created" => events.push((id, data)),
                Some(other) => panic!("unexpected event {other:?}"),
                None => panic!("only {} of {count} events arrived in {within:?}", events.len()),
            }
        }
        events
    }

    /// Whether the server ended the stream.
    pub fn has_ended(&self) -> bool {
        self.ended && self.pending.is_empty()
    }

    /// Asserts that nothing but comments arrives until `deadline`.
    pub async fn expect_no_event_until(&mut self, deadline: Instant) {
        if let Some(event) = self.next_event(deadline).await {
            panic!("expected no event, got {event:?}");
        }
    }
}
