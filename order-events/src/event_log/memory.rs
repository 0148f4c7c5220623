//! The in-memory event log: one process, bounded by count and age, ids monotonic like Redis'.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{EventLog, LogError, LogPage, Lost};
use crate::domain::OrderCreated;
use crate::frame::EncodedEvent;
use crate::position::Epoch;
use crate::position::{PositionClock, StreamPosition};
use crate::ring::{EventRing, RingBounds};

pub struct MemoryLog {
    /// The ring is the whole log: readers in this process read it directly.
    ring: Arc<EventRing>,
    /// One history per process: a restarted process starts a new one.
    epoch: Epoch,
    clock: Mutex<PositionClock>,
    now_ms: fn() -> u64,
}

pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl MemoryLog {
    pub fn new(capacity: usize, max_age: Option<Duration>) -> Self {
        Self::with_clock(capacity, max_age, wall_clock_ms)
    }

    /// A log whose ids come from `now_ms` (tests use a clock that steps backwards).
    pub fn with_clock(capacity: usize, max_age: Option<Duration>, now_ms: fn() -> u64) -> Self {
        Self {
            ring: Arc::new(EventRing::new(RingBounds { capacity, max_age }, StreamPosition::ZERO)),
            epoch: Epoch::random(),
            clock: Mutex::new(PositionClock::default()),
            now_ms,
        }
    }

    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    pub fn ring(&self) -> Arc<EventRing> {
        self.ring.clone()
    }

    /// Appends without awaiting: id generation and insertion happen under one lock so that
    /// ids enter the ring in order.
    pub fn append_now(&self, event: &OrderCreated) -> EncodedEvent {
        let mut clock = self.clock.lock();
        let now = (self.now_ms)();
        let position = clock.next(now);
        let encoded = EncodedEvent::new(position, &event.customer_id, &event.payload)
            .with_traceparent(event.traceparent.as_deref());
        self.ring.extend([encoded.clone()], now);
        encoded
    }

    /// Drops events past the age bound; called periodically so an idle log still ages out.
    pub fn evict_expired(&self) {
        self.ring.evict_expired((self.now_ms)());
    }
}

#[async_trait]
impl EventLog for MemoryLog {
    async fn append(&self, event: OrderCreated) -> Result<StreamPosition, LogError> {
        Ok(self.append_now(&event).position)
    }

    async fn read_after(&self, after: StreamPosition, limit: usize) -> Result<LogPage, LogError> {
        let cursor = self.ring.check(after);
        let (events, lost, floor) = self.ring.events_after(after, limit);
        let lost = lost.then(|| Lost {
            oldest: events.first().map(|e| e.position).or(self.ring.oldest()),
            through: floor,
        });
        Ok(LogPage {
            events,
            lost,
            cursor,
            epoch: Some(self.epoch.clone()),
            trimmed_through: (floor != StreamPosition::ZERO).then_some(floor),
        })
    }

    async fn follow(&self, after: StreamPosition, limit: usize, wait: Duration) -> Result<LogPage, LogError> {
        let mut changes = self.ring.subscribe();
        let page = self.read_after(after, limit).await?;
        if !page.events.is_empty() || page.lost.is_some() {
            return Ok(page);
        }
        // A timeout just means nothing arrived.
        let _ = tokio::time::timeout(wait, changes.changed()).await;
        self.read_after(after, limit).await
    }

    async fn last_position(&self) -> Result<StreamPosition, LogError> {
        Ok(self.ring.newest())
    }

    async fn check_ready(&self) -> Result<(), LogError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static CLOCK: AtomicU64 = AtomicU64::new(10_000);

    #[tokio::test]
    async fn ids_stay_monotonic_when_the_clock_steps_back() {
        let log = MemoryLog::with_clock(100, None, || CLOCK.load(Ordering::SeqCst));
        let event = OrderCreated {
            customer_id: "c".into(),
            payload: "{}".into(),
            traceparent: None,
        };
        let a = log.append(event.clone()).await.unwrap();
        CLOCK.store(5_000, Ordering::SeqCst);
        let b = log.append(event.clone()).await.unwrap();
        CLOCK.store(20_000, Ordering::SeqCst);
        let c = log.append(event).await.unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(b, StreamPosition::new(10_000, 1));
    }
}
