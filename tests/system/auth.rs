//! Access with `--auth jwt`: who may create, read and stream which customer's orders, on the
//! HTTP/1.1 fast path, the fan-out and HTTP/2 alike.

use std::time::Duration;

use order_events::auth::{DevClaims, SCOPE_READ, SCOPE_READ_ALL, SCOPE_WRITE, mint_hs256};
use order_events::testing::{SseClient, Transport, eventually};
use serde_json::Value;

use crate::helpers::*;

const SECRET: &str = "system-test-secret-system-test-secret";

async fn spawn_with_auth(transport: Transport, extra: &[&str]) -> TestApp {
    let mut args = vec!["--auth", "jwt", "--jwt-secret", SECRET, "--replay-window", "0s"];
    args.extend_from_slice(extra);
    spawn_app_over(transport, &args).await
}

fn token(scopes: &[&str], customer: Option<&str>) -> String {
    token_for(scopes, customer, Duration::from_secs(600))
}

fn token_for(scopes: &[&str], customer: Option<&str>, ttl: Duration) -> String {
    mint_hs256(SECRET.as_bytes(), &DevClaims::new("tester", scopes, customer, ttl)).unwrap()
}

async fn post_order(app: &TestApp, token: Option<&str>, customer: &str, sku: &str) -> reqwest::Response {
    let mut request = app.client.post(app.url("/api/order")).json(&order_body(customer, sku));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn create(app: &TestApp, writer: &str, customer: &str, sku: &str) -> Value {
    let response = post_order(app, Some(writer), customer, sku).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn assert_problem(response: reqwest::Response, status: u16, challenge: Option<&str>) {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    match challenge {
        Some(part) => {
            let value = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
            assert!(value.starts_with("Bearer realm=") && value.contains(part), "{value}");
        }
        None => assert!(response.headers().get("www-authenticate").is_none()),
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
}

/// Opens `path` over the app's stream transport.
async fn stream_with(app: &TestApp, path: &str, token: Option<&str>, last: Option<&str>) -> SseClient {
    let mut request = app.stream_get(path);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    app.transport.stream(request.send().await.unwrap())
}

fn ids(events: &[(String, Value)]) -> Vec<String> {
    events.iter().map(|(id, _)| id.clone()).collect()
}

#[tokio::test]
async fn creating_orders_needs_orders_write_for_the_tokens_own_customer() {
    let app = spawn_with_auth(Transport::Http1, &[]).await;
    assert_problem(
        post_order(&app, None, "c-1", "A").await,
        401,
        Some("realm=\"sse-orders\""),
    )
    .await;
    assert_problem(
        post_order(&app, Some("garbage"), "c-1", "A").await,
        401,
        Some("invalid_token"),
    )
    .await;
    let expired = token_for(&[SCOPE_WRITE], None, Duration::from_secs(1));
    let reader = token(&[SCOPE_READ], Some("c-1"));
    assert_problem(
        post_order(&app, Some(&reader), "c-1", "A").await,
        403,
        Some("insufficient_scope"),
    )
    .await;
    let own = token(&[SCOPE_WRITE], Some("c-1"));
    assert_problem(
        post_order(&app, Some(&own), "c-2", "A").await,
        403,
        Some("insufficient_scope"),
    )
    .await;
    let created = create(&app, &own, "c-1", "A").await;
    assert_eq!(created["customerId"], "c-1");
    // A back-office token without customer_id writes for anyone.
    create(&app, &token(&[SCOPE_WRITE], None), "c-2", "B").await;
    // Nothing refused was stored: a full reader sees exactly the two orders.
    let mut all = stream_with(
        &app,
        "/api/order/stream?lastEventId=0-0",
        Some(&token(&[SCOPE_READ_ALL], None)),
        None,
    )
    .await;
    let events = all.collect_orders(2, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 2);
    all.expect_no_event_until(deadline(1)).await;
    // A token that has since expired (past the leeway) is refused.
    let app_no_leeway = spawn_with_auth(Transport::Http1, &["--jwt-leeway", "0s"]).await;
    eventually(Duration::from_secs(5), "the short token expires", || {
        let (app, expired) = (&app_no_leeway, expired.clone());
        async move { post_order(app, Some(&expired), "c-1", "A").await.status() == 401 }
    })
    .await;
}

#[tokio::test]
async fn another_customers_order_is_not_found() {
    let app = spawn_with_auth(Transport::Http1, &[]).await;
    let writer = token(&[SCOPE_WRITE], None);
    let mine = create(&app, &writer, "c-1", "A").await;
    let theirs = create(&app, &writer, "c-2", "B").await;
    let get = |id: &Value, token: String| {
        let request = app
            .client
            .get(app.url(&format!("/api/order/{}", id.as_str().unwrap())))
            .bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    let c1 = token(&[SCOPE_READ], Some("c-1"));
    let response = get(&mine["orderId"], c1.clone()).await;
    assert_eq!(response.status(), 200);
    let hidden = get(&theirs["orderId"], c1.clone()).await;
    assert_eq!(hidden.status(), 404);
    let missing = get(&Value::from(uuid_like()), c1).await;
    assert_eq!(missing.status(), 404);
    // The two 404s cannot be told apart except by the id they echo.
    let hidden: Value = hidden.json().await.unwrap();
    let missing: Value = missing.json().await.unwrap();
    assert_eq!(hidden["type"], missing["type"]);
    assert_eq!(hidden["title"], missing["title"]);
    assert_eq!(
        get(&theirs["orderId"], token(&[SCOPE_READ_ALL], None)).await.status(),
        200
    );
    assert_problem(
        get(&theirs["orderId"], token(&[SCOPE_READ], None)).await,
        403,
        Some("orders:read:all"),
    )
    .await;
    assert_problem(
        get(&theirs["orderId"], token(&[SCOPE_WRITE], Some("c-2"))).await,
        403,
        Some("orders:read"),
    )
    .await;
}

fn uuid_like() -> String {
    "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".to_owned()
}

test_each_transport!(a_customer_stream_sees_only_its_orders_through_replay_and_resume);
async fn a_customer_stream_sees_only_its_orders_through_replay_and_resume(transport: Transport) {
    let app = spawn_app_over(
        transport,
        &["--auth", "jwt", "--jwt-secret", SECRET, "--replay-window", "1h"],
    )
    .await;
    let writer = token(&[SCOPE_WRITE], None);
    let mut created = Vec::new();
    for n in 0..6 {
        created.push(create(&app, &writer, if n % 2 == 0 { "c-1" } else { "c-2" }, &format!("S-{n}")).await);
    }
    let mine: Vec<String> = created
        .iter()
        .filter(|c| c["customerId"] == "c-1")
        .map(|c| c["eventId"].as_str().unwrap().to_owned())
        .collect();
    let c1 = token(&[SCOPE_READ], Some("c-1"));
    // The replay window holds both customers' orders; c-1 gets only its own.
    let mut replay = stream_with(&app, "/api/order/stream", Some(&c1), None).await;
    let events = replay.collect_orders(mine.len(), Duration::from_secs(5)).await;
    assert_eq!(ids(&events), mine);
    // Resuming from c-2's first event id delivers nothing of c-2's.
    let theirs = created[1]["eventId"].as_str().unwrap();
    let mut resumed = stream_with(&app, "/api/order/stream", Some(&c1), Some(theirs)).await;
    let events = resumed.collect_orders(mine.len() - 1, Duration::from_secs(5)).await;
    assert_eq!(ids(&events), mine[1..]);
    // Live events too.
    create(&app, &writer, "c-2", "LIVE-2").await;
    let live_c1 = create(&app, &writer, "c-1", "LIVE-1").await;
    for stream in [&mut replay, &mut resumed] {
        let events = stream.collect_orders(1, Duration::from_secs(5)).await;
        assert_eq!(events[0].0, live_c1["eventId"].as_str().unwrap());
        assert_eq!(events[0].1, order_of(&live_c1));
    }
    replay.expect_no_event_until(deadline(1)).await;
    // Asking for another customer's stream is refused rather than silently narrowed.
    let response = app
        .stream_get("/api/order/stream?customerId=c-2")
        .bearer_auth(&c1)
        .send()
        .await
        .unwrap();
    assert_problem(response, 403, Some("insufficient_scope")).await;
    let response = app
        .stream_get("/api/order/stream")
        .bearer_auth(token(&[SCOPE_READ], None))
        .send()
        .await
        .unwrap();
    assert_problem(response, 403, Some("orders:read:all")).await;
}

test_each_transport!(streams_take_the_token_from_the_query_or_a_cookie_and_refuse_none);
async fn streams_take_the_token_from_the_query_or_a_cookie_and_refuse_none(transport: Transport) {
    let app = spawn_with_auth(transport, &[]).await;
    let response = app.stream_get("/api/order/stream").send().await.unwrap();
    assert_problem(response, 401, Some("realm=\"sse-orders\"")).await;
    let response = app
        .stream_get("/api/order/stream?access_token=not-a-token")
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, Some("invalid_token")).await;
    let c1 = token(&[SCOPE_READ], Some("c-1"));
    let via_query = app
        .stream_get(&format!("/api/order/stream?access_token={c1}"))
        .send()
        .await
        .unwrap();
    let via_cookie = app
        .stream_get("/api/order/stream")
        .header("cookie", format!("theme=dark; access_token={c1}"))
        .send()
        .await
        .unwrap();
    let mut clients: Vec<SseClient> = [via_query, via_cookie]
        .into_iter()
        .map(|response| transport.stream(response))
        .collect();
    let writer = token(&[SCOPE_WRITE], None);
    create(&app, &writer, "c-2", "X").await;
    let created = create(&app, &writer, "c-1", "Y").await;
    for client in &mut clients {
        let events = client.collect_orders(1, Duration::from_secs(5)).await;
        assert_eq!(events[0].1, order_of(&created));
    }
}

async fn expect_token_expired(client: &mut SseClient) {
    loop {
        let (_, event, data) = client
            .next_event(deadline(15))
            .await
            .expect("token-expired before the stream ends");
        if event == "token-expired" {
            let data: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(data["reason"], "token-expired");
            assert!(data["expiredAt"].as_str().unwrap().ends_with('Z'));
            break;
        }
        assert_eq!(event, "order-created");
    }
    assert!(
        client.next_event(deadline(5)).await.is_none(),
        "the stream ends after token-expired"
    );
    assert!(client.has_ended());
}

test_each_transport!(
    a_stream_ends_with_token_expired_when_its_token_runs_out,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn a_stream_ends_with_token_expired_when_its_token_runs_out(transport: Transport) {
    let app = spawn_with_auth(transport, &["--jwt-leeway", "0s"]).await;
    let short = token_for(&[SCOPE_READ], Some("c-1"), Duration::from_secs(3));
    let short_all = token_for(&[SCOPE_READ_ALL], None, Duration::from_secs(3));
    // A customer's and an unfiltered stream: over HTTP/1.1 both are parked in the fan-out.
    let mut streams = vec![
        stream_with(&app, "/api/order/stream", Some(&short), None).await,
        stream_with(&app, "/api/order/stream", Some(&short_all), None).await,
    ];
    let long = token(&[SCOPE_READ], Some("c-1"));
    let mut lasting = stream_with(&app, "/api/order/stream", Some(&long), None).await;
    if transport == Transport::Http1 {
        eventually(Duration::from_secs(5), "HTTP/1.1 streams park", || async {
            app.metric("sse_orders_fan_out_parked_connections").await >= 3.0
        })
        .await;
    }
    let created = create(&app, &token(&[SCOPE_WRITE], None), "c-1", "BEFORE").await;
    for stream in &mut streams {
        expect_token_expired(stream).await;
    }
    // Reconnecting with the expired token is a 401, which ends an EventSource for good.
    let response = app
        .stream_get("/api/order/stream")
        .bearer_auth(&short)
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, Some("expired")).await;
    // The stream with a valid token is untouched.
    let events = lasting.collect_orders(1, Duration::from_secs(5)).await;
    assert_eq!(events[0].1, order_of(&created));
    let after = create(&app, &token(&[SCOPE_WRITE], None), "c-1", "AFTER").await;
    let events = lasting.collect_orders(1, Duration::from_secs(5)).await;
    assert_eq!(events[0].1, order_of(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_streams_in_the_fan_out_get_exactly_their_events_in_order_even_when_slow() {
    let app = spawn_with_auth(Transport::Http1, &[]).await;
    const CUSTOMERS: usize = 4;
    let mut fast = Vec::new();
    let mut slow = Vec::new();
    for customer in 0..CUSTOMERS {
        let name = format!("customer-{customer}");
        let token = token(&[SCOPE_READ], Some(&name));
        for _ in 0..2 {
            fast.push((
                customer,
                stream_with(&app, "/api/order/stream", Some(&token), None).await,
            ));
        }
        // Also the `customerId` filter of an unrestricted reader.
        let all = crate::auth::token(&[SCOPE_READ_ALL], None);
        fast.push((
            customer,
            stream_with(&app, &format!("/api/order/stream?customerId={name}"), Some(&all), None).await,
        ));
        let target = format!("/api/order/stream?access_token={token}");
        slow.push((customer, open_raw_stream_at(app.addr, 4096, &target).await));
    }
    let unfiltered = stream_with(&app, "/api/order/stream", Some(&token(&[SCOPE_READ_ALL], None)), None).await;
    let total_streams = (fast.len() + slow.len() + 1) as f64;
    eventually(Duration::from_secs(10), "every stream parks in the fan-out", || async {
        app.metric("sse_orders_fan_out_parked_connections").await >= total_streams
    })
    .await;

    // About 5 MB per customer: far more than a slow socket holds, so the fan-out must hand
    // those streams back to their own tasks.
    const PER_CUSTOMER: usize = 600;
    let writer = token(&[SCOPE_WRITE], None);
    let handbacks_before = app.metric("sse_orders_fan_out_handbacks_total").await;
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); CUSTOMERS];
    let tasks: Vec<_> = (0..CUSTOMERS)
        .map(|customer| {
            let (client, url, writer) = (app.client.clone(), app.url("/api/order"), writer.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..PER_CUSTOMER {
                    let body = large_order_body(&format!("customer-{customer}"), &format!("SKU-{n}"), 100);
                    let response = client.post(&url).bearer_auth(&writer).json(&body).send().await.unwrap();
                    assert_eq!(response.status(), 201);
                    let created: Value = response.json().await.unwrap();
                    ids.push(created["eventId"].as_str().unwrap().to_owned());
                }
                (customer, ids)
            })
        })
        .collect();
    for task in tasks {
        let (customer, ids) = task.await.unwrap();
        expected[customer] = ids;
    }
    assert!(
        app.metric("sse_orders_fan_out_handbacks_total").await >= handbacks_before + CUSTOMERS as f64,
        "the slow customer streams were handed back"
    );
    let mut readers = Vec::new();
    for (customer, mut client) in fast {
        readers.push(tokio::spawn(async move {
            (
                customer,
                client.collect_orders(PER_CUSTOMER, Duration::from_secs(60)).await,
                client,
            )
        }));
    }
    for (customer, socket) in slow {
        readers.push(tokio::spawn(async move {
            let mut client = raw_sse_client(socket, 1500);
            (
                customer,
                client.collect_orders(PER_CUSTOMER, Duration::from_secs(60)).await,
                client,
            )
        }));
    }
    let mut everything: Vec<String> = expected.concat();
    everything.sort_by_key(|id| id.parse::<order_events::StreamPosition>().unwrap());
    let mut unfiltered = unfiltered;
    let all_events = unfiltered
        .collect_orders(everything.len(), Duration::from_secs(60))
        .await;
    assert_eq!(
        ids(&all_events),
        everything,
        "the unfiltered stream gets every event in order"
    );
    let mut open = vec![unfiltered];
    for reader in readers {
        let (customer, events, client) = reader.await.unwrap();
        for (_, order) in &events {
            assert_eq!(order["customerId"], format!("customer-{customer}"));
        }
        assert_eq!(
            ids(&events),
            expected[customer],
            "customer-{customer}: all its events once, in order"
        );
        open.push(client);
    }
    // Caught up, the streams are parked again (other tests in this process may park streams
    // too: the gauge is process-wide).
    eventually(Duration::from_secs(10), "caught-up streams park again", || async {
        app.metric("sse_orders_fan_out_parked_connections").await >= total_streams
    })
    .await;
    drop(open);
}

#[tokio::test]
async fn the_token_subcommand_mints_a_token_the_services_accept() {
    use clap::Parser;
    let config = sse_orders::Config::try_parse_from([
        "sse-orders",
        "token",
        "--secret",
        SECRET,
        "--customer",
        "c-5",
        "--scope",
        "orders:read,orders:write",
        "--ttl",
        "5m",
    ])
    .unwrap();
    let Some(sse_orders::Command::Token(args)) = config.command else {
        panic!("token subcommand");
    };
    let minted = args.mint().unwrap();
    let app = spawn_with_auth(Transport::Http1, &[]).await;
    assert_eq!(post_order(&app, Some(&minted), "c-5", "T").await.status(), 201);
    assert_eq!(post_order(&app, Some(&minted), "c-6", "T").await.status(), 403);
    let bad = sse_orders::Config::try_parse_from(["sse-orders", "token", "--secret", SECRET, "--scope", "admin"]);
    assert!(bad.unwrap_err().to_string().contains("orders:read:all"));
}
