//! Starting the whole system on port 0 and talking to it like a client: typed requests and a
//! streaming SSE parser (bytes in, events out).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use order_events::shutdown::Lifecycle;
pub use order_events::testing::{Sse, SseClient, Transport, post_order};
use serde_json::{Value, json};
use sse_orders::{Application, Config};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub struct TestApp {
    pub addr: SocketAddr,
    pub lifecycle: Lifecycle,
    /// For everything but streams (orders, metrics).
    pub client: reqwest::Client,
    /// What [`TestApp::open_stream`] and [`TestApp::stream_get`] travel over.
    pub transport: Transport,
    stream_client: reqwest::Client,
    pub server: JoinHandle<std::io::Result<()>>,
}

/// Starts the combined binary's application with `--listen 127.0.0.1:0` plus `args`; its
/// streams are opened over HTTP/1.1.
pub async fn spawn_app(args: &[&str]) -> TestApp {
    spawn_app_over(Transport::Http1, args).await
}

/// Like [`spawn_app`], with streams opened over `transport`.
pub async fn spawn_app_over(transport: Transport, args: &[&str]) -> TestApp {
    let mut argv = vec!["sse-orders", "--listen", "127.0.0.1:0"];
    // Auth is off unless a test turns it on: the combined binary's default, stated explicitly.
    for (flag, default) in [("--drain-delay", "0s"), ("--shutdown-grace", "2s"), ("--auth", "none")] {
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
        transport,
        stream_client: transport.client(),
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

    /// POSTs an order as a real client does (a 503 is retried with the same `Idempotency-Key`)
    /// and returns the created order.
    pub async fn create_order(&self, body: &Value) -> Value {
        post_order(&self.client, &self.url("/api/order"), body).await
    }

    pub async fn post_raw(&self, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> reqwest::Response {
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
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |value| value.trim().parse().expect("metric value"))
    }

    /// Creates `writers × per_writer` orders from concurrent writers; writer `w` posts
    /// `body(w, n)` for n in 0..per_writer. Returns every 201 response body.
    pub async fn create_orders_concurrently(
        &self,
        writers: usize,
        per_writer: usize,
        body: fn(usize, usize) -> Value,
    ) -> Vec<Value> {
        let tasks: Vec<_> = (0..writers)
            .map(|writer| {
                let client = self.client.clone();
                let url = self.url("/api/order");
                tokio::spawn(async move {
                    let mut created = Vec::new();
                    for n in 0..per_writer {
                        created.push(post_order(&client, &url, &body(writer, n)).await);
                    }
                    created
                })
            })
            .collect();
        let mut created = Vec::new();
        for task in tasks {
            created.extend(task.await.expect("writer"));
        }
        created
    }

    /// Opens `count` streams that start at the end of the log.
    pub async fn open_streams(&self, count: usize) -> Vec<SseClient> {
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            clients.push(self.open_stream(None, "").await);
        }
        clients
    }

    /// A GET of `path` over the app's stream transport.
    pub fn stream_get(&self, path: &str) -> reqwest::RequestBuilder {
        self.stream_client.get(self.url(path))
    }

    /// Opens the stream over the app's transport with optional `Last-Event-ID` header and
    /// query string.
    pub async fn open_stream(&self, last_event_id: Option<&str>, query: &str) -> SseClient {
        let mut request = self.stream_get(&format!("/api/order/stream{query}"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("GET stream");
        self.transport.stream(response)
    }
}

/// Opens `GET /api/order/stream` on a raw socket with a small receive buffer, so the server's
/// writes fill it quickly when the socket is not read; returns it after the response head.
pub async fn open_raw_stream(addr: SocketAddr, receive_buffer: u32) -> tokio::net::TcpStream {
    open_raw_stream_at(addr, receive_buffer, "/api/order/stream").await
}

/// Like [`open_raw_stream`] for another request target (a query string, a token).
pub async fn open_raw_stream_at(addr: SocketAddr, receive_buffer: u32, target: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(receive_buffer).expect("SO_RCVBUF");
    let mut stream = socket.connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {target} HTTP/1.1\r\nhost: test\r\naccept: text/event-stream\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).await.expect("response head");
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "stream opens with 200");
    stream
}

/// Parses SSE from a raw socket, reading at most `read_size` bytes at a time.
pub fn raw_sse_client(socket: tokio::net::TcpStream, read_size: usize) -> SseClient {
    use tokio::io::AsyncReadExt;
    let stream = futures_util::stream::unfold(socket, move |mut socket| async move {
        let mut buffer = vec![0u8; read_size];
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(axum::body::Bytes::from(buffer)), socket))
            }
        }
    });
    SseClient::new(stream.boxed())
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

/// A directory of the test process under the system's temp dir, removed when dropped.
pub struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sse-orders-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, file: &str) -> std::path::PathBuf {
        self.0.join(file)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A service run as a child process on `--listen 127.0.0.1:0 --log-format json`: the address
/// it named and its log lines; killed when dropped.
pub struct ChildService {
    child: std::process::Child,
    pub addr: SocketAddr,
    pub log: order_events::testing::ChildLog,
}

impl ChildService {
    /// Starts `command` (the program and its own flags) with the listen and log flags added.
    pub fn spawn(mut command: std::process::Command) -> Self {
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("the service starts");
        let (addr, log) = order_events::testing::ChildLog::follow(&mut child, false);
        Self { child, addr, log }
    }
}

impl Drop for ChildService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
