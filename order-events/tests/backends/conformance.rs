//! One suite, every event log: each case takes a backend that makes fresh logs and runs
//! unchanged against the memory log and the Redis Streams log.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use order_events::StreamPosition;
use order_events::event_log::memory::MemoryLog;
use order_events::event_log::redis::RedisEventLog;
use order_events::event_log::{EventLog, LogPage, Lost};
use order_events::frame::EncodedEvent;
use order_events::redis_client::RedisSettings;

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
);
