//! The stream's wire format: headers, retry hint, heartbeats, framing that customer text
//! cannot break, and a clean end on shutdown.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Sse, deadline, order_body, order_of, spawn_app};

#[tokio::test]
async fn stream_sends_sse_headers_and_starts_with_a_retry_hint() {
    let app = spawn_app(&["--reconnect-delay", "1500ms"]).await;
    let response = app.client.get(app.url("/api/order/stream")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-encoding").is_none());
    let mut stream = app.open_stream(None, "").await;
    assert_eq!(stream.next_until(deadline(5)).await, Some(Sse::Retry(1500)));
}

#[tokio::test]
async fn idle_streams_receive_heartbeat_comments() {
    let app = spawn_app(&["--heartbeat-interval", "100ms"]).await;
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

#[tokio::test]
async fn customer_text_that_looks_like_sse_fields_stays_inside_one_data_field() {
    let app = spawn_app(&["--replay-window", "0s"]).await;
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

#[tokio::test]
async fn customer_filter_delivers_only_that_customers_orders() {
    let app = spawn_app(&["--replay-window", "0s"]).await;
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

#[tokio::test]
async fn shutdown_ends_open_streams_with_a_retry_hint_and_the_server_exits() {
    let app = spawn_app(&["--shutdown-grace", "1s"]).await;
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

#[tokio::test]
async fn connections_beyond_the_limit_get_503_with_retry_after() {
    let app = spawn_app(&["--max-connections", "2"]).await;
    let _a = app.open_stream(None, "").await;
    let _b = app.open_stream(None, "").await;
    let response = app.client.get(app.url("/api/order/stream")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn streams_work_over_cleartext_http2_many_on_one_connection() {
    let app = spawn_app(&["--replay-window", "0s"]).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut streams = Vec::new();
    for _ in 0..10 {
        let response = h2.get(app.url("/api/order/stream")).send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        use futures_util::StreamExt;
        streams.push(crate::helpers::SseClient::new(
            response.bytes_stream().map(|r| r.map_err(|e| e.to_string())).boxed(),
        ));
    }
    let created = app.create_order(&order_body("h2", "H2")).await;
    for stream in &mut streams {
        let events = stream.collect_orders(1, Duration::from_secs(5)).await;
        assert_eq!(events[0].1, order_of(&created));
    }
}
