//! Cursors behind Redis retention are told so, then continue.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::helpers::{Gateway, OrderApi, RedisServer, open_stream, wait_ready};

async fn an_old_cursor_gets_reset_then_continues(mode: &str) {
    let redis = RedisServer::start();
    let api = OrderApi::spawn(&redis.url(), &["--stream-maxlen", "100"]).await;
    let gateway = Gateway::spawn(
        &redis.url(),
        &["--delivery", mode, "--ring-capacity", "20", "--catchup-page", "30"],
    );
    let client = reqwest::Client::new();
    wait_ready(&client, &gateway).await;
    let mut ids = Vec::new();
    for n in 0..300 {
        ids.push(api.create_event(&client, &format!("T{n}")).await);
    }
    let retained: usize = redis.cli(&["XLEN", "{orders}:events"]).parse().unwrap();
    assert!(
        (100..=102).contains(&retained),
        "retention keeps about 100 entries, kept {retained}"
    );
    let oldest = &ids[ids.len() - retained];

    let mut stale = open_stream(&client, &gateway.url("/api/order/stream"), Some(&ids[0])).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (id, event, data) = stale.next_event(deadline).await.expect("reset");
    assert_eq!((id, event.as_str()), (None, "reset"));
    let reset: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(reset["oldestId"], oldest.as_str());
    let rest = stale.collect_raw(retained, Duration::from_secs(20)).await;
    let rest: Vec<&String> = rest.iter().map(|(id, _)| id).collect();
    assert_eq!(
        rest,
        ids[ids.len() - retained..].iter().collect::<Vec<_>>(),
        "continues from the oldest, gap-free"
    );

    // A cursor inside the retained range is not reset.
    let inside = &ids[ids.len() - 50];
    let mut fresh = open_stream(&client, &gateway.url("/api/order/stream"), Some(inside)).await;
    let events = fresh.collect_raw(49, Duration::from_secs(20)).await;
    assert_eq!(&events[0].0, &ids[ids.len() - 49]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_mode_old_cursor_after_trimming_gets_reset_then_continues() {
    an_old_cursor_gets_reset_then_continues("hub").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_old_cursor_after_trimming_gets_reset_then_continues() {
    an_old_cursor_gets_reset_then_continues("poll").await;
}
