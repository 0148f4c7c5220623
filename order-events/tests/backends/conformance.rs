//! One suite, every event log: each case takes a backend that makes fresh logs and runs
//! unchanged against the memory log and the Redis Streams log.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use order_events::StreamPosition;
use order_events::event_log::memory::MemoryLog;
use order_events::event_log::redis::RedisEventLog;
use order_events::event_log::{CursorCheck, EventLog, LogPage, Lost};
use order_events::frame::EncodedEvent;
use order_events::redis::RedisSettings;

use crate::helpers::{RedisServer, event, keep_last, settings};

/// Makes empty logs of one kind.
#[async_trait]
pub trait LogBackend: Send + Sync {
    /// A new, empty log that keeps at most `retain` events (`None`: as many as it likes).
    async fn log(&self, retain: Option<u64>) -> Arc<dyn EventLog>;
}

pub struct MemoryBackend;

#[async_trait]
impl LogBackend for MemoryBackend {
    async fn log(&self, retain: Option<u64>) -> Arc<dyn EventLog> {
        let capacity = retain.map_or(100_000, |n| n as usize);
        Arc::new(MemoryLog::new(capacity, None))
    }
}

/// A private Redis per test; each log gets a stream key of its own, missing at first as on a
/// fresh server.
pub struct RedisBackend {
    server: RedisServer,
    logs: AtomicUsize,
}

impl RedisBackend {
    pub fn start() -> Self {
        Self {
            server: RedisServer::start(),
            logs: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl LogBackend for RedisBackend {
    async fn log(&self, retain: Option<u64>) -> Arc<dyn EventLog> {
        let n = self.logs.fetch_add(1, Ordering::Relaxed);
        let settings = RedisSettings {
            stream_key: format!("{{orders-{n}}}:events"),
            ..settings(&self.server.url())
        };
        let log = RedisEventLog::connect(&settings).await.unwrap();
        Arc::new(log.with_retention(keep_last(retain.unwrap_or(0))))
    }
}

fn positions_of(page: &LogPage) -> Vec<StreamPosition> {
    page.events.iter().map(|e| e.position).collect()
}

async fn append_all(log: &dyn EventLog, count: usize) -> Vec<StreamPosition> {
    let mut positions = Vec::new();
    for n in 0..count {
        positions.push(log.append(event(&format!("c{}", n % 3), n)).await.unwrap());
    }
    positions
}

pub async fn append_returns_increasing_positions(backend: &dyn LogBackend) {
    let log = backend.log(None).await;
    let positions = append_all(&*log, 20).await;
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(positions[0] > StreamPosition::ZERO);
    assert_eq!(log.last_position().await.unwrap(), positions[19]);
}

pub async fn last_position_of_an_empty_log_is_zero(backend: &dyn LogBackend) {
    let log = backend.log(None).await;
    assert_eq!(log.last_position().await.unwrap(), StreamPosition::ZERO);
    let page = log.read_after(StreamPosition::ZERO, 10).await.unwrap();
    assert!(page.events.is_empty() && page.lost.is_none());
}

pub async fn read_after_returns_exactly_the_later_events_with_their_frames(backend: &dyn LogBackend) {
    let log = backend.log(None).await;
    let positions = append_all(&*log, 6).await;
    let page = log.read_after(positions[2], 100).await.unwrap();
    assert_eq!(positions_of(&page), positions[3..]);
    assert_eq!(page.lost, None);
    for (n, got) in (3..).zip(&page.events) {
        let sent = event(&format!("c{}", n % 3), n);
        let expected = EncodedEvent::new(got.position, &sent.customer_id, &sent.payload);
        assert_eq!(got.frame, expected.frame);
        assert_eq!(*got.customer_id, *sent.customer_id);
    }
    assert_eq!(
        positions_of(&log.read_after(StreamPosition::ZERO, 100).await.unwrap()),
        positions
    );
    assert!(log.read_after(positions[5], 100).await.unwrap().events.is_empty());
    // A position between two events reads from the next one on.
    let between = positions[3].successor();
    let later: Vec<_> = positions.iter().copied().filter(|p| *p > between).collect();
    assert_eq!(positions_of(&log.read_after(between, 100).await.unwrap()), later);
}

pub async fn read_after_pages_with_a_limit(backend: &dyn LogBackend) {
    let log = backend.log(None).await;
    let positions = append_all(&*log, 7).await;
    let (mut cursor, mut pages, mut seen) = (StreamPosition::ZERO, Vec::new(), Vec::new());
    loop {
        let page = log.read_after(cursor, 3).await.unwrap();
        if page.events.is_empty() {
            break;
        }
        pages.push(page.events.len());
        cursor = page.events.last().unwrap().position;
        seen.extend(positions_of(&page));
    }
    assert_eq!(pages, [3, 3, 1]);
    assert_eq!(seen, positions);
}

pub async fn follow_returns_events_at_once_when_they_are_there(backend: &dyn LogBackend) {
    let log = backend.log(None).await;
    let positions = append_all(&*log, 3).await;
    let started = Instant::now();
    let page = log.follow(positions[0], 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(positions_of(&page), positions[1..]);
    assert!(started.elapsed() < Duration::from_secs(5));
}

pub async fn follow_returns_events_appended_while_it_waits(backend: &dyn LogBackend) {
    let log = backend.log(None).await;
    let start = append_all(&*log, 1).await[0];
    let follower = tokio::spawn({
        let log = log.clone();
        async move { log.follow(start, 10, Duration::from_secs(20)).await }
    });
    // Whether the follower is already waiting or not, it must return this event.
    let appended = log.append(event("c", 99)).await.unwrap();
    let page = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("follow returns once an event is appended")
        .unwrap()
        .unwrap();
    assert_eq!(positions_of(&page), [appended]);
}

pub async fn follow_returns_an_empty_page_when_nothing_arrives(backend: &dyn LogBackend) {
    let log = backend.log(None).await;
    let last = append_all(&*log, 2).await[1];
    let started = Instant::now();
    let page = log.follow(last, 10, Duration::from_millis(300)).await.unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.lost, None);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "follow returned before its wait"
    );
    // Also on a log that has never held an event.
    let empty = backend.log(None).await;
    let page = empty
        .follow(StreamPosition::ZERO, 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(page.events.is_empty() && page.lost.is_none());
}

pub async fn a_cursor_behind_retention_learns_what_was_lost(backend: &dyn LogBackend) {
    let log = backend.log(Some(3)).await;
    let p = append_all(&*log, 5).await;
    let expected = Lost {
        oldest: Some(p[2]),
        through: p[1],
    };
    // Before the first trimmed event, at it, and between the two trimmed events.
    for cursor in [StreamPosition::ZERO, p[0], p[0].successor()] {
        if cursor >= p[1] {
            continue;
        }
        let page = log.read_after(cursor, 10).await.unwrap();
        assert_eq!(page.lost, Some(expected), "cursor {cursor}");
        assert_eq!(positions_of(&page), p[2..], "cursor {cursor}");
    }
    let page = log.follow(p[0], 10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(page.lost, Some(expected));
    assert_eq!(positions_of(&page), p[2..]);
}

pub async fn a_cursor_at_the_last_trimmed_event_lost_nothing(backend: &dyn LogBackend) {
    let log = backend.log(Some(3)).await;
    let p = append_all(&*log, 5).await;
    let page = log.read_after(p[1], 10).await.unwrap();
    assert_eq!(page.lost, None);
    assert_eq!(positions_of(&page), p[2..]);
    let page = log.read_after(p[3], 10).await.unwrap();
    assert_eq!(page.lost, None);
    assert_eq!(positions_of(&page), [p[4]]);
    assert_eq!(log.last_position().await.unwrap(), p[4]);
}

pub async fn the_log_tells_its_own_positions_from_foreign_ones(backend: &dyn LogBackend) {
    let log = backend.log(None).await;
    let p = append_all(&*log, 3).await;
    for held in [StreamPosition::ZERO, p[0], p[1], p[2]] {
        let page = log.read_after(held, 10).await.unwrap();
        assert_eq!(page.cursor, CursorCheck::Held, "cursor {held}");
    }
    // Before the first event, an id this history never issued: nothing is shared.
    let foreign = StreamPosition::new(p[0].ms - 1, 7);
    let page = log.read_after(foreign, 10).await.unwrap();
    assert_eq!(
        page.cursor,
        CursorCheck::Missing {
            resume_after: StreamPosition::ZERO
        }
    );
    assert_eq!(positions_of(&page), p);
    // Past the end, and at the largest id there is.
    for ahead in [StreamPosition::new(99_999_999_999_999, 0), StreamPosition::MAX] {
        let page = log.read_after(ahead, 10).await.unwrap();
        assert_eq!(
            page.cursor,
            CursorCheck::Missing { resume_after: p[2] },
            "cursor {ahead}"
        );
        assert!(page.events.is_empty());
        let page = log.follow(ahead, 10, Duration::from_millis(50)).await.unwrap();
        assert_eq!(
            page.cursor,
            CursorCheck::Missing { resume_after: p[2] },
            "follow {ahead}"
        );
    }
}

pub async fn every_read_names_the_epoch_and_it_stays_put(backend: &dyn LogBackend) {
    let log = backend.log(None).await;
    append_all(&*log, 2).await;
    let first = log.read_after(StreamPosition::ZERO, 10).await.unwrap().epoch;
    assert!(first.is_some(), "a log with events has an epoch");
    append_all(&*log, 2).await;
    let page = log
        .follow(StreamPosition::ZERO, 10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(page.epoch, first);
}

pub async fn a_trimmed_cursor_is_its_own_and_reports_the_marker(backend: &dyn LogBackend) {
    let log = backend.log(Some(3)).await;
    let p = append_all(&*log, 8).await;
    let page = log.read_after(p[0], 10).await.unwrap();
    assert_eq!(page.cursor, CursorCheck::Held);
    assert!(page.lost.is_some());
    let marker = page.trimmed_through.expect("a trimmed log reports its marker");
    assert!(marker >= p[0] && marker < p[7], "{marker}");
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::MemoryBackend).await;
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let backend = super::RedisBackend::start();
                    super::$case(&backend).await;
                }
            )*
        }
    };
}

conformance!(
    append_returns_increasing_positions,
    last_position_of_an_empty_log_is_zero,
    read_after_returns_exactly_the_later_events_with_their_frames,
    read_after_pages_with_a_limit,
    follow_returns_events_at_once_when_they_are_there,
    follow_returns_events_appended_while_it_waits,
    follow_returns_an_empty_page_when_nothing_arrives,
    a_cursor_behind_retention_learns_what_was_lost,
    a_cursor_at_the_last_trimmed_event_lost_nothing,
    the_log_tells_its_own_positions_from_foreign_ones,
    every_read_names_the_epoch_and_it_stays_put,
    a_trimmed_cursor_is_its_own_and_reports_the_marker,
);
