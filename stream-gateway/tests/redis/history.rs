//! Lost history is announced: cursors from a history Redis no longer has get `reset`, never
//! silence, and a long-running gateway answers a cursor exactly as a fresh one does.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::helpers::{Gateway, OrderApi, RedisServer, Sentinel, SseClient, eventually, open_stream, wait_ready};

const HISTORY_RESETS: [&str; 2] = ["history-lost", "cursor-ahead-of-log"];

/// The next event must be a `reset` for one of `reasons`; returns its data.
async fn expect_reset(sse: &mut SseClient, reasons: &[&str], within: Duration) -> Value {
    let (id, event, data) = sse.next_event(Instant::now() + within).await.expect("a reset arrives");
    assert_eq!((id, event.as_str()), (None, "reset"), "data: {data}");
    let reset: Value = serde_json::from_str(&data).unwrap();
    assert!(
        reasons.contains(&reset["reason"].as_str().unwrap_or("")),
        "reset reason {reset}"
    );
    assert!(reset["epoch"].is_string(), "a reset names the epoch: {reset}");
    reset
}

/// Reads order events until `ids` arrived, in order, with nothing else in between.
async fn expect_ids(sse: &mut SseClient, ids: &[String]) {
    let events = sse.collect_raw(ids.len(), Duration::from_secs(30)).await;
    let got: Vec<&String> = events.iter().map(|(id, _)| id).collect();
    assert_eq!(got, ids.iter().collect::<Vec<_>>());
}

async fn a_restart_without_persistence_resets_every_client(mode: &str) {
    let mut redis = RedisServer::start();
    let api = OrderApi::spawn(&redis.url(), &[]).await;
    let gateway = Gateway::spawn(&redis.url(), &["--delivery", mode, "--poll-interval", "50ms"]);
    let client = reqwest::Client::new();
    wait_ready(&client, &gateway).await;
    let stream_url = gateway.url("/api/order/stream");

    let first = api.create_event(&client, "BEFORE-0").await;
    let mut live = open_stream(&client, &stream_url, Some(&first)).await;
    let mut before = Vec::new();
    for n in 1..4 {
        before.push(api.create_event(&client, &format!("BEFORE-{n}")).await);
    }
    expect_ids(&mut live, &before).await;

    redis.stop();
    redis.restart();
    let mut after = Vec::new();
    for n in 0..2 {
        after.push(api.create_event(&client, &format!("AFTER-{n}")).await);
    }
    assert!(
        after[0].parse::<order_events::StreamPosition>().unwrap()
            > before[2].parse::<order_events::StreamPosition>().unwrap(),
        "the new history's ids are later than the lost ones: only the check can tell"
    );

    // The connected client, a client resuming from a lost id, and one from beyond the end.
    let reset = expect_reset(&mut live, &HISTORY_RESETS, Duration::from_secs(30)).await;
    assert_eq!(reset["lastEventId"], before[2].as_str());
    expect_ids(&mut live, &after).await;
    for cursor in [before[1].as_str(), "99999999999999-0"] {
        let mut resumed = open_stream(&client, &stream_url, Some(cursor)).await;
        let reset = expect_reset(&mut resumed, &HISTORY_RESETS, Duration::from_secs(10)).await;
        assert_eq!(reset["lastEventId"], cursor);
        if cursor == before[1] {
            expect_ids(&mut resumed, &after).await;
        }
    }
    // A client of the new history is not reset.
    let mut current = open_stream(&client, &stream_url, Some(&after[0])).await;
    expect_ids(&mut current, &after[1..]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_mode_a_redis_restart_without_persistence_resets_live_and_resuming_clients() {
    a_restart_without_persistence_resets_every_client("hub").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_a_redis_restart_without_persistence_resets_live_and_resuming_clients() {
    a_restart_without_persistence_resets_every_client("poll").await;
}

/// Shuts a replica out of replication without telling anyone: the primary stops accepting the
/// replication user, so the replica keeps what it had and every later write misses it.
fn cut_replication(primary: &RedisServer) {
    assert_eq!(primary.cli(&["ACL", "SETUSER", "replication", "off"]), "OK");
    primary.cli(&["CLIENT", "KILL", "USER", "replication"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_to_a_replica_that_missed_writes_resets_every_affected_client() {
    assert!(
        Sentinel::available(),
        "redis-sentinel is not installed (scripts/test installs it)"
    );
    let mut primary = RedisServer::start();
    assert_eq!(
        primary.cli(&["ACL", "SETUSER", "replication", "on", ">replicate", "~*", "&*", "+@all"]),
        "OK"
    );
    let primary_port = primary.port().to_string();
    let replica = RedisServer::start_with_args(&[
        "--replicaof",
        "127.0.0.1",
        &primary_port,
        "--masteruser",
        "replication",
        "--masterauth",
        "replicate",
    ]);
    let sentinel = Sentinel::start_failing_over_after(primary.port(), Duration::from_millis(1000));
    let replica_port = replica.port().to_string();
    eventually(Duration::from_secs(30), "the sentinel knows the replica", || async {
        sentinel
            .cli(&["SENTINEL", "replicas", "mymaster"])
            .contains(&replica_port)
    })
    .await;

    let api = OrderApi::spawn(&sentinel.url(), &[]).await;
    let gateway = Gateway::spawn(&sentinel.url(), &[]);
    let client = reqwest::Client::new();
    wait_ready(&client, &gateway).await;
    let stream_url = gateway.url("/api/order/stream");

    let mut shared = Vec::new();
    for n in 0..3 {
        shared.push(api.create_event(&client, &format!("SHARED-{n}")).await);
    }
    eventually(Duration::from_secs(10), "the replica has the shared orders", || async {
        replica.cli(&["XLEN", "{orders}:events"]) == "3"
    })
    .await;
    let mut live = open_stream(&client, &stream_url, Some(&shared[0])).await;
    expect_ids(&mut live, &shared[1..]).await;

    cut_replication(&primary);
    let mut missed = Vec::new();
    for n in 0..2 {
        missed.push(api.create_event(&client, &format!("MISSED-{n}")).await);
    }
    expect_ids(&mut live, &missed).await;
    assert_eq!(
        replica.cli(&["XLEN", "{orders}:events"]),
        "3",
        "the replica missed the writes"
    );

    primary.stop();
    eventually(Duration::from_secs(40), "the sentinel promotes the replica", || async {
        sentinel.primary_port() == Some(replica.port())
    })
    .await;
    // The first write of the new primary may come before any reader noticed the failover, and its
    // id is later than every lost one.
    let new = api.create_event(&client, "NEW-0").await;
    assert!(new.parse::<order_events::StreamPosition>().unwrap() > missed[1].parse().unwrap());

    let reset = expect_reset(&mut live, &HISTORY_RESETS, Duration::from_secs(30)).await;
    assert_eq!(reset["lastEventId"], missed[1].as_str());
    assert_eq!(
        reset["resumeAfter"],
        shared[2].as_str(),
        "continues after what both histories share"
    );
    expect_ids(&mut live, std::slice::from_ref(&new)).await;

    // Resuming from a lost id, on this gateway and a fresh one, is reset the same way; resuming
    // from a shared id is not.
    let fresh = Gateway::spawn(&sentinel.url(), &[]);
    wait_ready(&client, &fresh).await;
    for url in [stream_url.clone(), fresh.url("/api/order/stream")] {
        let mut resumed = open_stream(&client, &url, Some(&missed[0])).await;
        let reset = expect_reset(&mut resumed, &HISTORY_RESETS, Duration::from_secs(10)).await;
        assert_eq!(reset["resumeAfter"], shared[2].as_str());
        expect_ids(&mut resumed, std::slice::from_ref(&new)).await;
        let mut unaffected = open_stream(&client, &url, Some(&shared[2])).await;
        expect_ids(&mut unaffected, std::slice::from_ref(&new)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_and_a_long_running_gateway_answer_every_cursor_alike() {
    let redis = RedisServer::start();
    let api = OrderApi::spawn(&redis.url(), &["--stream-maxlen", "20"]).await;
    // The long-running gateway's ring could hold everything ever written; Redis keeps about 20.
    let long_running = Gateway::spawn(&redis.url(), &["--ring-capacity", "1000"]);
    let client = reqwest::Client::new();
    wait_ready(&client, &long_running).await;
    let mut ids = Vec::new();
    for n in 0..60 {
        ids.push(api.create_event(&client, &format!("C{n}")).await);
    }
    // The long-running gateway has read every event into its ring.
    let mut follower = open_stream(&client, &long_running.url("/api/order/stream"), Some(&ids[0])).await;
    let _ = follower.next_event(Instant::now() + Duration::from_secs(10)).await;
    let fresh = Gateway::spawn(&redis.url(), &["--ring-capacity", "1000"]);
    wait_ready(&client, &fresh).await;

    for cursor in [ids[5].as_str(), ids[50].as_str(), "99999999999999-0", "0-0"] {
        let mut answers = Vec::new();
        for gateway in [&long_running, &fresh] {
            let mut sse = open_stream(&client, &gateway.url("/api/order/stream"), Some(cursor)).await;
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut frames = Vec::new();
            // Everything up to the newest event, or a reset that continues at the end.
            while let Some((id, event, data)) = sse.next_event(deadline).await {
                let done = id.as_deref() == ids.last().map(String::as_str)
                    || (event == "reset" && data.contains("cursor-ahead-of-log"));
                frames.push((id, event, data));
                if done {
                    break;
                }
            }
            answers.push(frames);
        }
        assert!(!answers[0].is_empty(), "cursor {cursor}: an answer");
        assert_eq!(answers[0], answers[1], "cursor {cursor}: both gateways answer alike");
        // Only the retained cursor continues without a reset: `0-0` and ids[5] are behind
        // retention, the last one is past the end.
        let reset = answers[0][0].1 == "reset";
        assert_eq!(reset, cursor != ids[50], "cursor {cursor}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_a_cursor_redis_refuses_ends_the_stream_instead_of_polling_forever() {
    let redis = RedisServer::start();
    let api = OrderApi::spawn(&redis.url(), &[]).await;
    let gateway = Gateway::spawn(&redis.url(), &["--delivery", "poll", "--poll-interval", "50ms"]);
    let client = reqwest::Client::new();
    wait_ready(&client, &gateway).await;
    let first = api.create_event(&client, "R0").await;
    let second = api.create_event(&client, "R1").await;
    let mut sse = open_stream(&client, &gateway.url("/api/order/stream"), Some(&first)).await;
    expect_ids(&mut sse, std::slice::from_ref(&second)).await;

    // Something else took the key: every read after any cursor is refused (WRONGTYPE).
    redis.cli(&["DEL", "{orders}:events"]);
    assert_eq!(redis.cli(&["SET", "{orders}:events", "not a stream"]), "OK");
    let deadline = Instant::now() + Duration::from_secs(20);
    while sse.next_until(deadline).await.is_some() {}
    assert!(
        sse.has_ended(),
        "the stream ends instead of polling a refused cursor forever"
    );
    assert!(
        gateway
            .metric(&client, "sse_orders_cursor_errors_total{action=\"close\"}")
            .await
            >= 1.0
    );
}
