//! A server out of file descriptors (a real EMFILE, from a child process with a low limit)
//! pauses its accepts, keeps serving what it has open, and answers new clients again once
//! descriptors are free.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use order_events::testing::ChildLog;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{deadline, open_raw_stream, order_body, raw_sse_client};

/// Descriptors the child may hold: enough to start and serve a few clients, far fewer than
/// the sockets the test opens.
const DESCRIPTOR_LIMIT: u32 = 96;

/// `sse-orders` run under `ulimit -n DESCRIPTOR_LIMIT`, its JSON log lines kept.
struct LimitedServer {
    child: Child,
    addr: SocketAddr,
    log: ChildLog,
}

impl LimitedServer {
    fn spawn() -> Self {
        let mut child = Command::new("bash")
            .args([
                "-c",
                &format!("ulimit -n {DESCRIPTOR_LIMIT} && exec \"$0\" \"$@\""),
                env!("CARGO_BIN_EXE_sse-orders"),
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--auth",
                "none",
                "--replay-window",
                "0s",
                // The sockets that fill the table send nothing; they must stay open meanwhile.
                "--header-read-timeout",
                "60s",
                "--drain-delay",
                "0s",
                "--shutdown-grace",
                "1s",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sse-orders starts");
        let (addr, log) = ChildLog::follow(&mut child, false);
        Self { child, addr, log }
    }

    fn logged(&self, text: &str) -> bool {
        self.log.contains(text)
    }
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one request on a kept-alive connection and returns the status line's code.
async fn request(connection: &mut TcpStream, head_and_body: &[u8]) -> u16 {
    connection.write_all(head_and_body).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let until = deadline(10);
    // Every answer here carries a content-length: read until its head and body are in.
    loop {
        let n = tokio::time::timeout_at(until, connection.read(&mut buffer))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "connection closed before an answer");
        answer.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return head[9..12].parse().unwrap();
            }
        }
    }
}

fn post(body: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(body).unwrap();
    let mut request = format!(
        "POST /api/order HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_server_keeps_streaming_and_answers_again_once_they_free_up() {
    let server = LimitedServer::spawn();
    let mut stream = raw_sse_client(open_raw_stream(server.addr, 64 * 1024).await, 4096);
    let mut writer = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(request(&mut writer, &post(&order_body("fd", "BEFORE"))).await, 201);
    assert_eq!(stream.collect_orders(1, Duration::from_secs(10)).await.len(), 1);

    // More sockets than the server may hold: the kernel completes every handshake, the server
    // accepts until its table is full and then backs off.
    let mut hogs = Vec::new();
    for _ in 0..DESCRIPTOR_LIMIT * 2 {
        hogs.push(TcpStream::connect(server.addr).await.unwrap());
    }
    order_events::testing::eventually(
        Duration::from_secs(20),
        "the server runs out of descriptors",
        || async { server.logged("out of file descriptors") },
    )
    .await;

    // Meanwhile the connections it holds are served: an order in, its event out.
    assert_eq!(request(&mut writer, &post(&order_body("fd", "DURING"))).await, 201);
    let during = stream.collect_orders(1, Duration::from_secs(10)).await;
    assert_eq!(during[0].1["items"][0]["sku"], "DURING");

    // Once the sockets leave, new clients are answered again.
    drop(hogs);
    let client = reqwest::Client::new();
    let url = format!("http://{}/healthz", server.addr);
    order_events::testing::eventually(Duration::from_secs(20), "a new client is answered", || async {
        client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|response| response.status() == 200)
    })
    .await;
    let metrics = client
        .get(format!("http://{}/metrics", server.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exhausted = metrics
        .lines()
        .find_map(|line| line.strip_prefix("sse_orders_accept_errors_total{kind=\"fd_exhausted\"} "))
        .map_or(0.0, |value| value.trim().parse::<f64>().unwrap());
    assert!(exhausted >= 1.0, "accepts failed for want of descriptors: {exhausted}");
    assert!(server.logged("accepting connections again"));

    // And the stream opened before it all still receives.
    assert_eq!(request(&mut writer, &post(&order_body("fd", "AFTER"))).await, 201);
    let after = stream.collect_orders(1, Duration::from_secs(10)).await;
    assert_eq!(after[0].1["items"][0]["sku"], "AFTER");
}
