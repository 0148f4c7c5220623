//! `EventRing`: a bounded, ordered window of recent encoded events that wakes its readers.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use tokio::sync::watch;

use crate::frame::EncodedEvent;
use crate::position::StreamPosition;

/// Bounds of a ring: by count, and optionally by age (judged by the millisecond part of ids).
#[derive(Clone, Copy, Debug)]
pub struct RingBounds {
    pub capacity: usize,
    pub max_age: Option<Duration>,
}

/// What a reader finds after its cursor.
#[derive(Debug, PartialEq, Eq)]
pub enum RingRead {
    /// `count` frames were appended to the output; the cursor moves to `last` (which may be past
    /// the last appended frame when a filter skipped events).
    Events {
        count: usize,
        last: StreamPosition,
        first_ms: u64,
    },
    /// Nothing after the cursor yet.
    UpToDate,
    /// Events after the cursor may have left the ring: read them from the log instead.
    Behind,
}

struct Window {
    events: VecDeque<EncodedEvent>,
    /// Every event after `floor` is in `events`: the largest position ever evicted, or the
    /// position the ring was started from.
    floor: StreamPosition,
}

pub struct EventRing {
    window: RwLock<Window>,
    bounds: RingBounds,
    newest: watch::Sender<StreamPosition>,
    /// Counts restarts: a reader whose cursor was checked under an older generation checks it
    /// against the log again, since the history it was checked in may be gone.
    generation: AtomicU64,
}

impl EventRing {
    /// A ring that holds every event after `start`.
    pub fn new(bounds: RingBounds, start: StreamPosition) -> Self {
        let (newest, _) = watch::channel(start);
        Self {
            window: RwLock::new(Window {
                events: VecDeque::with_capacity(bounds.capacity.min(4096)),
                floor: start,
            }),
            bounds: RingBounds {
                capacity: bounds.capacity.max(1),
                ..bounds
            },
            newest,
            generation: AtomicU64::new(0),
        }
    }

    /// Appends events in position order and wakes every waiting reader once. Events at or
    /// before the newest held position are ignored, which makes re-reads harmless.
    pub fn extend(&self, events: impl IntoIterator<Item = EncodedEvent>, now_ms: u64) -> usize {
        let mut appended = 0;
        let newest = {
            let mut window = self.window.write();
            for event in events {
                let newest = window.events.back().map_or(window.floor, |e| e.position);
                if event.position <= newest {
                    continue;
                }
                window.events.push_back(event);
                appended += 1;
            }
            self.evict(&mut window, now_ms);
            window.events.back().map_or(window.floor, |e| e.position)
        };
        if appended > 0 {
            self.newest.send_replace(newest);
        }
        appended
    }

    /// Drops events older than the age bound even when nothing is being appended.
    pub fn evict_expired(&self, now_ms: u64) {
        let mut window = self.window.write();
        self.evict(&mut window, now_ms);
    }

    fn evict(&self, window: &mut Window, now_ms: u64) {
        let cutoff = self
            .bounds
            .max_age
            .map(|age| now_ms.saturating_sub(age.as_millis() as u64));
        while let Some(front) = window.events.front() {
            let too_many = window.events.len() > self.bounds.capacity;
            let too_old = cutoff.is_some_and(|cutoff| front.position.ms < cutoff);
            if !(too_many || too_old) {
                break;
            }
            window.floor = front.position;
            window.events.pop_front();
        }
    }

    /// Forgets everything and restarts the window after `start` (the source was replaced), in a
    /// new generation.
    pub fn restart(&self, start: StreamPosition) {
        {
            let mut window = self.window.write();
            window.events.clear();
            window.floor = start;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.newest.send_replace(start);
    }

    /// How many times the ring was restarted.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Drops every event up to and including `marker`, the log's retention marker: a cursor the
    /// log would reset is then behind the ring too, so it is sent to the log and reset there,
    /// whatever this ring still happens to hold.
    pub fn trim_through(&self, marker: StreamPosition) {
        let mut window = self.window.write();
        if marker <= window.floor {
            return;
        }
        while window.events.front().is_some_and(|e| e.position <= marker) {
            window.events.pop_front();
        }
        window.floor = marker;
    }

    /// Whether `position` belongs to the history this ring holds (see
    /// [`CursorCheck`](crate::event_log::CursorCheck)): `0-0`, at or before the floor, or the id
    /// of an event held. For a ring that is its whole log.
    pub fn check(&self, position: StreamPosition) -> crate::event_log::CursorCheck {
        use crate::event_log::CursorCheck;
        let window = self.window.read();
        if position == StreamPosition::ZERO || position <= window.floor {
            return CursorCheck::Held;
        }
        let at = window.events.partition_point(|e| e.position < position);
        if window.events.get(at).is_some_and(|e| e.position == position) {
            return CursorCheck::Held;
        }
        let resume_after = at
            .checked_sub(1)
            .and_then(|before| window.events.get(before))
            .map_or(window.floor, |e| e.position);
        CursorCheck::Missing { resume_after }
    }

    /// Copies the frames after `cursor` (at most `max`, at most about `max_bytes`) that pass
    /// `filter` into `out`.
    pub fn read_after(
        &self,
        cursor: StreamPosition,
        max: usize,
        max_bytes: usize,
        filter: Option<&str>,
        out: &mut Vec<Bytes>,
    ) -> RingRead {
        self.read_range(cursor, StreamPosition::MAX, max, max_bytes, filter, out)
    }

    /// Like [`read_after`](Self::read_after), but stops at `until` (included).
    pub fn read_range(
        &self,
        cursor: StreamPosition,
        until: StreamPosition,
        max: usize,
        max_bytes: usize,
        filter: Option<&str>,
        out: &mut Vec<Bytes>,
    ) -> RingRead {
        self.scan(cursor, until, max, max_bytes, filter, |event| {
            out.push(event.frame.clone())
        })
    }

    /// Like [`read_range`](Self::read_range) without a filter, giving whole events (with their
    /// customer) to whoever sorts them by customer.
    pub fn read_events(
        &self,
        cursor: StreamPosition,
        until: StreamPosition,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<EncodedEvent>,
    ) -> RingRead {
        self.scan(cursor, until, max, max_bytes, None, |event| out.push(event.clone()))
    }

    fn scan(
        &self,
        cursor: StreamPosition,
        until: StreamPosition,
        max: usize,
        max_bytes: usize,
        filter: Option<&str>,
        mut take: impl FnMut(&EncodedEvent),
    ) -> RingRead {
        let window = self.window.read();
        if cursor < window.floor {
            return RingRead::Behind;
        }
        let start = window.events.partition_point(|e| e.position <= cursor);
        if start == window.events.len() || window.events[start].position > until {
            return RingRead::UpToDate;
        }
        let (mut count, mut bytes, mut last, mut first_ms) = (0, 0, cursor, 0);
        for event in window.events.range(start..) {
            if event.position > until || count >= max || (count > 0 && bytes + event.frame.len() > max_bytes) {
                break;
            }
            last = event.position;
            if filter.is_none_or(|wanted| *event.customer_id == *wanted) {
                bytes += event.frame.len();
                if count == 0 {
                    first_ms = event.position.ms;
                }
                count += 1;
                take(event);
            }
        }
        RingRead::Events { count, last, first_ms }
    }

    /// Everything after `cursor` that is still held, for a backend whose ring is its whole log.
    /// Also tells whether events after `cursor` were evicted, and the eviction floor.
    pub fn events_after(&self, cursor: StreamPosition, limit: usize) -> (Vec<EncodedEvent>, bool, StreamPosition) {
        let window = self.window.read();
        let lost = cursor < window.floor;
        let start = window.events.partition_point(|e| e.position <= cursor);
        (
            window.events.range(start..).take(limit).cloned().collect(),
            lost,
            window.floor,
        )
    }

    /// Every event after this position is held.
    pub fn floor(&self) -> StreamPosition {
        self.window.read().floor
    }

    pub fn oldest(&self) -> Option<StreamPosition> {
        self.window.read().events.front().map(|e| e.position)
    }

    /// The newest position the ring knows: its newest event, or its floor when empty.
    pub fn newest(&self) -> StreamPosition {
        *self.newest.borrow()
    }

    pub fn len(&self) -> usize {
        self.window.read().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver that changes whenever events are appended.
    pub fn subscribe(&self) -> watch::Receiver<StreamPosition> {
        self.newest.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ms: u64, customer: &str) -> EncodedEvent {
        EncodedEvent::new(StreamPosition::new(ms, 0), customer, "{}")
    }

    fn ring(capacity: usize) -> EventRing {
        EventRing::new(
            RingBounds {
                capacity,
                max_age: None,
            },
            StreamPosition::ZERO,
        )
    }

    #[test]
    fn reads_after_cursor_and_reports_behind_after_eviction() {
        let ring = ring(3);
        ring.extend((1..=5).map(|ms| event(ms, "a")), 0);
        let mut out = Vec::new();
        assert_eq!(
            ring.read_after(StreamPosition::new(1, 0), 10, usize::MAX, None, &mut out),
            RingRead::Behind
        );
        let read = ring.read_after(StreamPosition::new(2, 0), 10, usize::MAX, None, &mut out);
        assert_eq!(
            read,
            RingRead::Events {
                count: 3,
                last: StreamPosition::new(5, 0),
                first_ms: 3
            }
        );
        out.clear();
        assert_eq!(
            ring.read_after(StreamPosition::new(5, 0), 10, usize::MAX, None, &mut out),
            RingRead::UpToDate
        );
    }

    #[test]
    fn range_reads_stop_at_the_upper_bound() {
        let ring = ring(10);
        ring.extend((1..=5).map(|ms| event(ms, "a")), 0);
        let mut out = Vec::new();
        let read = ring.read_range(
            StreamPosition::new(1, 0),
            StreamPosition::new(3, 0),
            10,
            usize::MAX,
            None,
            &mut out,
        );
        assert_eq!(
            read,
            RingRead::Events {
                count: 2,
                last: StreamPosition::new(3, 0),
                first_ms: 2
            }
        );
        assert_eq!(
            ring.read_range(
                StreamPosition::new(3, 0),
                StreamPosition::new(3, 0),
                10,
                usize::MAX,
                None,
                &mut out
            ),
            RingRead::UpToDate
        );
    }

    #[test]
    fn filter_skips_but_advances() {
        let ring = ring(10);
        ring.extend([event(1, "a"), event(2, "b"), event(3, "a")], 0);
        let mut out = Vec::new();
        let read = ring.read_after(StreamPosition::ZERO, 10, usize::MAX, Some("b"), &mut out);
        assert_eq!(
            read,
            RingRead::Events {
                count: 1,
                last: StreamPosition::new(3, 0),
                first_ms: 2
            }
        );
    }

    #[test]
    fn ignores_duplicates_and_evicts_by_age() {
        let ring = EventRing::new(
            RingBounds {
                capacity: 10,
                max_age: Some(Duration::from_millis(100)),
            },
            StreamPosition::ZERO,
        );
        assert_eq!(
            ring.extend([event(1000, "a"), event(1000, "a"), event(1050, "a")], 1060),
            2
        );
        ring.evict_expired(1120);
        assert_eq!(ring.oldest(), Some(StreamPosition::new(1050, 0)));
        let (events, lost, _) = ring.events_after(StreamPosition::ZERO, 10);
        assert!(lost);
        assert_eq!(events.len(), 1);
    }
}
