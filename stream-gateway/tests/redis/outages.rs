//! Killed gateways and a stopped Redis lose nothing and duplicate nothing.

use std::time::Duration;

use tokio::time::Instant;

use crate::helpers::{Gateway, OrderApi, RedisServer, Sse, eventually, open_stream, order_body, wait_ready};

/// A client that follows the stream and, when its gateway dies, reconnects to `fallback` with
/// the last id it saw, as EventSource does.
async fn follow_with_failover(
    client: reqwest::Client,
    primary: String,
    fallback: String,
    until_id: tokio::sync::watch::Receiver<Option<String>>,
) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut reconnects = 0;
    let mut url = primary;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut sse = open_stream(&client, &url, ids.last().map(String::as_str)).await;
        loop {
            if let Some(last) = until_id.borrow().clone() {
                if ids.last() == Some(&last) {
                    return (ids, reconnects);
                }
            }
            match sse.next_until(Instant::now() + Duration::from_millis(200)).await {
                Some(Sse::Event {
                    id: Some(id), event, ..
                }) if event == "order-created" => ids.push(id),
                Some(Sse::Event { event, .. }) => panic!("unexpected {event}"),
                Some(_) => {}
                None if sse.has_ended() => break,
                None => assert!(Instant::now() < deadline, "stream stalled after {} events", ids.len()),
            }
        }
        reconnects += 1;
        url = fallback.clone();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_gateway_resume_on_another_without_loss_or_duplicates() {
    let redis = RedisServer::start();
    let api = OrderApi::spawn(&redis.url(), &[]).await;
    let mut doomed = Gateway::spawn(&redis.url(), &["--replay-window", "0s"]);
    let survivor = Gateway::spawn(&redis.url(), &["--replay-window", "0s"]);
    let client = reqwest::Client::new();
    wait_ready(&client, &doomed).await;
    wait_ready(&client, &survivor).await;
    // Every client starts after the first order, so the expected list is known exactly.
    let first_id = api.create_event(&client, "F0").await;

    let (last_tx, last_rx) = tokio::sync::watch::channel(None);
    let followers: Vec<_> = (0..40)
        .map(|n| {
            let (primary, fallback) = if n % 2 == 0 {
                (doomed.url("/api/order/stream"), survivor.url("/api/order/stream"))
            } else {
                (survivor.url("/api/order/stream"), doomed.url("/api/order/stream"))
            };
            let primary = format!("{primary}?lastEventId={first_id}");
            tokio::spawn(follow_with_failover(client.clone(), primary, fallback, last_rx.clone()))
        })
        .collect();

    let mut expected = Vec::new();
    for n in 0..600 {
        if n == 300 {
            doomed.kill();
        }
        expected.push(api.create_event(&client, &format!("F{n}")).await);
    }
    last_tx.send(expected.last().cloned()).unwrap();
    let mut moved = 0;
    for follower in followers {
        let (ids, reconnects) = follower.await.unwrap();
        assert_eq!(ids, expected, "no loss, no duplicates, in order");
        moved += usize::from(reconnects > 0);
    }
    assert_eq!(moved, 20, "the killed gateway's clients moved to the survivor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_streams_open_refuses_posts_and_loses_nothing() {
    let mut redis = RedisServer::start_persistent();
    let api = OrderApi::spawn(&redis.url(), &[]).await;
    let gateway = Gateway::spawn(
        &redis.url(),
        &["--replay-window", "0s", "--heartbeat-interval", "200ms"],
    );
    let client = reqwest::Client::new();
    wait_ready(&client, &gateway).await;
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(open_stream(&client, &gateway.url("/api/order/stream"), None).await);
    }
    let post = |sku: String| client.post(api.url("/api/order")).json(&order_body("c", &sku)).send();

    let mut created = Vec::new();
    for n in 0..50 {
        created.push(api.create_event(&client, &format!("B{n}")).await);
    }

    redis.stop();
    eventually(
        Duration::from_secs(10),
        "gateway not ready while Redis is down",
        || async {
            client
                .get(gateway.url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 503)
        },
    )
    .await;
    let mut refused_skus = Vec::new();
    for n in 0..5 {
        let started = Instant::now();
        let response = post(format!("DURING{n}")).await.unwrap();
        assert_eq!(response.status(), 503, "POST while Redis is down");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "503 within about 2 s, took {:?}",
            started.elapsed()
        );
        refused_skus.push(format!("DURING{n}"));
    }
    // Heartbeats keep every stream open through the outage; events read meanwhile count.
    let mut received: Vec<Vec<String>> = vec![Vec::new(); streams.len()];
    for (stream, ids) in streams.iter_mut().zip(&mut received) {
        let mut heartbeat = false;
        while let Some(item) = stream.next_until(Instant::now() + Duration::from_secs(2)).await {
            match item {
                Sse::Comment(_) => {
                    heartbeat = true;
                    break;
                }
                Sse::Event {
                    id: Some(id), event, ..
                } if event == "order-created" => ids.push(id),
                Sse::Event { event, .. } => panic!("unexpected {event}"),
                Sse::Retry(_) => {}
            }
        }
        assert!(heartbeat && !stream.has_ended(), "stream stays open with heartbeats");
    }

    redis.restart();
    eventually(Duration::from_secs(20), "gateway ready again", || async {
        client
            .get(gateway.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    for n in 50..100 {
        created.push(api.create_event(&client, &format!("A{n}")).await);
    }

    for (mut stream, mut ids) in streams.into_iter().zip(received) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while ids.len() < created.len() {
            match stream.next_event(deadline).await {
                Some((Some(id), event, data)) if event == "order-created" => {
                    assert!(
                        !refused_skus.iter().any(|sku| data.contains(sku.as_str())),
                        "a refused POST was delivered"
                    );
                    ids.push(id);
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => panic!("only {} of {} events after the outage", ids.len(), created.len()),
            }
        }
        assert_eq!(ids, created, "every 201 order, once, in order");
    }
    let all = redis.cli(&["XRANGE", "{orders}:events", "-", "+"]);
    assert!(!all.contains("DURING"), "nothing refused was written later");
}
