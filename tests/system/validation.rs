//! Every bad input gets its status and a problem body, and nothing is stored for it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, Transport, order_body, spawn_app, spawn_app_over};

async fn assert_problem(response: reqwest::Response, status: u16, mentions: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(problem["status"], status);
    assert!(problem["title"].is_string() && problem["type"].is_string());
    let text = problem.to_string();
    assert!(text.contains(mentions), "problem {text} should mention {mentions}");
}

async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.metric("sse_orders_orders_created_total").await, 0.0);
    let mut stream = app.open_stream(None, "").await;
    stream
        .expect_no_event_until(tokio::time::Instant::now() + Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn invalid_orders_get_400_naming_each_field_and_store_nothing() {
    let app = spawn_app(&["--replay-window", "1h"]).await;
    let item = |sku: Value, quantity: Value, price: Value| json!({"customerId": "c", "currency": "EUR", "items": [{"sku": sku, "quantity": quantity, "unitPrice": price}]});
    let cases = [
        (
            json!({"currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}]}),
            "customerId",
        ),
        (
            json!({"customerId": "", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}]}),
            "customerId",
        ),
        (
            json!({"customerId": "x".repeat(129), "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}]}),
            "customerId",
        ),
        (
            json!({"customerId": "c", "currency": "euro", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}]}),
            "currency",
        ),
        (
            json!({"customerId": "c", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}]}),
            "currency",
        ),
        (json!({"customerId": "c", "currency": "EUR", "items": []}), "items"),
        (json!({"customerId": "c", "currency": "EUR"}), "items"),
        (json!({"customerId": "c", "currency": "EUR", "items": "A"}), "items"),
        (item(json!(""), json!(1), json!(1)), "items[0].sku"),
        (item(json!("a b"), json!(1), json!(1)), "items[0].sku"),
        (item(json!("A"), json!(0), json!(1)), "items[0].quantity"),
        (item(json!("A"), json!(1.5), json!(1)), "items[0].quantity"),
        (item(json!("A"), json!(1001), json!(1)), "items[0].quantity"),
        (item(json!("A"), json!(1), json!(12.5)), "items[0].unitPrice"),
        (item(json!("A"), json!(1), json!(-1)), "items[0].unitPrice"),
        (item(json!("A"), json!(1), json!("12.345")), "items[0].unitPrice"),
        (item(json!("A"), json!(1), json!("twelve")), "items[0].unitPrice"),
        (
            json!({"customerId": "c", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}], "discount": 5}),
            "discount",
        ),
        (json!([1, 2]), "JSON object"),
    ];
    for (body, field) in cases {
        let response = app.post_raw(Some("application/json"), body.to_string()).await;
        assert_problem(response, 400, field).await;
    }
    let response = app.post_raw(Some("application/json"), "{\"customerId\": ").await;
    assert_problem(response, 400, "not valid JSON").await;
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn wrong_content_type_oversized_body_and_bad_idempotency_key_are_refused() {
    let app = spawn_app(&[]).await;
    let body = order_body("c", "A").to_string();
    assert_problem(
        app.post_raw(Some("text/plain"), body.clone()).await,
        415,
        "application/json",
    )
    .await;
    assert_problem(app.post_raw(None, body.clone()).await, 415, "application/json").await;
    let huge = json!({"customerId": "c", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}], "pad": "x".repeat(70 * 1024)});
    assert_problem(
        app.post_raw(Some("application/json"), huge.to_string()).await,
        413,
        "too large",
    )
    .await;
    let response = app
        .client
        .post(app.url("/api/order"))
        .header("content-type", "application/json")
        .header("idempotency-key", "has space")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "Idempotency-Key").await;
    assert_nothing_stored(&app).await;
}

test_each_transport!(malformed_start_positions_and_customer_ids_get_400_problems);
async fn malformed_start_positions_and_customer_ids_get_400_problems(transport: Transport) {
    let app = spawn_app_over(transport, &[]).await;
    let get = |path: &str| app.stream_get(path).send();
    for bad in ["abc", "1-", "-1", "1-2-3", "1.0-0", "99999999999999999999999-0"] {
        let response = app
            .stream_get("/api/order/stream")
            .header("last-event-id", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), transport.version());
        assert_problem(response, 400, "Last-Event-ID").await;
        let response = get(&format!("/api/order/stream?lastEventId={bad}")).await.unwrap();
        assert_problem(response, 400, "lastEventId").await;
    }
    let long = "x".repeat(200);
    assert_problem(
        get(&format!("/api/order/stream?customerId={long}")).await.unwrap(),
        400,
        "customerId",
    )
    .await;
    assert_problem(get("/api/order/stream?customerId=").await.unwrap(), 400, "customerId").await;
    assert_problem(
        get("/api/order/stream?customerId=a&customerId=b").await.unwrap(),
        400,
        "query string",
    )
    .await;
}

#[tokio::test]
async fn unknown_orders_routes_and_methods_get_problems() {
    let app = spawn_app(&[]).await;
    let get = |path: &str| app.client.get(app.url(path)).send();
    assert_problem(
        get("/api/order/0193a000-0000-7000-8000-000000000000").await.unwrap(),
        404,
        "no order",
    )
    .await;
    assert_problem(get("/api/order/not-a-uuid").await.unwrap(), 404, "no order").await;
    assert_problem(get("/nowhere").await.unwrap(), 404, "Not found").await;
    let response = app.client.delete(app.url("/api/order")).send().await.unwrap();
    assert_problem(response, 405, "Method").await;
}

#[tokio::test]
async fn created_orders_can_be_read_back_and_idempotency_keys_replay_them() {
    let app = spawn_app(&[]).await;
    let created = app.create_order(&order_body("c", "A")).await;
    let location = format!("/api/order/{}", created["orderId"].as_str().unwrap());
    let fetched: Value = app
        .client
        .get(app.url(&location))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, created);
    assert_eq!(created["total"], "25.00");

    let post = |body: Value| {
        app.client
            .post(app.url("/api/order"))
            .header("idempotency-key", "key-1")
            .json(&body)
            .send()
    };
    let first = post(order_body("c", "K")).await.unwrap();
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    let again = post(order_body("c", "K")).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_problem(post(order_body("c", "OTHER")).await.unwrap(), 422, "Idempotency-Key").await;
    assert_eq!(app.metric("sse_orders_orders_created_total").await, 2.0);
}

/// Two different orders whose fields, run together, are the same bytes: the second customer's
/// name ends with what the first order's line items spell out.
fn orders_that_concatenate_alike() -> (Value, Value) {
    // 4543826 is 0x455552: the price's last three bytes spell "EUR".
    let first = json!({"customerId": "c", "currency": "EUR", "items": [
        {"sku": "A", "quantity": 1, "unitPrice": 4_543_826},
        {"sku": "B", "quantity": 1, "unitPrice": 1},
    ]});
    let customer = "c\0EUR\0A\0\0\0\0\0\0\0\u{1}\0\0\0\0";
    let second = json!({"customerId": customer, "currency": "EUR", "items": [
        {"sku": "B", "quantity": 1, "unitPrice": 1},
    ]});
    (first, second)
}

#[tokio::test]
async fn an_idempotency_key_never_answers_a_different_order_with_the_first_one() {
    let app = spawn_app(&[]).await;
    let post = |body: Value| {
        app.client
            .post(app.url("/api/order"))
            .header("idempotency-key", "shared-key")
            .json(&body)
            .send()
    };
    let (first, second) = orders_that_concatenate_alike();
    let created = post(first).await.unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let answer = post(second).await.unwrap();
    let status = answer.status();
    let body: Value = answer.json().await.unwrap();
    assert_ne!(status, 200, "a different order was answered with {body}");
    assert_ne!(body["orderId"], created["orderId"]);
}

#[tokio::test]
async fn another_customers_idempotency_key_neither_conflicts_nor_reveals_the_order() {
    let app = spawn_app(&[]).await;
    let post = |body: Value| {
        app.client
            .post(app.url("/api/order"))
            .header("idempotency-key", "order-1")
            .json(&body)
            .send()
    };
    let mine = post(order_body("alice", "A")).await.unwrap();
    assert_eq!(mine.status(), 201);
    let mine: Value = mine.json().await.unwrap();
    for body in [order_body("bob", "A"), order_body("bob-2", "OTHER")] {
        let theirs = post(body).await.unwrap();
        assert_eq!(theirs.status(), 201, "another customer's key is another key");
        let theirs: Value = theirs.json().await.unwrap();
        assert_ne!(theirs["orderId"], mine["orderId"]);
    }
    let again = post(order_body("alice", "A")).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), mine);
}

/// Sends `request` on a fresh socket and returns the status code and the whole response.
async fn raw_exchange(app: &TestApp, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    // Read up to the end of the body (the connection may stay open for keep-alive).
    let text = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buffer))
            .await
            .expect("a response within 5 s")
            .unwrap();
        response.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&response).into_owned();
        if n == 0 || text.contains("\r\n\r\n{") && text.ends_with('}') {
            break text;
        }
    };
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn a_missing_or_repeated_host_is_a_400_on_every_route() {
    let app = spawn_app(&[]).await;
    let body = order_body("c", "A").to_string();
    let requests = [
        "GET /api/order/stream HTTP/1.1\r\naccept: text/event-stream\r\n\r\n".to_owned(),
        "GET /api/order/stream HTTP/1.1\r\nhost: a\r\nhost: a\r\n\r\n".to_owned(),
        "GET /api/order/stream HTTP/1.1\r\nhost: a b\r\n\r\n".to_owned(),
        "GET /healthz HTTP/1.1\r\n\r\n".to_owned(),
        "GET /healthz HTTP/1.1\r\nhost: a\r\nHost: b\r\n\r\n".to_owned(),
        format!(
            "POST /api/order HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
        format!(
            "POST /api/order HTTP/1.1\r\nhost: a\r\nhost: b\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    ];
    for request in &requests {
        let (status, response) = raw_exchange(&app, request).await;
        assert_eq!(status, 400, "{request:?} got {response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{response}"
        );
        assert!(response.contains("Host"), "{response}");
    }
    // One Host is fine, and HTTP/1.0 may leave it out.
    let (status, _) = raw_exchange(&app, "GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert_eq!(status, 200);
    let (status, _) = raw_exchange(&app, "GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200);
    assert_eq!(app.metric("sse_orders_orders_created_total").await, 0.0);
}

test_each_transport!(two_last_event_id_headers_are_a_400);
async fn two_last_event_id_headers_are_a_400(transport: Transport) {
    let app = spawn_app_over(transport, &[]).await;
    let response = app
        .stream_get("/api/order/stream")
        .header("last-event-id", "1-0")
        .header("last-event-id", "2-0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), transport.version());
    assert_problem(response, 400, "Last-Event-ID").await;
}

#[tokio::test]
async fn repeated_keys_and_control_characters_are_a_400_naming_the_field() {
    let app = spawn_app(&["--replay-window", "1h"]).await;
    let cases = [
        (
            r#"{"customerId": "a", "customerId": "b", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}]}"#,
            "customerId",
        ),
        (
            r#"{"customerId": "a", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "quantity": 900, "unitPrice": 1}]}"#,
            "items[0].quantity",
        ),
        (
            r#"{"customerId": "a\u0000", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}]}"#,
            "customerId",
        ),
        (
            r#"{"customerId": "a\u2028b", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}]}"#,
            "customerId",
        ),
        (
            r#"{"customerId": "a\u0085", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}]}"#,
            "customerId",
        ),
        (
            r#"{"customerId": "a", "currency": "EUR", "items": [{"sku": "A\u007f", "quantity": 1, "unitPrice": 1}]}"#,
            "items[0].sku",
        ),
    ];
    for (body, field) in cases {
        let response = app.post_raw(Some("application/json"), body).await;
        assert_problem(response, 400, &format!("\"field\":\"{field}\"")).await;
    }
    assert_nothing_stored(&app).await;
}
