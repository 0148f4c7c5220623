//! Clients that send their request slowly or not at all are closed after the header-read
//! timeout, idle keep-alive connections after the idle timeout, and neither crowds out a new
//! client or cuts an open stream.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::helpers::{Sse, Transport, deadline, order_body, order_of, spawn_app, spawn_app_over};

/// Whether the server has closed `socket` (reading what it may have answered first).
async fn closed_before(socket: &mut TcpStream, until: Instant) -> bool {
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(until, socket.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends `head` one byte every `pause` until the server closes the socket or it is all sent.
async fn trickle(mut socket: TcpStream, head: &'static [u8], pause: Duration) -> TcpStream {
    for byte in head {
        if socket.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_and_silent_sockets_are_closed_and_never_crowd_out_new_clients() {
    let app = spawn_app(&["--header-read-timeout", "1s", "--replay-window", "0s"]).await;
    let mut stream = app.open_stream(None, "").await;
    let head: &'static [u8] = b"GET /api/order/stream HTTP/1.1\r\nhost: slow\r\naccept: text/event-stream\r\n\r\n";
    let mut tricklers = Vec::new();
    for _ in 0..200 {
        let socket = TcpStream::connect(app.addr).await.unwrap();
        tricklers.push(tokio::spawn(trickle(socket, head, Duration::from_millis(100))));
    }
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // While they hold their sockets, a new client is answered and the stream keeps flowing.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let created = app.create_order(&order_body("c", "DURING")).await;
    let events = stream.collect_orders(1, Duration::from_secs(5)).await;
    assert_eq!(events[0].1, order_of(&created));

    // Each one is closed well before it could finish its head (7 s at this pace).
    let until = deadline(5);
    for socket in &mut silent {
        assert!(closed_before(socket, until).await, "a silent socket is still open");
    }
    for trickler in tricklers {
        let mut socket = trickler.await.unwrap();
        assert!(
            closed_before(&mut socket, until).await,
            "a trickling socket is still open"
        );
    }
    let closed = app
        .metric("sse_orders_connections_closed_total{reason=\"header_timeout\"}")
        .await;
    assert!(closed >= 250.0, "{closed} connections closed for their head timeout");

    let created = app.create_order(&order_body("c", "AFTER")).await;
    let events = stream.collect_orders(1, Duration::from_secs(5)).await;
    assert_eq!(events[0].1, order_of(&created));
}

#[tokio::test]
async fn a_late_head_on_a_keep_alive_connection_is_closed_before_the_idle_timeout() {
    let app = spawn_app(&["--header-read-timeout", "500ms", "--idle-timeout", "30s"]).await;
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let n = socket.read(&mut buffer).await.unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    // The head takes 7 s to trickle in; had it been let through, the answer would keep the
    // connection open for the 30 s idle timeout.
    let mut socket = trickle(
        socket,
        b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n",
        Duration::from_millis(200),
    )
    .await;
    assert!(closed_before(&mut socket, deadline(2)).await);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let app = spawn_app(&["--idle-timeout", "300ms"]).await;
    let mut http1 = TcpStream::connect(app.addr).await.unwrap();
    http1
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let n = http1.read(&mut buffer).await.unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    assert!(
        closed_before(&mut http1, deadline(5)).await,
        "an idle HTTP/1.1 connection stays open"
    );
    let idle = app
        .metric("sse_orders_connections_closed_total{reason=\"idle_timeout\"}")
        .await;
    assert!(idle >= 1.0);
}

test_each_transport!(open_streams_are_never_closed_as_idle);
async fn open_streams_are_never_closed_as_idle(transport: Transport) {
    let app = spawn_app_over(
        transport,
        &[
            "--idle-timeout",
            "200ms",
            "--header-read-timeout",
            "200ms",
            "--heartbeat-interval",
            "1h",
            "--replay-window",
            "0s",
        ],
    )
    .await;
    let mut stream = app.open_stream(None, "").await;
    // Several idle timeouts pass with nothing written on the stream.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let created = app.create_order(&order_body("c", "LATE")).await;
    let until = deadline(5);
    loop {
        match stream.next_until(until).await.expect("the stream is still open") {
            Sse::Event { data, .. } => {
                assert_eq!(
                    serde_json::from_str::<serde_json::Value>(&data).unwrap(),
                    order_of(&created)
                );
                break;
            }
            Sse::Comment(_) | Sse::Retry(_) => {}
        }
    }
}

/// Reads until the server closes `socket` and returns what it sent.
async fn answer_before(socket: &mut (impl AsyncReadExt + Unpin), until: Instant) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(until, socket.read(&mut buffer)).await {
            Err(_) => panic!(
                "no answer and no close in time; got {:?}",
                String::from_utf8_lossy(&answer)
            ),
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&answer).into_owned(),
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408_and_the_connection_is_closed_with_nothing_stored() {
    let app = spawn_app(&["--body-read-timeout", "300ms", "--replay-window", "0s"]).await;
    let mut stream = app.open_stream(None, "").await;
    let body = serde_json::to_vec(&order_body("slow-body", "SKU-1")).unwrap();
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/order HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    // A byte every 50 ms keeps the body moving (no gap reaches the 300 ms deadline), but the
    // whole of it would take seconds: the deadline counts from the head, not between bytes.
    let (mut reader, mut writer) = socket.into_split();
    let trickler = tokio::spawn(async move {
        for byte in body {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let answer = answer_before(&mut reader, deadline(5)).await;
    trickler.abort();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("/problems/body-timeout"), "{answer}");

    // Nothing was stored or published: the next event on the stream is a later order's.
    let created = app.create_order(&order_body("c", "AFTER")).await;
    let events = stream.collect_orders(1, Duration::from_secs(5)).await;
    assert_eq!(events[0].1, order_of(&created));
    let listed: serde_json::Value = app
        .client
        .get(app.url("/api/orders?customerId=slow-body"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["orders"].as_array().map(Vec::len), Some(0), "{listed}");
}

#[test]
fn a_body_read_timeout_below_10ms_is_refused_naming_the_flag() {
    use clap::Parser;
    let error = sse_orders::Config::try_parse_from(["sse-orders", "--body-read-timeout", "1ms"]).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("--body-read-timeout"), "{message}");
    assert!(message.contains("at least 10ms"), "{message}");
}
