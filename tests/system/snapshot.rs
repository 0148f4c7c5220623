//! `GET /api/orders`: a snapshot plus the stream after its position is exactly the history.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Transport, deadline, order_body, spawn_app, spawn_app_over};

test_each_transport!(
    snapshots_taken_while_orders_are_created_plus_the_stream_miss_and_double_nothing,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn snapshots_taken_while_orders_are_created_plus_the_stream_miss_and_double_nothing(transport: Transport) {
    let app = spawn_app_over(transport, &["--replay-window", "0s"]).await;
    let snapshots = {
        let client = app.client.clone();
        let url = app.url("/api/orders?limit=500");
        tokio::spawn(async move {
            let mut taken = Vec::new();
            for _ in 0..20 {
                let snapshot: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
                taken.push(snapshot);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            taken
        })
    };
    let created = app
        .create_orders_concurrently(4, 50, |w, n| order_body(&format!("c{w}"), &format!("S{w}-{n}")))
        .await;
    let taken = snapshots.await.unwrap();
    let all: HashSet<String> = created
        .iter()
        .map(|c| c["eventId"].as_str().unwrap().to_owned())
        .collect();
    let newest = created
        .iter()
        .map(|c| {
            c["eventId"]
                .as_str()
                .unwrap()
                .parse::<order_events::StreamPosition>()
                .unwrap()
        })
        .max()
        .unwrap();
    let mut distinct_positions = HashSet::new();
    for snapshot in taken {
        let position = snapshot["position"].as_str().unwrap().to_owned();
        distinct_positions.insert(position.clone());
        let mut seen: Vec<String> = snapshot["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["eventId"].as_str().unwrap().to_owned())
            .collect();
        let mut sse = app.open_stream(Some(&position), "").await;
        if position.parse::<order_events::StreamPosition>().unwrap() < newest {
            seen.extend(sse.order_ids_through(&newest.to_string(), deadline(20)).await);
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "nothing doubled after position {position}");
        let seen: HashSet<String> = seen.into_iter().collect();
        assert_eq!(seen, all, "nothing missing after position {position}");
    }
    assert!(
        distinct_positions.len() > 1,
        "snapshots were taken while orders were created"
    );
}

#[tokio::test]
async fn snapshots_page_newest_first_filter_by_customer_and_refuse_bad_parameters() {
    let app = spawn_app(&[]).await;
    let mut created = Vec::new();
    for n in 0..7 {
        created.push(
            app.create_order(&order_body(if n % 2 == 0 { "ada" } else { "bob" }, &format!("P{n}")))
                .await,
        );
    }
    let get = |query: &str| {
        let request = app.client.get(app.url(&format!("/api/orders{query}")));
        async move { request.send().await.unwrap() }
    };
    let page: Value = get("?limit=3").await.json().await.unwrap();
    let ids = |page: &Value| -> Vec<String> {
        page["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["eventId"].as_str().unwrap().to_owned())
            .collect()
    };
    let expected: Vec<String> = created
        .iter()
        .rev()
        .map(|c| c["eventId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids(&page), expected[..3]);
    assert_eq!(page["position"], expected[0].as_str());
    assert!(page["epoch"].is_string());
    assert_eq!(page["orders"][0], created[6], "each order as the POST returned it");
    let next = page["next"].as_str().unwrap();
    let older: Value = get(&format!("?limit=3&before={next}")).await.json().await.unwrap();
    assert_eq!(ids(&older), expected[3..6]);

    let ada: Value = get("?customerId=ada").await.json().await.unwrap();
    assert_eq!(ada["orders"].as_array().unwrap().len(), 4);
    assert!(
        ada["orders"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["customerId"] == "ada")
    );

    for bad in [
        "?limit=0",
        "?limit=501",
        "?limit=ten",
        "?before=yesterday",
        "?customerId=",
    ] {
        let response = get(bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{bad}");
    }
}
