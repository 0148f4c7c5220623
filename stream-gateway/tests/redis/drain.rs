//! A draining gateway keeps delivering to each of its streams until that stream is closed.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::helpers::{Gateway, OrderApi, RedisServer, Sse, SseClient, open_stream, wait_ready};

const CLIENTS: usize = 1000;

/// What one client saw: when each order reached it, and the `retry:` hint of the stream that
/// was closed on it (the longest, if several were).
struct Seen {
    ids: Vec<String>,
    arrived: Vec<Instant>,
    /// Which stream (0: the first, on the draining gateway) delivered each order.
    stream: Vec<usize>,
    retry: Duration,
    /// The longest a reconnection took from its request to its first bytes: the new gateway's
    /// and this machine's share of a gap, not the draining gateway's.
    reopening: Duration,
    ended: Option<Instant>,
}

/// Follows the stream as an EventSource does: on the end of a stream it waits for the last
/// `retry:` hint, then reconnects with `Last-Event-ID`, to `urls` in turn.
async fn follow(client: reqwest::Client, urls: [String; 2], start: String, want: Arc<Mutex<Option<usize>>>) -> Seen {
    let mut seen = Seen {
        ids: Vec::new(),
        arrived: Vec::new(),
        stream: Vec::new(),
        retry: Duration::ZERO,
        reopening: Duration::ZERO,
        ended: None,
    };
    let mut last = start;
    let mut hint = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(120);
    for (stream, url) in urls.iter().cycle().enumerate() {
        let opening = Instant::now();
        let mut sse: SseClient = open_stream(&client, url, Some(&last)).await;
        let mut opened = false;
        loop {
            if want.lock().is_some_and(|want| seen.ids.len() >= want) {
                return seen;
            }
            let slice = (Instant::now() + Duration::from_millis(250)).min(deadline);
            let item = sse.next_until(slice).await;
            if !opened && stream > 0 && matches!(&item, Some(Sse::Event { .. })) {
                opened = true;
                seen.reopening = seen.reopening.max(opening.elapsed());
            }
            match item {
                Some(Sse::Retry(ms)) => hint = Duration::from_millis(ms),
                Some(Sse::Event {
                    id: Some(id), event, ..
                }) if event == "order-created" => {
                    seen.arrived.push(Instant::now());
                    seen.stream.push(stream);
                    last = id.clone();
                    seen.ids.push(id);
                }
                Some(Sse::Event { event, data, .. }) => panic!("unexpected {event}: {data}"),
                Some(Sse::Comment(_)) => {}
                None if sse.has_ended() => break,
                None => assert!(Instant::now() < deadline, "the client did not get every order"),
            }
        }
        assert!(Instant::now() < deadline, "the client did not get every order");
        seen.ended = Some(Instant::now());
        seen.retry = seen.retry.max(hint);
        tokio::time::sleep(hint).await;
    }
    unreachable!("the urls cycle forever")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_keeps_every_stream_fed_until_it_closes_it() {
    let _alone = crate::helpers::heavy_test().await;
    let redis = RedisServer::start();
    let api = OrderApi::spawn(&redis.url(), &[]).await;
    // Streams close spread over 4 s (half the grace); each client then waits its retry hint
    // (500 ms plus up to 500 ms of jitter) and resumes on the other gateway.
    let drain_args = [
        "--drain-delay",
        "500ms",
        "--shutdown-grace",
        "8s",
        "--reconnect-delay",
        "500ms",
    ];
    let mut draining = Gateway::spawn(&redis.url(), &drain_args);
    let other = Gateway::spawn(&redis.url(), &["--reconnect-delay", "500ms"]);
    let client = reqwest::Client::new();
    wait_ready(&client, &draining).await;
    wait_ready(&client, &other).await;

    let start = api.create_event(&client, "SEED").await;
    let want = Arc::new(Mutex::new(None));
    let urls = [draining.url("/api/order/stream"), other.url("/api/order/stream")];
    let followers: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(follow(client.clone(), urls.clone(), start.clone(), want.clone())))
        .collect();
    crate::helpers::eventually(Duration::from_secs(60), "every client connected", || async {
        draining.metric(&client, "sse_orders_sse_connections").await == CLIENTS as f64
    })
    .await;

    // This machine's own stalls (it is shared; a stalled test process reads late): a task that
    // wants to wake every 10 ms records how late it woke at worst while orders are published.
    let stall = Arc::new(Mutex::new(Duration::ZERO));
    let probe = tokio::spawn({
        let stall = stall.clone();
        async move {
            loop {
                let due = Instant::now() + Duration::from_millis(10);
                tokio::time::sleep_until(due).await;
                let late = Instant::now().saturating_duration_since(due);
                let mut worst = stall.lock();
                *worst = (*worst).max(late);
            }
        }
    });

    // Orders keep coming before, during and after the drain; each one's acknowledgement time
    // is when it could first have reached a client.
    let mut created = Vec::new();
    let publish_until = Instant::now() + Duration::from_secs(9);
    let mut terminated = false;
    let started = Instant::now();
    while Instant::now() < publish_until {
        let id = api.create_event(&client, &format!("D{}", created.len())).await;
        created.push((id, Instant::now()));
        if !terminated && started.elapsed() > Duration::from_secs(1) {
            draining.terminate();
            terminated = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    *want.lock() = Some(created.len());
    probe.abort();
    let stall = *stall.lock();
    assert!(
        draining.wait_for_exit(Duration::from_secs(20)).await,
        "the drained gateway exits"
    );

    let expected: Vec<&String> = created.iter().map(|(id, _)| id).collect();
    // How long each order waited to reach a client after it was acknowledged. On the draining
    // gateway that is the stall a stream left unfed until its close would show; across the
    // close it is at most the retry hint plus the time the new connection took to open.
    let wait_of = |seen: &Seen, on_stream: fn(usize) -> bool| {
        created
            .iter()
            .zip(&seen.arrived)
            .zip(&seen.stream)
            .filter(|(_, stream)| on_stream(**stream))
            .map(|(((_, acknowledged), arrived), _)| arrived.saturating_duration_since(*acknowledged))
            .max()
            .unwrap_or_default()
    };
    let (mut worst, mut worst_draining) = (Duration::ZERO, Duration::ZERO);
    for follower in followers {
        let seen = follower.await.unwrap();
        assert_eq!(
            seen.ids.iter().collect::<Vec<_>>(),
            expected,
            "every order once, in order"
        );
        assert!(seen.retry > Duration::ZERO, "the closing stream gave a retry hint");
        let longest = wait_of(&seen, |_| true) - seen.reopening.min(wait_of(&seen, |_| true));
        assert!(
            longest < seen.retry + Duration::from_secs(1) + stall,
            "an order waited {longest:?} (besides {:?} reopening) to reach a client whose retry hint is {:?} \
             (this machine stalled up to {stall:?})",
            seen.reopening,
            seen.retry
        );
        worst = worst.max(longest);
        worst_draining = worst_draining.max(wait_of(&seen, |stream| stream == 0));
    }
    eprintln!("longest wait on the draining gateway: {worst_draining:?}; longest stall of this machine: {stall:?}");
    eprintln!("longest wait of any order at any of {CLIENTS} clients, reopening aside: {worst:?}");
}
