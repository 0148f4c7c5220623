//! Running the production shape in a test: a private Redis, an in-process order-api, and
//! stream-gateway child processes that can be killed like a pod.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use order_events::shutdown::Lifecycle;
use order_events::testing::ChildLog;
pub use order_events::testing::{RedisServer, Sentinel, Sse, SseClient, eventually, post_order};
use serde_json::{Value, json};

/// A stream-gateway process.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
}

impl Gateway {
    /// The current value of a metric sample (`name` with its labels), 0 when absent.
    pub async fn metric(&self, client: &reqwest::Client, name: &str) -> f64 {
        let text = client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    /// Starts `stream-gateway --redis-url <url> --listen 127.0.0.1:0 <args>` and waits for the
    /// line that says where it listens.
    pub fn spawn(redis_url: &str, args: &[&str]) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stream-gateway"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--redis-url",
                redis_url,
                "--log-format",
                "json",
            ])
            .args(
                [
                    ("--drain-delay", "0s"),
                    ("--shutdown-grace", "2s"),
                    ("--reconnect-delay", "100ms"),
                    // These tests are about delivery, not access: the services run without auth.
                    ("--auth", "none"),
                ]
                .into_iter()
                .filter(|(flag, _)| !args.contains(flag))
                .flat_map(|(flag, value)| [flag, value]),
            )
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("stream-gateway starts");
        let (addr, _) = ChildLog::follow(&mut child, std::env::var_os("GATEWAY_LOGS").is_some());
        Gateway { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// SIGTERM: the process drains as a pod being replaced does.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM delivered");
    }

    /// Waits until the process has exited.
    pub async fn wait_for_exit(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// SIGKILL: the process dies with its connections, as a crashed pod would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An in-process order-api on port 0.
pub struct OrderApi {
    pub addr: SocketAddr,
    pub lifecycle: Lifecycle,
}

impl OrderApi {
    pub async fn spawn(redis_url: &str, args: &[&str]) -> OrderApi {
        let mut argv = vec![
            "order-api",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            redis_url,
            "--drain-delay",
            "0s",
        ];
        if !args.contains(&"--auth") {
            argv.extend(["--auth", "none"]);
        }
        argv.extend_from_slice(args);
        let config = order_api::Config::try_parse_from(argv).expect("order-api configuration");
        let lifecycle = Lifecycle::new();
        let app = order_api::Application::build(&config, lifecycle.clone())
            .await
            .expect("order-api builds");
        let addr = app.local_addr().expect("address");
        tokio::spawn(app.run_until_stopped());
        OrderApi { addr, lifecycle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for OrderApi {
    fn drop(&mut self) {
        self.lifecycle.stop();
    }
}

pub fn order_body(customer: &str, sku: &str) -> Value {
    json!({"customerId": customer, "currency": "EUR", "items": [{"sku": sku, "quantity": 1, "unitPrice": "9.99"}]})
}

/// The POST response without `eventId`: exactly what the event's data must be.
pub fn order_of(created: &Value) -> Value {
    let mut order = created.clone();
    order.as_object_mut().expect("object").remove("eventId");
    order
}

/// Opens `url` as an SSE stream, optionally resuming after `last_event_id`.
pub async fn open_stream(client: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> SseClient {
    let mut request = client.get(url);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.expect("GET stream");
    assert_eq!(response.status(), 200, "GET {url}");
    SseClient::new(response.bytes_stream().map(|r| r.map_err(|e| e.to_string())).boxed())
}

/// Waits until a gateway reports ready (its tail reader follows the stream).
pub async fn wait_ready(client: &reqwest::Client, gateway: &Gateway) {
    let url = gateway.url("/readyz");
    eventually(Duration::from_secs(20), "gateway ready", || async {
        client.get(&url).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

impl OrderApi {
    /// POSTs an order for `sku` as a real client does (a 503 is retried with the same
    /// `Idempotency-Key`) and returns the created order.
    pub async fn create(&self, client: &reqwest::Client, sku: &str) -> Value {
        post_order(client, &self.url("/api/order"), &order_body("c", sku)).await
    }

    /// Like [`OrderApi::create`], returning the event id.
    pub async fn create_event(&self, client: &reqwest::Client, sku: &str) -> String {
        self.create(client, sku).await["eventId"]
            .as_str()
            .expect("eventId")
            .to_owned()
    }
}

/// Taken by the tests that load the machine most (hundreds of clients, several gateways) so
/// that under `cargo test`, which runs a binary's tests in parallel threads, they do not run at
/// the same time and the drain test's timing is measured on a machine it does not share with
/// them. (nextest runs each test in its own process; `.config/nextest.toml` runs the drain test
/// alone.)
pub async fn heavy_test() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}
