//! What only the Redis event log has to prove: its retention bookkeeping against Redis' own
//! trimming, a stream key that vanishes, entries it did not write, and its readiness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use order_events::StreamPosition;
use order_events::event_log::redis::RedisEventLog;
use order_events::event_log::{CursorCheck, EventLog};
use order_events::redis::RetentionSettings;

use crate::helpers::{RedisServer, cli_bytes, event, eventually, keep_last, settings};

async fn connect(server: &RedisServer, retention: RetentionSettings) -> Arc<RedisEventLog> {
    Arc::new(
        RedisEventLog::connect(&settings(&server.url()))
            .await
            .unwrap()
            .with_retention(retention),
    )
}

/// Waits until Redis' clock is past `position`, so that the next `XADD *` on a stream that
/// starts over gets a larger id.
async fn wait_for_clock_past(log: &RedisEventLog, position: StreamPosition) {
    eventually(Duration::from_secs(5), "the Redis clock moves on", || async {
        log.now_ms().await.is_ok_and(|now| now > position.ms)
    })
    .await;
}

#[tokio::test]
async fn count_retention_waits_for_its_slack_and_records_the_last_trimmed_id() {
    let server = RedisServer::start();
    let log = connect(&server, keep_last(200)).await;
    let mut p = Vec::new();
    for n in 0..201 {
        p.push(log.append(event("c", n)).await.unwrap());
    }
    // 1 % of 200 is 2 entries of slack: one extra entry is tolerated.
    assert_eq!(server.cli(&["XLEN", "{orders}:events"]), "201");
    assert_eq!(log.read_after(StreamPosition::ZERO, 1).await.unwrap().lost, None);

    p.push(log.append(event("c", 201)).await.unwrap());
    assert_eq!(server.cli(&["XLEN", "{orders}:events"]), "200");
    assert_eq!(server.cli(&["GET", "{orders}:events:trimmed"]), p[1].to_string());
    let page = log.read_after(p[0], 1).await.unwrap();
    assert_eq!(page.lost.map(|l| (l.through, l.oldest)), Some((p[1], Some(p[2]))));
    assert_eq!(page.events[0].position, p[2]);
    assert_eq!(log.read_after(p[1], 1).await.unwrap().lost, None);
}

#[tokio::test]
async fn age_retention_trims_by_the_redis_clock() {
    let server = RedisServer::start();
    let retention = RetentionSettings {
        max_age: Duration::from_millis(100),
        ..RetentionSettings::default()
    };
    let log = connect(&server, retention).await;
    let first = log.append(event("c", 0)).await.unwrap();
    // Trimming happens on append: keep appending until the first event has aged out.
    let mut n = 1;
    eventually(Duration::from_secs(10), "the first event ages out", || {
        n += 1;
        let log = log.clone();
        async move {
            log.append(event("c", n)).await.unwrap();
            log.read_after(StreamPosition::ZERO, 1).await.unwrap().lost.is_some()
        }
    })
    .await;
    // Read from before the first event: a cursor at `first` itself loses nothing when the trim
    // went exactly through it.
    let lost = log
        .read_after(StreamPosition::ZERO, 1000)
        .await
        .unwrap()
        .lost
        .expect("the first event was trimmed");
    assert!(lost.through >= first);
    assert_eq!(
        server.cli(&["GET", "{orders}:events:trimmed"]),
        lost.through.to_string()
    );
    let held = log.read_after(lost.through, 1000).await.unwrap();
    assert_eq!(held.lost, None);
    assert_eq!(lost.oldest, held.events.first().map(|e| e.position));
    let cutoff = log.now_ms().await.unwrap() - 100;
    assert!(lost.through.ms < cutoff, "only events older than max_age are trimmed");
}

#[tokio::test]
async fn follow_reports_a_deleted_stream_key_as_a_lost_history_and_goes_on() {
    let server = RedisServer::start();
    let log = connect(&server, RetentionSettings::default()).await;
    let last = log.append(event("c", 0)).await.unwrap();

    // Once while the follower may be blocked on the key...
    let follower = tokio::spawn({
        let log = log.clone();
        async move { log.follow(last, 10, Duration::from_secs(20)).await }
    });
    assert_eq!(server.cli(&["DEL", "{orders}:events"]), "1");
    wait_for_clock_past(&log, last).await;
    let next = log.append(event("c", 1)).await.unwrap();
    let page = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The follower learns that its position is gone, whether it was blocked when that happened
    // (it then also has the new event) or read after it.
    assert_eq!(
        page.cursor,
        CursorCheck::Missing {
            resume_after: StreamPosition::ZERO
        }
    );
    assert!(page.events.iter().all(|e| e.position == next));
    let page = log
        .follow(StreamPosition::ZERO, 10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(page.events.iter().map(|e| e.position).collect::<Vec<_>>(), [next]);

    // ...and once before it starts.
    assert_eq!(server.cli(&["DEL", "{orders}:events"]), "1");
    assert_eq!(log.last_position().await.unwrap(), StreamPosition::ZERO);
    wait_for_clock_past(&log, next).await;
    let after = log.append(event("c", 2)).await.unwrap();
    let page = log.follow(next, 10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        page.cursor,
        CursorCheck::Missing {
            resume_after: StreamPosition::ZERO
        }
    );
    assert_eq!(page.events.iter().map(|e| e.position).collect::<Vec<_>>(), [after]);
}

#[tokio::test]
async fn follow_goes_on_after_a_restart_without_persistence() {
    let mut server = RedisServer::start();
    let log = connect(&server, RetentionSettings::default()).await;
    let before = log.append(event("c", 0)).await.unwrap();
    let old_epoch = log.read_after(StreamPosition::ZERO, 1).await.unwrap().epoch;
    assert!(old_epoch.is_some());
    server.stop();
    server.restart();
    assert_eq!(server.cli(&["EXISTS", "{orders}:events"]), "0");
    eventually(Duration::from_secs(10), "the log reconnects", || async {
        log.check_ready().await.is_ok()
    })
    .await;
    wait_for_clock_past(&log, before).await;
    let after = log.append(event("c", 1)).await.unwrap();
    // The follower's own connection reconnects too: until it has, a follow may fail.
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivered = loop {
        match log.follow(before, 10, Duration::from_millis(500)).await {
            Ok(page) if !page.events.is_empty() => {
                // The new stream is another history: the old position is not in it.
                assert_eq!(
                    page.cursor,
                    CursorCheck::Missing {
                        resume_after: StreamPosition::ZERO
                    }
                );
                assert!(page.epoch.is_some() && page.epoch != old_epoch, "a new epoch");
                break page.events.iter().map(|e| e.position).collect::<Vec<_>>();
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        assert!(Instant::now() < deadline, "follow did not deliver the new event");
    };
    assert_eq!(delivered, [after]);
}

#[tokio::test]
async fn entries_it_cannot_read_are_skipped_without_stalling_readers() {
    let server = RedisServer::start();
    let log = connect(&server, RetentionSettings::default()).await;
    let key: &[u8] = b"{orders}:events";
    let first = log.append(event("c", 0)).await.unwrap();
    cli_bytes(&server, &[b"XADD", key, b"*", b"unrelated", b"field"]);
    cli_bytes(&server, &[b"XADD", key, b"*", b"data", b"\xff\xfe", b"customer", b"c"]);
    let second = log.append(event("c", 1)).await.unwrap();

    let page = log.read_after(StreamPosition::ZERO, 10).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [first, second]
    );
    // A page of only unreadable entries is passed over, not returned empty.
    let page = log.read_after(first, 2).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.position).collect::<Vec<_>>(), [second]);

    // An unreadable entry at the tail: follow waits past it instead of returning at once...
    cli_bytes(&server, &[b"XADD", key, b"*", b"customer", b"c"]);
    let started = Instant::now();
    let page = log.follow(second, 10, Duration::from_millis(400)).await.unwrap();
    assert!(page.events.is_empty() && page.lost.is_none());
    assert!(started.elapsed() >= Duration::from_millis(350));
    // ...and delivers what comes after it.
    let follower = tokio::spawn({
        let log = log.clone();
        async move { log.follow(second, 10, Duration::from_secs(20)).await }
    });
    let third = log.append(event("c", 2)).await.unwrap();
    let page = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(page.events.iter().map(|e| e.position).collect::<Vec<_>>(), [third]);
}

#[tokio::test]
async fn entries_carry_data_customer_and_traceparent() {
    let server = RedisServer::start();
    let log = connect(&server, RetentionSettings::default()).await;
    let mut sent = event("c-7", 0);
    sent.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    let position = log.append(sent.clone()).await.unwrap();
    let fields = server.cli(&["XRANGE", "{orders}:events", "-", "+"]);
    let lines: Vec<&str> = fields.lines().collect();
    assert_eq!(
        lines,
        [
            position.to_string().as_str(),
            "data",
            sent.payload.as_str(),
            "customer",
            "c-7",
            "traceparent",
            sent.traceparent.as_deref().unwrap()
        ]
    );
}

#[tokio::test]
async fn starts_while_redis_is_down_and_becomes_ready_when_it_is_up() {
    let mut server = RedisServer::start();
    server.stop();
    let started = Instant::now();
    let log = connect(&server, RetentionSettings::default()).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(log.check_ready().await.is_err());
    assert!(log.append(event("c", 0)).await.is_err());
    server.restart();
    eventually(Duration::from_secs(10), "the log becomes ready", || async {
        log.check_ready().await.is_ok()
    })
    .await;
    let position = log.append(event("c", 1)).await.unwrap();
    assert_eq!(log.last_position().await.unwrap(), position);
}

#[tokio::test]
async fn now_ms_is_the_redis_clock() {
    let server = RedisServer::start();
    let log = connect(&server, RetentionSettings::default()).await;
    let now = log.now_ms().await.unwrap();
    let position = log.append(event("c", 0)).await.unwrap();
    assert!(position.ms >= now && position.ms - now < 5_000, "{position} vs {now}");
}
