//! Starting the whole system on port 0 and talking to it like a client: typed requests and a
//! streaming SSE parser (bytes in, events out).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use clap::Parser;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use order_events::shutdown::Lifecycle;
use serde_json::{Value, json};
use sse_orders::{Application, Config};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

pub struct TestApp {
    pub addr: SocketAddr,
    pub lifecycle: Lifecycle,
    pub client: reqwest::Client,
    pub server: JoinHandle<std::io::Result<()>>,
}

/// Starts the combined binary's application with `--listen 127.0.0.1:0` plus `args`.
pub async fn spawn_app(args: &[&str]) -> TestApp {
    let mut argv = vec!["sse-orders", "--listen", "127.0.0.1:0"];
    for (flag, default) in [("--drain-delay", "0s"), ("--shutdown-grace", "2s")] {
        if !args.contains(&flag) {
            argv.extend([flag, default]);
        }
    }
    argv.extend_from_slice(args);
    let config = Config::try_parse_from(argv).expect("test configuration parses");
    let lifecycle = Lifecycle::new();
    let app = Application::build(&config, lifecycle.clone())
        .await
        .expect("application builds");
    let addr = app.local_addr().expect("bound address");
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        lifecycle,
        client: reqwest::Client::new(),
        server,
    }
}

/// An order with `lines` line items (about 85 bytes of event data each).
pub fn large_order_body(customer: &str, sku: &str, lines: usize) -> Value {
    let items: Vec<Value> = (0..lines)
        .map(|n| json!({"sku": format!("{sku}-{n}"), "quantity": 1, "unitPrice": 100}))
        .collect();
    json!({"customerId": customer, "currency": "EUR", "items": items})
}

pub fn order_body(customer: &str, sku: &str) -> Value {
    json!({"customerId": customer, "currency": "EUR", "items": [{"sku": sku, "quantity": 2, "unitPrice": "12.50"}]})
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs an order and returns the 201 body.
    pub async fn create_order(&self, body: &Value) -> Value {
        let response = self
            .client
            .post(self.url("/api/order"))
            .json(body)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 201, "POST /api/order");
        response.json().await.expect("JSON body")
    }

    pub async fn post_raw(
        &self,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url("/api/order")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await.expect("POST")
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map_or(0.0, |value| value.trim().parse().expect("metric value"))
    }

    /// Opens the stream with optional `Last-Event-ID` header and query string.
    pub async fn open_stream(&self, last_event_id: Option<&str>, query: &str) -> SseClient {
        let mut request = self
            .client
            .get(self.url(&format!("/api/order/stream{query}")));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("GET stream");
        assert_eq!(response.status(), 200, "GET /api/order/stream{query}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseClient::new(
            response
                .bytes_stream()
                .map(|r| r.map_err(|e| e.to_string()))
                .boxed(),
        )
    }
}

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

    fn take_line(&mut self) -> Option<String> {
        let at = self
            .buffer
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')?;
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
                self.pending
                    .push_back(Sse::Comment(comment.trim_start().to_owned()));
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (
                    field.to_owned(),
                    value.strip_prefix(' ').unwrap_or(value).to_owned(),
                ),
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
    pub async fn next_event(
        &mut self,
        deadline: Instant,
    ) -> Option<(Option<String>, String, String)> {
        loop {
            match self.next_until(deadline).await? {
                Sse::Event { id, event, data } => return Some((id, event, data)),
                Sse::Comment(_) | Sse::Retry(_) => continue,
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
                None => panic!(
                    "only {} of {count} events arrived in {within:?}",
                    events.len()
                ),
            }
        }
        events
    }

    /// Asserts that nothing but comments arrives until `deadline`.
    pub async fn expect_no_event_until(&mut self, deadline: Instant) {
        if let Some(event) = self.next_event(deadline).await {
            panic!("expected no event, got {event:?}");
        }
    }
}

/// The POST response without `eventId`: exactly what the event's data must be.
pub fn order_of(created: &Value) -> Value {
    let mut order = created.clone();
    order.as_object_mut().expect("object").remove("eventId");
    order
}

pub fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}
