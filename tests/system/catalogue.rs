//! A catalogue of malformed requests sent over raw sockets, each as a connection's first
//! request and as a later one on a keep-alive connection: each one gets its 4xx with a
//! problem+json body, the server stays up, and nothing is stored or published.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Sse, deadline, order_body, order_of, spawn_app};

struct Case {
    name: String,
    request: Vec<u8>,
    status: u16,
}

fn post(name: impl Into<String>, content_type: Option<&str>, body: &[u8], status: u16) -> Case {
    let mut request = format!(
        "POST /api/order HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(content_type) = content_type {
        request.push_str(&format!("content-type: {content_type}\r\n"));
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(body);
    Case {
        name: name.into(),
        request,
        status,
    }
}

fn json_post(name: impl Into<String>, body: impl AsRef<[u8]>, status: u16) -> Case {
    post(name, Some("application/json"), body.as_ref(), status)
}

fn raw(name: impl Into<String>, request: impl AsRef<[u8]>, status: u16) -> Case {
    Case {
        name: name.into(),
        request: request.as_ref().to_vec(),
        status,
    }
}

fn stream_with_header(name: impl Into<String>, header: &[u8], status: u16) -> Case {
    let mut request = b"GET /api/order/stream HTTP/1.1\r\nhost: test\r\n".to_vec();
    request.extend_from_slice(header);
    request.extend_from_slice(b"\r\n\r\n");
    raw(name, request, status)
}

/// A valid order with `path` (a top-level key or `item.KEY`) replaced by `value`.
fn with_field(path: &str, value: Value) -> Value {
    let mut order =
        json!({"customerId": "c", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}]});
    match path.strip_prefix("item.") {
        Some(key) => order["items"][0][key] = value,
        None => order[path] = value,
    }
    order
}

fn catalogue() -> Vec<Case> {
    let mut cases = Vec::new();
    // Broken JSON.
    for body in [
        "",
        " ",
        "{",
        "}",
        "[",
        "]",
        "{\"customerId\":",
        "nul",
        "tru",
        "{'customerId':'c'}",
        "{\"a\":1,}",
        "[1,]",
        "{\"a\" 1}",
        "{\"a\":}",
        "/* c */{}",
        "{} {}",
        "{}x",
        "NaN",
        "Infinity",
        "-",
        "01",
        "1.",
        ".5",
        "\"\\x\"",
        "\"\u{1}\"",
        "\"\\ud800\"",
        "\"\\udc00x\"",
        "{\"a\":\"unterminated}",
        "\u{feff}{}",
        "{\"a\":1}}",
        "[[[[[[[[",
    ] {
        cases.push(json_post(format!("broken JSON {body:?}"), body, 400));
    }
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    cases.push(json_post("nesting 10,000 deep", deep, 400));
    // Not an object.
    for body in ["null", "true", "1", "\"order\"", "[]", "[{}]"] {
        cases.push(json_post(format!("body {body}"), body, 400));
    }
    // Wrong types and values, one field at a time.
    let long = |n: usize| Value::String("x".repeat(n));
    let wrong: Vec<(&str, Vec<Value>)> = vec![
        (
            "customerId",
            vec![
                Value::Null,
                json!(true),
                json!(1),
                json!(1.5),
                json!([]),
                json!({}),
                json!(""),
                json!("  "),
                long(129),
            ],
        ),
        (
            "currency",
            vec![
                Value::Null,
                json!(true),
                json!(978),
                json!("eur"),
                json!("EURO"),
                json!(""),
                json!("ABC"),
                json!(["EUR"]),
                json!({}),
            ],
        ),
        (
            "items",
            vec![
                Value::Null,
                json!(true),
                json!(1),
                json!("A"),
                json!({}),
                json!([]),
                json!([1]),
                json!([null]),
                json!(["A"]),
                Value::Array(vec![json!({"sku": "A", "quantity": 1, "unitPrice": 1}); 101]),
            ],
        ),
        (
            "item.sku",
            vec![
                Value::Null,
                json!(true),
                json!(1),
                json!(""),
                json!("a b"),
                long(65),
                json!("é"),
                json!([]),
                json!({}),
                json!("A/B"),
            ],
        ),
        (
            "item.quantity",
            vec![
                Value::Null,
                json!(true),
                json!("1"),
                json!(0),
                json!(-1),
                json!(1.5),
                json!(1001),
                json!(1e3),
                json!(u64::MAX),
                json!([]),
                json!({}),
            ],
        ),
        (
            "item.unitPrice",
            vec![
                Value::Null,
                json!(true),
                json!(-1),
                json!(1.5),
                json!("1.234"),
                json!("-1"),
                json!("1,00"),
                json!("abc"),
                json!("1e3"),
                json!(1_000_000_000_001i64),
                json!("10000000000000000"),
                json!(i64::MIN),
                json!([]),
                json!({}),
                json!(""),
            ],
        ),
        ("unknownField", vec![json!(1), Value::Null, json!("x")]),
        ("item.color", vec![json!("red")]),
    ];
    for (field, values) in wrong {
        for value in values {
            let body = with_field(field, value.clone()).to_string();
            cases.push(json_post(
                format!("{field} = {}", truncate(&value.to_string())),
                body,
                400,
            ));
        }
    }
    // Huge numbers, written out.
    for number in [
        "1e400",
        "-1e400",
        "123456789012345678901234567890",
        "9223372036854775808",
        "-9223372036854775809",
        "1e-400",
        "0.0000000000000000000001",
    ] {
        for field in ["quantity", "unitPrice"] {
            let body = format!(
                r#"{{"customerId":"c","currency":"EUR","items":[{{"sku":"A","quantity":1,"unitPrice":1,"{field}":{number}}}]}}"#
            );
            cases.push(json_post(format!("{field} {number} (and a repeat)"), body, 400));
            let body = format!(
                r#"{{"customerId":"c","currency":"EUR","items":[{{"sku":"A","{field}":{number}{}}}]}}"#,
                if field == "quantity" {
                    ",\"unitPrice\":1"
                } else {
                    ",\"quantity\":1"
                }
            );
            cases.push(json_post(format!("{field} {number}"), body, 400));
        }
    }
    // Repeated keys, at every level.
    for key in ["customerId", "currency", "items"] {
        let value = with_field("customerId", json!("c"))[key].to_string();
        let body = with_field("customerId", json!("c")).to_string();
        let body = format!("{{\"{key}\":{value},{}", &body[1..]);
        cases.push(json_post(format!("repeated {key}"), body, 400));
    }
    for key in ["sku", "quantity", "unitPrice"] {
        let item = json!({"sku": "A", "quantity": 1, "unitPrice": 1});
        let value = item[key].to_string();
        let item = format!("{{\"{key}\":{value},{}", &item.to_string()[1..]);
        let body = format!(r#"{{"customerId":"c","currency":"EUR","items":[{item}]}}"#);
        cases.push(json_post(format!("repeated items[0].{key}"), body, 400));
    }
    cases.push(json_post(
        "repeated key by escape",
        r#"{"customerId":"c","customer\u0049d":"d","currency":"EUR","items":[{"sku":"A","quantity":1,"unitPrice":1}]}"#,
        400,
    ));
    cases.push(json_post(
        "repeated key in an unknown nested object",
        r#"{"customerId":"c","currency":"EUR","items":[{"sku":"A","quantity":1,"unitPrice":1}],"x":{"y":[{"z":1,"z":2}]}}"#,
        400,
    ));
    // Control characters in customerId and sku.
    let controls = (0u32..0x20).chain([0x7f]).chain(0x80..0xa0).chain([0x2028, 0x2029]);
    for code in controls {
        let c = char::from_u32(code).unwrap();
        cases.push(json_post(
            format!("customerId with U+{code:04X}"),
            with_field("customerId", json!(format!("a{c}b"))).to_string(),
            400,
        ));
        {
            cases.push(json_post(
                format!("sku with U+{code:04X}"),
                with_field("item.sku", json!(format!("A{c}"))).to_string(),
                400,
            ));
        }
    }
    // Bad UTF-8 in the body.
    for bytes in [
        &b"\xff"[..],
        b"\xc3\x28",
        b"\xed\xa0\x80",
        b"\xf0\x28\x8c\x28",
        b"\xc0\xaf",
    ] {
        let mut body = br#"{"customerId":"a"#.to_vec();
        body.extend_from_slice(bytes);
        body.extend_from_slice(br#"","currency":"EUR","items":[{"sku":"A","quantity":1,"unitPrice":1}]}"#);
        cases.push(json_post(format!("bad UTF-8 {bytes:?}"), body, 400));
    }
    // Content types and sizes.
    let valid = order_body("c", "A").to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
        Some("json"),
        Some("text/json"),
        Some("application/xml"),
    ] {
        cases.push(post(
            format!("content type {content_type:?}"),
            content_type,
            valid.as_bytes(),
            415,
        ));
    }
    let huge = format!(
        r#"{{"customerId":"{}","currency":"EUR","items":[]}}"#,
        "x".repeat(70_000)
    );
    cases.push(json_post("body over the 64 KiB limit", huge, 413));
    // Stream: bad, oversized and repeated Last-Event-ID; bad query.
    for id in [
        "abc",
        "-1",
        "1-",
        "-0",
        "1-0-0",
        "1.5-0",
        "99999999999999999999-0",
        "0x10-0",
        "１-0",
        "1 -0",
        "1-0,2-0",
    ] {
        stream_case(
            &mut cases,
            format!("Last-Event-ID {id:?}"),
            format!("last-event-id: {id}").as_bytes(),
            400,
        );
    }
    stream_case(
        &mut cases,
        "oversized Last-Event-ID",
        format!("last-event-id: {}-0", "9".repeat(2000)).as_bytes(),
        400,
    );
    stream_case(
        &mut cases,
        "Last-Event-ID with bad UTF-8",
        b"last-event-id: \xff\xfe-0",
        400,
    );
    stream_case(
        &mut cases,
        "two Last-Event-IDs",
        b"last-event-id: 1-0\r\nlast-event-id: 2-0",
        400,
    );
    for query in [
        "lastEventId=abc",
        "lastEventId=1-",
        &format!("lastEventId={}", "1".repeat(500)),
        "customerId=",
        &format!("customerId={}", "x".repeat(129)),
        "lastEventId=%ff",
        "lastEventId=1-0&lastEventId=2-0",
    ] {
        cases.push(raw(
            format!("stream query {}", truncate(query)),
            format!("GET /api/order/stream?{query} HTTP/1.1\r\nhost: test\r\n\r\n"),
            400,
        ));
    }
    // Heads: Host, size, syntax, Idempotency-Key.
    cases.push(raw("no Host", "GET /healthz HTTP/1.1\r\n\r\n", 400));
    cases.push(raw(
        "two Hosts",
        "GET /healthz HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        400,
    ));
    cases.push(raw(
        "Host with a space",
        "GET /healthz HTTP/1.1\r\nhost: a b\r\n\r\n",
        400,
    ));
    let no_host = post("POST without Host", Some("application/json"), valid.as_bytes(), 400);
    cases.push(Case {
        request: String::from_utf8(no_host.request)
            .unwrap()
            .replace("host: test\r\n", "")
            .into_bytes(),
        ..no_host
    });
    cases.push(raw(
        "9 KiB header",
        format!(
            "GET /healthz HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
            "a".repeat(9 * 1024)
        ),
        431,
    ));
    cases.push(raw(
        "9 KiB stream header",
        format!(
            "GET /api/order/stream HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
            "a".repeat(9 * 1024)
        ),
        431,
    ));
    cases.push(raw("garbage request line", "GARBAGE\r\n\r\n", 400));
    cases.push(raw(
        "bad header name",
        "GET /healthz HTTP/1.1\r\nhost: a\r\nbad header: x\r\n\r\n",
        400,
    ));
    cases.push(raw(
        "NUL in a header",
        "GET /healthz HTTP/1.1\r\nhost: a\r\nx: a\0b\r\n\r\n",
        400,
    ));
    for key in [
        "has space".to_owned(),
        "k".repeat(256),
        "é".to_owned(),
        "".to_owned(),
        "tab\tkey".to_owned(),
    ] {
        let mut case = post(
            format!("Idempotency-Key {:?}", truncate(&key)),
            Some("application/json"),
            valid.as_bytes(),
            400,
        );
        let text = String::from_utf8(case.request).unwrap();
        case.request = text
            .replacen("\r\n\r\n", &format!("\r\nidempotency-key: {key}\r\n\r\n"), 1)
            .into_bytes();
        cases.push(case);
    }
    // Order ids.
    for id in [
        "x",
        "1",
        "not-a-uuid",
        &"a".repeat(5000),
        "00000000-0000-0000-0000-00000000000g",
        "..%2f..%2fetc",
    ] {
        cases.push(raw(
            format!("order id {}", truncate(id)),
            format!("GET /api/order/{id} HTTP/1.1\r\nhost: a\r\n\r\n"),
            404,
        ));
    }
    cases.push(raw(
        "order id with bad UTF-8",
        "GET /api/order/%ff HTTP/1.1\r\nhost: a\r\n\r\n",
        400,
    ));
    cases.push(raw(
        "unknown order",
        "GET /api/order/01a236ae-fd04-7710-bf95-0e9cfba55531 HTTP/1.1\r\nhost: a\r\n\r\n",
        404,
    ));
    // Methods.
    for method in ["PUT", "DELETE", "PATCH"] {
        cases.push(raw(
            format!("{method} /api/order"),
            format!("{method} /api/order HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n"),
            405,
        ));
    }
    cases.push(raw(
        "POST to the stream",
        "POST /api/order/stream HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n",
        405,
    ));
    cases
}

fn stream_case(cases: &mut Vec<Case>, name: impl Into<String>, header: &[u8], status: u16) {
    cases.push(stream_with_header(name, header, status));
}

fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Sends one request on its own connection; returns the status, the head and the body.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    // A server may answer before reading everything (413, 431): a failed write is fine.
    let _ = socket.write_all(request).await;
    read_response(&mut socket, &mut Vec::new()).await
}

/// Sends a valid request, reads its answer, then sends `request` on the same keep-alive
/// connection (or both at once when `pipelined`); returns the answer to `request`.
async fn exchange_after_another(addr: SocketAddr, request: &[u8], pipelined: bool) -> (u16, String, Vec<u8>) {
    const FIRST: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n";
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let mut rest = Vec::new();
    if pipelined {
        let _ = socket.write_all(&[FIRST, request].concat()).await;
    } else {
        socket.write_all(FIRST).await.unwrap();
    }
    let (status, head, _) = read_response(&mut socket, &mut rest).await;
    assert_eq!(status, 200, "the first request: {head}");
    if !pipelined {
        let _ = socket.write_all(request).await;
    }
    read_response(&mut socket, &mut rest).await
}

/// Reads one response: the status, the head and the body. `buffered` holds bytes read past the
/// previous response on entry and past this one on return.
async fn read_response(socket: &mut TcpStream, buffered: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    let mut response = std::mem::take(buffered);
    let mut buffer = [0u8; 8192];
    let until = deadline(10);
    let status_of = |head: &str| head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut n = usize::MAX;
    loop {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(length) = length {
                if response.len() >= end + 4 + length {
                    let body = response[end + 4..end + 4 + length].to_vec();
                    *buffered = response[end + 4 + length..].to_vec();
                    return (status_of(&head), head, body);
                }
            }
            if n == 0 {
                return (status_of(&head), head, response[end + 4..].to_vec());
            }
        } else if n == 0 {
            return (0, String::from_utf8_lossy(&response).into_owned(), Vec::new());
        }
        // A reset after the answer reads as the end.
        n = tokio::time::timeout_at(until, socket.read(&mut buffer))
            .await
            .expect("an answer within 10 s")
            .unwrap_or_default();
        response.extend_from_slice(&buffer[..n]);
    }
}

/// Whether an answer is `status` with a problem+json body saying so.
fn is_problem(answer: &(u16, String, Vec<u8>), status: u16) -> bool {
    let (got, head, body) = answer;
    let problem: Option<Value> = serde_json::from_slice(body).ok();
    *got == status
        && head.contains("content-type: application/problem+json")
        && problem
            .as_ref()
            .is_some_and(|p| p["status"] == status && p["title"].is_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_gets_its_4xx_problem_and_nothing_is_stored_or_published() {
    let app = spawn_app(&["--replay-window", "1h"]).await;
    let cases = catalogue();
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        // Each case as a connection's first request, as a later one on a keep-alive
        // connection, and (every fourth case) pipelined right behind another request.
        let mut answers = vec![
            ("first", exchange(app.addr, &case.request).await),
            (
                "after another",
                exchange_after_another(app.addr, &case.request, false).await,
            ),
        ];
        if index % 4 == 0 {
            answers.push(("pipelined", exchange_after_another(app.addr, &case.request, true).await));
        }
        for (position, answer) in &answers {
            if !is_problem(answer, case.status) {
                let (status, head, body) = answer;
                failures.push(format!(
                    "{} ({position}): expected {}, got {status} {head:?} {}",
                    case.name,
                    case.status,
                    String::from_utf8_lossy(body)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Still up, and nothing was written: the whole log holds only the order created now.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let mut everything = app.open_stream(Some("0-0"), "").await;
    let created = app.create_order(&order_body("c", "AFTER")).await;
    let until = deadline(5);
    let first = loop {
        match everything.next_until(until).await.expect("an event") {
            Sse::Event { data, id, .. } => break (id, data),
            Sse::Comment(_) | Sse::Retry(_) => {}
        }
    };
    assert_eq!(
        first.0.as_deref(),
        created["eventId"].as_str(),
        "an earlier event was published"
    );
    assert_eq!(serde_json::from_str::<Value>(&first.1).unwrap(), order_of(&created));
    everything
        .expect_no_event_until(tokio::time::Instant::now() + Duration::from_millis(300))
        .await;
    let fetched = app
        .client
        .get(app.url(&format!("/api/order/{}", created["orderId"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
}

#[tokio::test]
async fn heads_after_a_chunked_body_or_an_upgrade_request_are_checked_too() {
    let app = spawn_app(&[]).await;
    let order = order_body("c", "CHUNKED").to_string();
    let chunked = format!(
        "POST /api/order HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x};ext=1\r\n{order}\r\n0\r\nx-trailer: 1\r\n\r\n",
        order.len()
    );
    let upgrade = "GET /healthz HTTP/1.1\r\nhost: test\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n".to_owned();
    for (first, status) in [(chunked, 201), (upgrade, 200)] {
        for pipelined in [false, true] {
            let mut socket = TcpStream::connect(app.addr).await.unwrap();
            let bad = b"GET /healthz HTTP/1.1\r\nhost: test\r\nbad header\r\n\r\n";
            let mut rest = Vec::new();
            if pipelined {
                socket.write_all(&[first.as_bytes(), bad].concat()).await.unwrap();
            } else {
                socket.write_all(first.as_bytes()).await.unwrap();
            }
            let (got, head, body) = read_response(&mut socket, &mut rest).await;
            assert_eq!(got, status, "{first:?}: {head} {}", String::from_utf8_lossy(&body));
            if !pipelined {
                socket.write_all(bad).await.unwrap();
            }
            let answer = read_response(&mut socket, &mut rest).await;
            assert!(
                is_problem(&answer, 400),
                "after {first:?} (pipelined: {pipelined}): {answer:?}"
            );
        }
    }
}
