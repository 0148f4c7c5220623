//! Exact delivery across gateways, in both delivery modes.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Gateway, OrderApi, RedisServer, open_stream, order_body, order_of, post_order, wait_ready};

async fn three_gateways_deliver_every_order_once_in_stream_order(mode: &str) {
    let redis = RedisServer::start();
    let api = OrderApi::spawn(&redis.url(), &[]).await;
    let extra = [
        "--delivery",
        mode,
        "--replay-window",
        "0s",
        "--poll-interval",
        "50ms",
        "--poll-count",
        "500",
    ];
    let gateways: Vec<Gateway> = (0..3).map(|_| Gateway::spawn(&redis.url(), &extra)).collect();
    let client = reqwest::Client::new();
    for gateway in &gateways {
        wait_ready(&client, gateway).await;
    }
    let mut clients = Vec::new();
    for n in 0..300 {
        clients.push(open_stream(&client, &gateways[n % 3].url("/api/order/stream"), None).await);
    }

    let writers: Vec<_> = (0..4)
        .map(|task| {
            let client = client.clone();
            let url = api.url("/api/order");
            tokio::spawn(async move {
                let mut created = Vec::new();
                for n in 0..500 {
                    // A POST may get 503 on a loaded machine (Redis slower than its timeout):
                    // the writer retries with the same key, and delivery must still be exact.
                    let body = order_body(&format!("c{task}"), &format!("S{task}-{n}"));
                    created.push(post_order(&client, &url, &body).await);
                }
                created
            })
        })
        .collect();
    let mut created = Vec::new();
    for writer in writers {
        created.extend(writer.await.unwrap());
    }
    let mut expected_ids: Vec<order_events::StreamPosition> = created
        .iter()
        .map(|c| c["eventId"].as_str().unwrap().parse().unwrap())
        .collect();
    expected_ids.sort();
    let expected_ids: Vec<String> = expected_ids.iter().map(ToString::to_string).collect();
    let by_id: HashMap<&str, &Value> = created.iter().map(|c| (c["eventId"].as_str().unwrap(), c)).collect();

    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut sse| tokio::spawn(async move { sse.collect_raw(2000, Duration::from_secs(120)).await }))
        .collect();
    let mut reference: Option<Vec<(String, String)>> = None;
    for reader in readers {
        let events = reader.await.unwrap();
        let ids: Vec<&String> = events.iter().map(|(id, _)| id).collect();
        assert_eq!(
            ids,
            expected_ids.iter().collect::<Vec<_>>(),
            "every event once, in stream order"
        );
        match &reference {
            None => {
                for (id, data) in &events {
                    let data: Value = serde_json::from_str(data).unwrap();
                    assert_eq!(
                        data,
                        order_of(by_id[id.as_str()]),
                        "event {id} carries what the POST returned"
                    );
                }
                reference = Some(events);
            }
            Some(reference) => assert!(&events == reference, "every client got the same bytes"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_mode_three_gateways_300_clients_2000_orders_exactly_once() {
    three_gateways_deliver_every_order_once_in_stream_order("hub").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_three_gateways_300_clients_2000_orders_exactly_once() {
    three_gateways_deliver_every_order_once_in_stream_order("poll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_with_one_idempotency_key_create_one_order_and_one_event() {
    let redis = RedisServer::start();
    let api = OrderApi::spawn(&redis.url(), &[]).await;
    let client = reqwest::Client::new();
    let posts: Vec<_> = (0..20)
        .map(|_| {
            let request = client
                .post(api.url("/api/order"))
                .header("idempotency-key", "same-key")
                .json(&order_body("c", "IDEM"));
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                (response.status().as_u16(), response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut order_ids = std::collections::HashSet::new();
    for post in posts {
        let (status, body) = post.await.unwrap();
        statuses.push(status);
        order_ids.insert(body["orderId"].as_str().unwrap().to_owned());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 19, "{statuses:?}");
    assert_eq!(order_ids.len(), 1);
    assert_eq!(redis.cli(&["XLEN", "{orders}:events"]), "1");
    let conflict = client
        .post(api.url("/api/order"))
        .header("idempotency-key", "same-key")
        .json(&order_body("c", "DIFFERENT"))
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), 422);
    assert_eq!(redis.cli(&["XLEN", "{orders}:events"]), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_written_through_redis_read_back_from_any_instance() {
    let redis = RedisServer::start();
    let first = OrderApi::spawn(&redis.url(), &[]).await;
    let second = OrderApi::spawn(&redis.url(), &[]).await;
    let client = reqwest::Client::new();
    let created = first.create(&client, "RB").await;
    let path = format!("/api/order/{}", created["orderId"].as_str().unwrap());
    let fetched: Value = client
        .get(second.url(&path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_path_works_through_a_sentinel_url() {
    assert!(
        crate::helpers::Sentinel::available(),
        "redis-sentinel is not installed (scripts/test installs it)"
    );
    let primary = RedisServer::start();
    let sentinel = crate::helpers::Sentinel::start(primary.port());
    let api = OrderApi::spawn(&sentinel.url(), &[]).await;
    let gateway = Gateway::spawn(&sentinel.url(), &["--replay-window", "0s"]);
    let client = reqwest::Client::new();
    wait_ready(&client, &gateway).await;
    let mut stream = open_stream(&client, &gateway.url("/api/order/stream"), None).await;
    let mut created = Vec::new();
    for n in 0..50 {
        created.push(api.create(&client, &format!("S{n}")).await);
    }
    let events = stream.collect_orders(50, Duration::from_secs(20)).await;
    for ((id, data), created) in events.iter().zip(&created) {
        assert_eq!(id, created["eventId"].as_str().unwrap());
        assert_eq!(data, &order_of(created));
    }
    assert_eq!(
        primary.cli(&["XLEN", "{orders}:events"]),
        "50",
        "written to the primary the sentinel names"
    );
}

#[tokio::test]
async fn the_stream_entry_carries_the_requests_traceparent() {
    let redis = RedisServer::start();
    let api = OrderApi::spawn(&redis.url(), &[]).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = reqwest::Client::new()
        .post(api.url("/api/order"))
        .header("traceparent", traceparent)
        .json(&order_body("t", "TRACE"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let entry = redis.cli(&["XRANGE", "{orders}:events", "-", "+"]);
    assert!(entry.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "entry: {entry}");
}
