//! The stream's wire format: headers, retry hint, heartbeats, framing that customer text
//! cannot break, and a clean end on shutdown.

use std::time::Duration;

use order_events::auth::{DevClaims, SCOPE_READ_ALL, mint_hs256};
use serde_json::Value;

use crate::helpers::{Sse, Transport, deadline, order_body, order_of, spawn_app, spawn_app_over};

test_each_transport!(stream_sends_sse_headers_and_starts_with_a_retry_hint);
async fn stream_sends_sse_headers_and_starts_with_a_retry_hint(transport: Transport) {
    let app = spawn_app_over(transport, &["--reconnect-delay", "1500ms"]).await;
    let response = app.stream_get("/api/order/stream").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), transport.version());
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-encoding").is_none());
    let mut stream = app.open_stream(None, "").await;
    assert_eq!(stream.next_until(deadline(5)).await, Some(Sse::Retry(1500)));
}

/// Response headers that describe the connection or its framing, not the response.
const CONNECTION_HEADERS: [&str; 5] = [
    "connection",
    "content-length",
    "date",
    "keep-alive",
    "transfer-encoding",
];

#[tokio::test]
async fn both_transports_answer_stream_requests_with_the_same_headers_and_problem_bodies() {
    const SECRET: &str = "protocol-test-secret-protocol-test-secret";
    let app = spawn_app(&[
        "--auth",
        "jwt",
        "--jwt-secret",
        SECRET,
        "--cors-origins",
        "http://page.test",
    ])
    .await;
    let claims = DevClaims::new("tester", &[SCOPE_READ_ALL], None, Duration::from_secs(600));
    let reader = mint_hs256(SECRET.as_bytes(), &claims).unwrap();
    // (token, Last-Event-ID, origin): a stream, a missing token, a malformed id, another origin.
    let requests = [
        (Some(reader.as_str()), None, "http://page.test"),
        (None, None, "http://page.test"),
        (Some(reader.as_str()), Some("yesterday"), "http://page.test"),
        (Some(reader.as_str()), None, "http://elsewhere.test"),
    ];
    let mut answers = Vec::new();
    for transport in [Transport::Http1, Transport::H2c] {
        let client = transport.client();
        let mut answered = Vec::new();
        for (token, last_event_id, origin) in requests {
            let mut request = client.get(app.url("/api/order/stream")).header("origin", origin);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(id) = last_event_id {
                request = request.header("last-event-id", id);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.version(), transport.version());
            let status = response.status().as_u16();
            // Its value differs by the second; both transports must send one.
            assert!(response.headers().contains_key("date"), "{transport:?} sends date");
            let mut headers: Vec<(String, String)> = response
                .headers()
                .iter()
                .filter(|(name, _)| !CONNECTION_HEADERS.contains(&name.as_str()))
                .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
                .collect();
            headers.sort();
            // A stream's body never ends: only a problem's is compared.
            let body = if status == 200 {
                String::new()
            } else {
                response.text().await.unwrap()
            };
            answered.push((status, headers, body));
        }
        answers.push(answered);
    }
    let statuses: Vec<u16> = answers[0].iter().map(|(status, _, _)| *status).collect();
    assert_eq!(statuses, [200, 401, 400, 200]);
    assert_eq!(
        answers[0], answers[1],
        "HTTP/1.1 (fast path) and h2c (hyper) answer alike"
    );
}

test_each_transport!(idle_streams_receive_heartbeat_comments);
async fn idle_streams_receive_heartbeat_comments(transport: Transport) {
    let app = spawn_app_over(transport, &["--heartbeat-interval", "100ms"]).await;
    let mut stream = app.open_stream(None, "").await;
    let until = deadline(5);
    let mut heartbeats = 0;
    while heartbeats < 3 {
        match stream.next_until(until).await.expect("heartbeats keep coming") {
            Sse::Comment(_) => heartbeats += 1,
            Sse::Retry(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

test_each_transport!(customer_text_that_looks_like_sse_fields_stays_inside_one_data_field);
async fn customer_text_that_looks_like_sse_fields_stays_inside_one_data_field(transport: Transport) {
    let app = spawn_app_over(transport, &["--replay-window", "0s"]).await;
    let mut stream = app.open_stream(None, "").await;
    // Line breaks are refused at the door; what is left of a field injection is plain text.
    let response = app
        .post_raw(
            Some("application/json"),
            order_body("evil\n\nevent: x\ndata: injected", "X0").to_string(),
        )
        .await;
    assert_eq!(response.status(), 400);
    let hostile = "evil event: x data: injected id: 9-9 \\n\\r \"quoted\"";
    let created = app.create_order(&order_body(hostile, "X1")).await;
    let follow_up = app.create_order(&order_body("plain", "X2")).await;
    let mut events = Vec::new();
    let until = deadline(5);
    while events.len() < 2 {
        match stream.next_until(until).await.expect("events") {
            Sse::Event { id, event, data } => events.push((id, event, data)),
            Sse::Comment(_) | Sse::Retry(_) => {}
        }
    }
    assert_eq!(events[0].0.as_deref(), created["eventId"].as_str());
    assert_eq!(events[0].1, "order-created");
    let data: Value = serde_json::from_str(&events[0].2).unwrap();
    assert_eq!(data["customerId"], hostile);
    assert_eq!(data, order_of(&created));
    assert_eq!(
        events[1].0.as_deref(),
        follow_up["eventId"].as_str(),
        "no injected event or id in between"
    );
    assert_eq!(stream.last_event_id.as_deref(), follow_up["eventId"].as_str());
}

test_each_transport!(customer_filter_delivers_only_that_customers_orders);
async fn customer_filter_delivers_only_that_customers_orders(transport: Transport) {
    let app = spawn_app_over(transport, &["--replay-window", "0s"]).await;
    let mut filtered = app.open_stream(None, "?customerId=alice").await;
    app.create_order(&order_body("bob", "B1")).await;
    let alice = app.create_order(&order_body("alice", "A1")).await;
    app.create_order(&order_body("bob", "B2")).await;
    let events = filtered.collect_orders(1, Duration::from_secs(5)).await;
    assert_eq!(events[0].1, order_of(&alice));
    filtered
        .expect_no_event_until(tokio::time::Instant::now() + Duration::from_millis(300))
        .await;
}

test_each_transport!(shutdown_ends_open_streams_with_a_retry_hint_and_the_server_exits);
async fn shutdown_ends_open_streams_with_a_retry_hint_and_the_server_exits(transport: Transport) {
    let app = spawn_app_over(transport, &["--shutdown-grace", "1s"]).await;
    let mut stream = app.open_stream(None, "").await;
    assert!(matches!(stream.next_until(deadline(5)).await, Some(Sse::Retry(_))));
    app.lifecycle.stop();
    let until = deadline(5);
    let mut last_retry = None;
    while let Some(item) = stream.next_until(until).await {
        if let Sse::Retry(ms) = item {
            last_retry = Some(ms);
        }
    }
    assert!(last_retry.is_some(), "the stream ends with a retry hint");
    tokio::time::timeout(Duration::from_secs(5), app.server)
        .await
        .expect("server exits")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn readiness_turns_unavailable_while_draining() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    app.lifecycle.start_draining();
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
}

test_each_transport!(connections_beyond_the_limit_get_503_with_retry_after);
async fn connections_beyond_the_limit_get_503_with_retry_after(transport: Transport) {
    let app = spawn_app_over(transport, &["--max-connections", "2"]).await;
    let _a = app.open_stream(None, "").await;
    let _b = app.open_stream(None, "").await;
    let response = app.stream_get("/api/order/stream").send().await.unwrap();
    assert_eq!(response.version(), transport.version());
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn streams_work_over_cleartext_http2_many_on_one_connection() {
    let app = spawn_app_over(Transport::H2c, &["--replay-window", "0s"]).await;
    let mut streams = Vec::new();
    for _ in 0..10 {
        // One client: its streams share one connection.
        streams.push(app.open_stream(None, "").await);
    }
    let created = app.create_order(&order_body("h2", "H2")).await;
    for stream in &mut streams {
        let events = stream.collect_orders(1, Duration::from_secs(5)).await;
        assert_eq!(events[0].1, order_of(&created));
    }
}

#[tokio::test]
async fn the_ready_gauge_follows_the_process_without_anyone_asking_readyz() {
    let app = spawn_app(&[]).await;
    order_events::testing::eventually(Duration::from_secs(10), "ready without /readyz", || async {
        app.metric("sse_orders_ready").await == 1.0
    })
    .await;
    app.lifecycle.start_draining();
    order_events::testing::eventually(Duration::from_secs(10), "not ready while draining", || async {
        app.metric("sse_orders_ready").await == 0.0
    })
    .await;
}
