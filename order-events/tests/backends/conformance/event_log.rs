//! The `EventLog` suite: every case runs against each backend twice, once writing with the log's
//! own `append` and once through the order store's `create`, the path order-api writes by (the
//! order, its event and its idempotency key in one step, a script of its own on Redis).

use std::sync::Arc;
use std::time::{Duration, Instant};

use order_events::StreamPosition;
use order_events::domain::OrderCreated;
use order_events::event_log::{CursorCheck, EventLog, LogPage, Lost};
use order_events::frame::EncodedEvent;
use order_events::order_store::{CreateOutcome, OrderStore};

use super::Backend;
use crate::helpers::{event, new_order};

/// How a case puts events into the log.
#[derive(Clone, Copy, Debug)]
pub enum WritePath {
    /// `EventLog::append`.
    Append,
    /// `OrderStore::create` of a new order, without an idempotency key.
    CreateOrder,
}

/// A fresh log and the way its events are written.
struct TestLog {
    log: Arc<dyn EventLog>,
    store: Arc<dyn OrderStore>,
    path: WritePath,
}

impl std::ops::Deref for TestLog {
    type Target = dyn EventLog;

    fn deref(&self) -> &Self::Target {
        &*self.log
    }
}

impl TestLog {
    async fn open(backend: &dyn Backend, path: WritePath, retain: Option<u64>) -> Self {
        let opened = backend.open(retain).await;
        Self {
            log: opened.log,
            store: opened.store,
            path,
        }
    }

    /// Writes the `n`th event, for one of three customers; returns its position and what was sent.
    async fn write(&self, n: usize) -> (StreamPosition, OrderCreated) {
        let customer = format!("c{}", n % 3);
        match self.path {
            WritePath::Append => {
                let sent = event(&customer, n);
                (self.log.append(sent.clone()).await.unwrap(), sent)
            }
            WritePath::CreateOrder => {
                let new = new_order(&customer, &format!("SKU-{n}"), None);
                let CreateOutcome::Created(created) = self.store.create(new.clone()).await.unwrap() else {
                    panic!("an order without a key is always created");
                };
                (created.event_id, new.event)
            }
        }
    }

    async fn write_all(&self, count: usize) -> Vec<StreamPosition> {
        let mut positions = Vec::new();
        for n in 0..count {
            positions.push(self.write(n).await.0);
        }
        positions
    }
}

fn positions_of(page: &LogPage) -> Vec<StreamPosition> {
    page.events.iter().map(|e| e.position).collect()
}

pub async fn writes_return_increasing_positions(backend: &dyn Backend, path: WritePath) {
    let log = TestLog::open(backend, path, None).await;
    let positions = log.write_all(20).await;
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(positions[0] > StreamPosition::ZERO);
    assert_eq!(log.last_position().await.unwrap(), positions[19]);
}

pub async fn last_position_of_an_empty_log_is_zero(backend: &dyn Backend, path: WritePath) {
    let log = TestLog::open(backend, path, None).await;
    assert_eq!(log.last_position().await.unwrap(), StreamPosition::ZERO);
    let page = log.read_after(StreamPosition::ZERO, 10).await.unwrap();
    assert!(page.events.is_empty() && page.lost.is_none());
}

pub async fn read_after_returns_exactly_the_later_events_with_their_frames(backend: &dyn Backend, path: WritePath) {
    let log = TestLog::open(backend, path, None).await;
    let mut written = Vec::new();
    for n in 0..6 {
        written.push(log.write(n).await);
    }
    let positions: Vec<_> = written.iter().map(|(position, _)| *position).collect();
    let page = log.read_after(positions[2], 100).await.unwrap();
    assert_eq!(positions_of(&page), positions[3..]);
    assert_eq!(page.lost, None);
    for (got, (_, sent)) in page.events.iter().zip(&written[3..]) {
        let expected = EncodedEvent::new(got.position, &sent.customer_id, &sent.payload);
        assert_eq!(got.frame, expected.frame);
        assert_eq!(*got.customer_id, *sent.customer_id);
        assert_eq!(got.traceparent.as_deref(), sent.traceparent.as_deref());
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

pub async fn read_after_pages_with_a_limit(backend: &dyn Backend, path: WritePath) {
    let log = TestLog::open(backend, path, None).await;
    let positions = log.write_all(7).await;
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

pub async fn follow_returns_events_at_once_when_they_are_there(backend: &dyn Backend, path: WritePath) {
    let log = TestLog::open(backend, path, None).await;
    let positions = log.write_all(3).await;
    let started = Instant::now();
    let page = log.follow(positions[0], 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(positions_of(&page), positions[1..]);
    assert!(started.elapsed() < Duration::from_secs(5));
}

pub async fn follow_returns_events_appended_while_it_waits(backend: &dyn Backend, path: WritePath) {
    let log = TestLog::open(backend, path, None).await;
    let start = log.write_all(1).await[0];
    let follower = tokio::spawn({
        let log = log.log.clone();
        async move { log.follow(start, 10, Duration::from_secs(20)).await }
    });
    // Whether the follower is already waiting or not, it must return this event.
    let (appended, _) = log.write(99).await;
    let page = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("follow returns once an event is appended")
        .unwrap()
        .unwrap();
    assert_eq!(positions_of(&page), [appended]);
}

pub async fn follow_returns_an_empty_page_when_nothing_arrives(backend: &dyn Backend, path: WritePath) {
    let log = TestLog::open(backend, path, None).await;
    let last = log.write_all(2).await[1];
    let started = Instant::now();
    let page = log.follow(last, 10, Duration::from_millis(300)).await.unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.lost, None);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "follow returned before its wait"
    );
    // Also on a log that has never held an event.
    let empty = TestLog::open(backend, path, None).await;
    let page = empty
        .follow(StreamPosition::ZERO, 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(page.events.is_empty() && page.lost.is_none());
}

pub async fn a_cursor_behind_retention_learns_what_was_lost(backend: &dyn Backend, path: WritePath) {
    let log = TestLog::open(backend, path, Some(3)).await;
    let p = log.write_all(5).await;
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

pub async fn a_cursor_at_the_last_trimmed_event_lost_nothing(backend: &dyn Backend, path: WritePath) {
    let log = TestLog::open(backend, path, Some(3)).await;
    let p = log.write_all(5).await;
    let page = log.read_after(p[1], 10).await.unwrap();
    assert_eq!(page.lost, None);
    assert_eq!(positions_of(&page), p[2..]);
    let page = log.read_after(p[3], 10).await.unwrap();
    assert_eq!(page.lost, None);
    assert_eq!(positions_of(&page), [p[4]]);
    assert_eq!(log.last_position().await.unwrap(), p[4]);
}

pub async fn the_log_tells_its_own_positions_from_foreign_ones(backend: &dyn Backend, path: WritePath) {
    let log = TestLog::open(backend, path, None).await;
    let p = log.write_all(3).await;
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

pub async fn every_read_names_the_epoch_and_it_stays_put(backend: &dyn Backend, path: WritePath) {
    let log = TestLog::open(backend, path, None).await;
    log.write_all(2).await;
    let first = log.read_after(StreamPosition::ZERO, 10).await.unwrap().epoch;
    assert!(first.is_some(), "a log with events has an epoch");
    log.write_all(2).await;
    let page = log
        .follow(StreamPosition::ZERO, 10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(page.epoch, first);
}

pub async fn a_trimmed_cursor_is_its_own_and_reports_the_marker(backend: &dyn Backend, path: WritePath) {
    let log = TestLog::open(backend, path, Some(3)).await;
    let p = log.write_all(8).await;
    let page = log.read_after(p[0], 10).await.unwrap();
    assert_eq!(page.cursor, CursorCheck::Held);
    assert!(page.lost.is_some());
    let marker = page.trimmed_through.expect("a trimmed log reports its marker");
    assert!(marker >= p[0] && marker < p[7], "{marker}");
}

/// Every case against each backend, once per write path.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        conformance!(@backend memory, crate::conformance::MemoryBackend, $($case),*);
        conformance!(@backend redis, crate::conformance::RedisBackend::start(), $($case),*);
    };
    (@backend $name:ident, $backend:expr, $($case:ident),*) => {
        mod $name {
            conformance!(@path append, Append, $backend, $($case),*);
            conformance!(@path create_order, CreateOrder, $backend, $($case),*);
        }
    };
    (@path $name:ident, $path:ident, $backend:expr, $($case:ident),*) => {
        mod $name {
            $(
                #[tokio::test]
                async fn $case() {
                    let backend = $backend;
                    crate::conformance::event_log::$case(
                        &backend,
                        crate::conformance::event_log::WritePath::$path,
                    )
                    .await;
                }
            )*
        }
    };
}

conformance!(
    writes_return_increasing_positions,
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
