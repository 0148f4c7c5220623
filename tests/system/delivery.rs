//! Every client gets every event exactly once, in order, from wherever it starts.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{
    Sse, Transport, deadline, large_order_body, open_raw_stream, order_body, order_of, post_order, raw_sse_client,
    spawn_app, spawn_app_over,
};

test_each_transport!(
    fifty_clients_each_receive_all_500_concurrent_orders_once_in_id_order,
    flavor = "multi_thread",
    worker_threads = 2
);
async fn fifty_clients_each_receive_all_500_concurrent_orders_once_in_id_order(transport: Transport) {
    let app = spawn_app_over(transport, &["--replay-window", "0s"]).await;
    let clients = app.open_streams(50).await;
    let created = app
        .create_orders_concurrently(5, 100, |writer, n| {
            order_body(&format!("customer-{writer}"), &format!("SKU-{writer}-{n}"))
        })
        .await;
    let expected: std::collections::HashMap<String, Value> = created
        .iter()
        .map(|c| (c["eventId"].as_str().expect("eventId").to_owned(), order_of(c)))
        .collect();
    assert_eq!(expected.len(), 500, "event ids are unique");

    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| tokio::spawn(async move { client.collect_orders(500, Duration::from_secs(60)).await }))
        .collect();
    for reader in readers {
        let events = reader.await.expect("reader");
        let ids: Vec<order_events::StreamPosition> = events.iter().map(|(id, _)| id.parse().expect("id")).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids strictly increase");
        for (id, data) in &events {
            assert_eq!(
                Some(data),
                expected.get(id),
                "event {id} carries what the POST returned"
            );
        }
    }
}

test_each_transport!(reconnecting_with_last_event_id_header_or_query_gets_exactly_the_missed_events);
async fn reconnecting_with_last_event_id_header_or_query_gets_exactly_the_missed_events(transport: Transport) {
    let app = spawn_app_over(transport, &["--replay-window", "0s"]).await;
    let mut first = app.open_stream(None, "").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            app.create_order(&order_body("c", &format!("A{n}"))).await["eventId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let seen = first.collect_orders(3, Duration::from_secs(10)).await;
    drop(first);
    let resume_from = seen[2].0.clone();
    for n in 5..8 {
        ids.push(
            app.create_order(&order_body("c", &format!("A{n}"))).await["eventId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for (header, query) in [
        (Some(resume_from.as_str()), String::new()),
        (None, format!("?lastEventId={resume_from}")),
    ] {
        let mut resumed = app.open_stream(header, &query).await;
        let events = resumed.collect_orders(5, Duration::from_secs(10)).await;
        let got: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(got, ids[3..].iter().map(String::as_str).collect::<Vec<_>>());
        resumed
            .expect_no_event_until(tokio::time::Instant::now() + Duration::from_millis(300))
            .await;
    }
}

test_each_transport!(replay_window_decides_whether_a_recent_order_is_replayed);
async fn replay_window_decides_whether_a_recent_order_is_replayed(transport: Transport) {
    let app = spawn_app_over(transport, &["--replay-window", "10s"]).await;
    let created = app.create_order(&order_body("c", "EARLY")).await;
    // The scenario needs the order to be two seconds old when the clients connect.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut windowed = app.open_stream(None, "").await;
    let events = windowed.collect_orders(1, Duration::from_secs(5)).await;
    assert_eq!(events[0].0, created["eventId"].as_str().unwrap());

    let app_zero = spawn_app_over(transport, &["--replay-window", "0"]).await;
    app_zero.create_order(&order_body("c", "EARLY")).await;
    let mut from_end = app_zero.open_stream(None, "").await;
    let after = app_zero.create_order(&order_body("c", "LATE")).await;
    let events = from_end.collect_orders(1, Duration::from_secs(5)).await;
    assert_eq!(
        events[0].0,
        after["eventId"].as_str().unwrap(),
        "window 0 starts at the end, resolved at connect"
    );
    from_end
        .expect_no_event_until(tokio::time::Instant::now() + Duration::from_millis(300))
        .await;
}

test_each_transport!(a_cursor_older_than_retention_gets_reset_first_then_continues);
async fn a_cursor_older_than_retention_gets_reset_first_then_continues(transport: Transport) {
    let app = spawn_app_over(transport, &["--log-capacity", "5"]).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(
            app.create_order(&order_body("c", &format!("R{n}"))).await["eventId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut client = app.open_stream(Some(&ids[0]), "").await;
    let (id, event, data) = client.next_event(deadline(5)).await.expect("reset");
    assert_eq!((id, event.as_str()), (None, "reset"));
    let reset: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(reset["oldestId"], ids[5]);
    assert_eq!(reset["lastEventId"], ids[0]);
    let rest = client.collect_orders(5, Duration::from_secs(5)).await;
    assert_eq!(rest.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), ids[5..]);
    // A cursor at the newest evicted event lost nothing after it: no reset.
    let mut exact = app.open_stream(Some(&ids[4]), "").await;
    let (_, event, _) = exact.next_event(deadline(5)).await.expect("event");
    assert_eq!(event, "order-created");
    assert_eq!(
        app.metric("sse_orders_resets_total{reason=\"cursor-behind-retention\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_neither_blocks_others_nor_grows_memory_past_the_log_bound() {
    let app = spawn_app(&["--replay-window", "0s", "--log-capacity", "1000"]).await;
    // A client that sends its request and then never reads, with a tiny receive window.
    let stalled = open_raw_stream(app.addr, 4096).await;
    let mut reader = app.open_stream(None, "").await;

    let publisher = {
        let client = app.client.clone();
        let url = app.url("/api/order");
        tokio::spawn(async move {
            let mut last = String::new();
            for n in 0..10_000 {
                // 20 lines make events of about 2 KB: 20 MB in all, far more than socket buffers hold.
                let body = large_order_body("stalled-test", &format!("S{n}"), 20);
                last = post_order(&client, &url, &body).await["eventId"]
                    .as_str()
                    .unwrap()
                    .to_owned();
            }
            last
        })
    };
    let events = reader.collect_orders(10_000, Duration::from_secs(300)).await;
    let last = publisher.await.unwrap();
    assert_eq!(events.last().unwrap().0, last);
    let unique: HashSet<&String> = events.iter().map(|(id, _)| id).collect();
    assert_eq!(unique.len(), 10_000);
    assert_eq!(app.metric("sse_orders_event_log_retained_events").await, 1000.0);
    assert_eq!(app.metric("sse_orders_sse_connections").await, 2.0);

    // The stalled client now reads: it was never buffered more than the log holds, so it sees
    // a prefix, then a reset naming the oldest retained event, then the rest without a gap.
    let mut late = raw_sse_client(stalled, 16 * 1024);
    let all: Vec<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
    let (mut before, mut after, mut oldest) = (Vec::new(), Vec::new(), None);
    let until = deadline(60);
    loop {
        match late
            .next_until(until)
            .await
            .expect("the stalled client reaches the end")
        {
            Sse::Event { event, data, .. } if event == "reset" => {
                assert!(oldest.is_none(), "one reset");
                let reset: Value = serde_json::from_str(&data).unwrap();
                oldest = Some(reset["oldestId"].as_str().unwrap().to_owned());
            }
            Sse::Event { id: Some(id), .. } => {
                let done = id == last;
                if oldest.is_some() {
                    after.push(id)
                } else {
                    before.push(id)
                }
                if done {
                    break;
                }
            }
            _ => {}
        }
    }
    let oldest = oldest.expect("10,000 events cannot all be held for a reader when the log keeps 1,000");
    // What was sent before the reset is a gap-free prefix; after it, delivery restarts at the
    // oldest retained event and is gap-free to the end.
    assert_eq!(before, all[..before.len()]);
    let resume = all
        .iter()
        .position(|id| *id == oldest)
        .expect("oldest id is a real event");
    assert!(resume > before.len(), "the reset was needed");
    assert_eq!(after, all[resume..]);
    assert!(after.len() <= 1000, "only retained events follow the reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_fall_out_of_the_fan_out_and_catch_up_without_gaps() {
    let app = spawn_app(&["--replay-window", "0s"]).await;
    let fast = app.open_streams(5).await;
    let mut slow = Vec::new();
    for _ in 0..5 {
        slow.push(open_raw_stream(app.addr, 4096).await);
    }
    order_events::testing::eventually(Duration::from_secs(10), "every caught-up stream parks", || async {
        app.metric("sse_orders_fan_out_parked_connections").await == 10.0
    })
    .await;

    // About 5 MB of events while the slow clients read nothing: far more than their sockets
    // hold, so the fan-out must hand them back to their own tasks.
    const ORDERS: usize = 3000;
    let fast_readers: Vec<_> = fast
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let events = client.collect_orders(ORDERS, Duration::from_secs(120)).await;
                (events, client)
            })
        })
        .collect();
    let created = app
        .create_orders_concurrently(3, ORDERS / 3, |writer, n| {
            large_order_body(&format!("customer-{writer}"), &format!("SKU-{writer}-{n}"), 20)
        })
        .await;
    let mut expected: Vec<order_events::StreamPosition> = created
        .iter()
        .map(|c| c["eventId"].as_str().expect("eventId").parse().expect("id"))
        .collect();
    expected.sort();
    assert!(app.metric("sse_orders_fan_out_handbacks_total").await >= 5.0);

    let slow_readers: Vec<_> = slow
        .into_iter()
        .map(|socket| {
            tokio::spawn(async move {
                let mut client = raw_sse_client(socket, 1500);
                let events = client.collect_orders(ORDERS, Duration::from_secs(120)).await;
                (events, client)
            })
        })
        .collect();
    let mut open = Vec::new();
    for reader in fast_readers.into_iter().chain(slow_readers) {
        let (events, client) = reader.await.expect("reader");
        let ids: Vec<order_events::StreamPosition> = events.iter().map(|(id, _)| id.parse().expect("id")).collect();
        assert_eq!(ids, expected, "every event once, in id order");
        open.push(client);
    }
    // Caught up again, every stream is back in the fan-out.
    order_events::testing::eventually(Duration::from_secs(10), "caught-up streams park again", || async {
        app.metric("sse_orders_fan_out_parked_connections").await == 10.0
    })
    .await;
    // Clients that leave while parked are let go at once.
    drop(open);
    order_events::testing::eventually(
        Duration::from_secs(10),
        "departed streams leave the fan-out",
        || async {
            app.metric("sse_orders_fan_out_parked_connections").await == 0.0
                && app.metric("sse_orders_sse_connections").await == 0.0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_clients_leaving_a_large_fan_out_are_let_go_promptly() {
    let app = spawn_app(&["--replay-window", "0s"]).await;
    let mut clients = app.open_streams(64).await;
    order_events::testing::eventually(Duration::from_secs(10), "every stream parks", || async {
        app.metric("sse_orders_fan_out_parked_connections").await == 64.0
    })
    .await;
    // Fewer departures than a batch: the writer lets go of them on its purge timer.
    clients.truncate(62);
    order_events::testing::eventually(Duration::from_secs(5), "the two that left are dropped", || async {
        app.metric("sse_orders_fan_out_parked_connections").await == 62.0
            && app.metric("sse_orders_sse_connections").await == 62.0
    })
    .await;
    let created = app.create_order(&order_body("still-here", "SKU-1")).await;
    for client in &mut clients {
        let (id, _, _) = client.next_event(deadline(10)).await.expect("event");
        assert_eq!(id.as_deref(), created["eventId"].as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fan_out_accounts_for_its_deliveries_and_its_own_cpu() {
    let app = spawn_app(&["--replay-window", "0s"]).await;
    let mut clients = app.open_streams(4).await;
    order_events::testing::eventually(Duration::from_secs(10), "every stream parks", || async {
        app.metric("sse_orders_fan_out_parked_connections").await == 4.0
    })
    .await;
    let cpu = "sse_orders_fan_out_cpu_seconds_total{work=\"events\"}";
    let (deliveries_before, cpu_before) = (
        app.metric("sse_orders_fan_out_deliveries_total").await,
        app.metric(cpu).await,
    );
    for n in 0..5 {
        app.create_order(&order_body("accounted", &format!("SKU-{n}"))).await;
    }
    for client in &mut clients {
        assert_eq!(client.collect_orders(5, Duration::from_secs(10)).await.len(), 5);
    }
    // Every event reached every parked stream through the writer, which measured its work.
    assert_eq!(
        app.metric("sse_orders_fan_out_deliveries_total").await - deliveries_before,
        20.0
    );
    assert!(app.metric(cpu).await > cpu_before, "the writer's CPU time grew");
}
