//! `GET /api/orders` on Redis: a snapshot plus the stream after its position is exactly the
//! history, and pages go back newest first.

use std::collections::HashSet;
use std::time::Duration;

use order_events::StreamPosition;
use serde_json::Value;
use tokio::time::Instant;

use crate::helpers::{Gateway, OrderApi, RedisServer, open_stream, order_body, post_order, wait_ready};

fn ids(page: &Value) -> Vec<String> {
    page["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["eventId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_while_orders_are_created_plus_the_stream_miss_and_double_nothing() {
    let redis = RedisServer::start();
    let api = OrderApi::spawn(&redis.url(), &[]).await;
    let gateway = Gateway::spawn(&redis.url(), &[]);
    let client = reqwest::Client::new();
    wait_ready(&client, &gateway).await;

    let snapshots = {
        let client = client.clone();
        let url = api.url("/api/orders?limit=500");
        tokio::spawn(async move {
            let mut taken = Vec::new();
            for _ in 0..20 {
                let snapshot: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
                taken.push(snapshot);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            taken
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let client = client.clone();
            let url = api.url("/api/order");
            tokio::spawn(async move {
                let mut created = Vec::new();
                for n in 0..50 {
                    created.push(post_order(&client, &url, &order_body(&format!("c{w}"), &format!("S{w}-{n}"))).await);
                }
                created
            })
        })
        .collect();
    let mut created = Vec::new();
    for writer in writers {
        created.extend(writer.await.unwrap());
    }
    let taken = snapshots.await.unwrap();
    let all: HashSet<String> = created
        .iter()
        .map(|c| c["eventId"].as_str().unwrap().to_owned())
        .collect();
    let newest: StreamPosition = all.iter().map(|id| id.parse().unwrap()).max().unwrap();
    let mut positions = HashSet::new();
    for snapshot in taken {
        let position = snapshot["position"].as_str().unwrap().to_owned();
        positions.insert(position.clone());
        let mut seen = ids(&snapshot);
        if position.parse::<StreamPosition>().unwrap() < newest {
            let mut sse = open_stream(&client, &gateway.url("/api/order/stream"), Some(&position)).await;
            let until = Instant::now() + Duration::from_secs(20);
            seen.extend(sse.order_ids_through(&newest.to_string(), until).await);
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "nothing doubled after position {position}");
        assert_eq!(
            seen.into_iter().collect::<HashSet<_>>(),
            all,
            "nothing missing after {position}"
        );
    }
    assert!(positions.len() > 1, "snapshots were taken while orders were created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_pages_go_back_newest_first_per_customer() {
    let redis = RedisServer::start();
    let api = OrderApi::spawn(&redis.url(), &[]).await;
    let client = reqwest::Client::new();
    let mut created = Vec::new();
    for n in 0..9 {
        let customer = if n % 3 == 0 { "ada" } else { "bob" };
        created.push(post_order(&client, &api.url("/api/order"), &order_body(customer, &format!("P{n}"))).await);
    }
    let get = |query: String| {
        let request = client.get(api.url(&format!("/api/orders{query}")));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let newest_first: Vec<String> = created
        .iter()
        .rev()
        .map(|c| c["eventId"].as_str().unwrap().to_owned())
        .collect();
    let mut pages = Vec::new();
    let mut query = "?limit=4".to_owned();
    loop {
        let page = get(query.clone()).await;
        pages.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => query = format!("?limit=4&before={next}"),
            None => break,
        }
    }
    assert_eq!(pages, newest_first, "paging walks the whole history once, newest first");
    let ada = get("?customerId=ada&limit=2".into()).await;
    let ada_ids: Vec<String> = created
        .iter()
        .rev()
        .filter(|c| c["customerId"] == "ada")
        .map(|c| c["eventId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids(&ada), ada_ids[..2]);
    assert_eq!(
        ada["orders"][0],
        *created.iter().rev().find(|c| c["customerId"] == "ada").unwrap()
    );
    assert_eq!(ada["position"], newest_first[0].as_str());
}
