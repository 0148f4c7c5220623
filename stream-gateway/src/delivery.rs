//! `Delivery`: one SSE connection's cursor and the loop that turns the feed into response
//! chunks: the `retry:` hint, batches of events after the cursor, `reset` when the cursor fell
//! behind retention, heartbeats when idle, and a spread-out close on shutdown.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use order_events::auth::Grant;
use order_events::event_log::memory::wall_clock_ms;
use order_events::event_log::{CursorCheck, EventLog, LogError, LogPage};
use order_events::frame::{HEARTBEAT, Reset, ResetReason, reset_frame, retry_frame, token_expired_frame};
use order_events::metrics::Metrics;
use order_events::position::StreamPosition;
use order_events::ring::{EventRing, RingRead};
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::feed::{Backoff, Feed};

/// Most events written in one chunk: large enough to coalesce a burst into one write, small
/// enough that one connection does not hold the others back.
const MAX_BATCH_EVENTS: usize = 256;
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Settings every connection of a process shares.
pub struct DeliverySettings {
    pub heartbeat: Duration,
    pub reconnect_delay: Duration,
    /// On shutdown, streams end at random moments within this window.
    pub close_spread: Duration,
    pub catchup_page: usize,
    pub metrics: Arc<Metrics>,
}

/// Counts an open connection for as long as it lives.
pub struct OpenConnection {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl OpenConnection {
    pub fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.sse_connections.inc();
        Self {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.sse_connections.dec();
    }
}

pub struct Delivery {
    feed: Arc<Feed>,
    settings: Arc<DeliverySettings>,
    cursor: StreamPosition,
    /// The cursor names an event the client received (its `Last-Event-ID`, or an event this
    /// stream passed), not just a starting point: if the log's history lacks it, the client
    /// holds events that are gone and gets `reset`.
    claims_history: bool,
    /// The cursor must be checked against the log before the ring is read (the client resumed,
    /// or the ring restarted since the last check): the log, not this pod's ring, decides.
    verify: bool,
    /// The ring generation the cursor was last checked in.
    generation: u64,
    /// Consecutive reads the log refused (not transient failures).
    refusals: u32,
    /// Consecutive transient read failures; only the first of a streak is logged as a warning.
    failures: u32,
    filter: Option<Arc<str>>,
    /// When the stream's token stops being valid: the stream then ends with `token-expired`.
    expires: Option<(Instant, std::time::SystemTime)>,
    changes: Option<watch::Receiver<StreamPosition>>,
    /// Fires at most one heartbeat interval after the last write; re-armed lazily when it fires.
    heartbeat: Pin<Box<Sleep>>,
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
    started: bool,
    close_at: Option<Instant>,
    closed: bool,
    last_write: Instant,
    batch: Vec<Bytes>,
    _open: OpenConnection,
}

enum Step {
    Chunk(Bytes),
    /// The cursor moved over filtered-out events: look again at once.
    Again,
    Idle,
}

impl Delivery {
    /// A delivery after `cursor`. `resumed` says the cursor came from the client
    /// (`Last-Event-ID`): it is then checked against the log before anything is delivered.
    /// `access` confines it to one customer's events and ends it when the token expires.
    pub fn new(
        feed: Arc<Feed>,
        settings: Arc<DeliverySettings>,
        cursor: StreamPosition,
        resumed: bool,
        access: Grant,
        stop: CancellationToken,
        open: OpenConnection,
    ) -> Self {
        let Grant {
            customer: filter,
            expires_at,
        } = access;
        let expires = expires_at.map(|at| {
            let left = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
            (Instant::now() + left, at)
        });
        let settings_heartbeat = settings.heartbeat;
        let (changes, generation) = match &*feed {
            Feed::Hub { ring, .. } => (Some(ring.subscribe()), ring.generation()),
            Feed::Poll { .. } => (None, 0),
        };
        Self {
            feed,
            settings,
            cursor,
            claims_history: resumed,
            verify: resumed,
            generation,
            refusals: 0,
            failures: 0,
            filter,
            expires,
            changes,
            heartbeat: Box::pin(tokio::time::sleep(settings_heartbeat)),
            stopped: Box::pin(stop.cancelled_owned()),
            started: false,
            close_at: None,
            closed: false,
            last_write: Instant::now(),
            batch: Vec::new(),
            _open: open,
        }
    }

    /// The response body as a stream of chunks; it ends when the server shuts down.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
        futures_util::stream::unfold(self, |mut delivery| async move {
            let chunk = delivery.next_chunk().await?;
            Some((Ok(chunk), delivery))
        })
    }

    /// The cursor to park at and the customer the stream is confined to, when the fan-out may
    /// write this stream: a hub feed with the cursor checked, the opening written, not closing,
    /// the token not expired.
    pub fn parkable(&self) -> Option<(StreamPosition, Option<Arc<str>>)> {
        let checked = match &*self.feed {
            Feed::Hub { ring, .. } => !self.verify && ring.generation() == self.generation,
            Feed::Poll { .. } => false,
        };
        let parkable = checked
            && self.started
            && self.close_at.is_none()
            && !self.closed
            && self.expires.is_none_or(|(at, _)| at > Instant::now());
        parkable.then(|| (self.cursor, self.filter.clone()))
    }

    /// When the stream's token expires.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires.map(|(at, _)| at)
    }

    /// Continues after the fan-out wrote this stream up to `cursor`.
    pub fn resume(&mut self, cursor: StreamPosition) {
        if cursor != self.cursor {
            self.claims_history = true;
        }
        self.cursor = cursor;
        self.last_write = Instant::now();
    }

    /// The next bytes to write; `None` once the stream has ended.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.closed {
            return None;
        }
        if !self.started {
            self.started = true;
            self.last_write = Instant::now();
            return Some(retry_frame(self.settings.reconnect_delay.as_millis() as u64));
        }
        let mut backoff = Backoff::default();
        loop {
            if self.close_at.is_some_and(|at| at <= Instant::now()) {
                return Some(self.close());
            }
            if self.expires.is_some_and(|(at, _)| at <= Instant::now()) {
                return Some(self.expire());
            }
            if let Some(changes) = &mut self.changes {
                changes.borrow_and_update();
            }
            let failed = match self.step().await {
                Ok(step) => {
                    self.refusals = 0;
                    self.failures = 0;
                    match step {
                        Step::Chunk(chunk) => {
                            self.last_write = Instant::now();
                            return Some(chunk);
                        }
                        Step::Again => continue,
                        Step::Idle => {
                            backoff.reset();
                            false
                        }
                    }
                }
                Err(error) if error.is_transient() => {
                    self.failures += 1;
                    if self.failures == 1 {
                        tracing::warn!(%error, cursor = %self.cursor, "reading events failed; the stream stays open and retries");
                    } else {
                        tracing::debug!(%error, cursor = %self.cursor, failures = self.failures, "reading events failed again");
                    }
                    true
                }
                Err(error) => return Some(self.refused(error).await),
            };
            let retry_in = backoff.delay();
            let closing = self.close_at;
            let expiry = self.expires_at();
            let feed = &*self.feed;
            let changes = &mut self.changes;
            let wake = async move {
                match (changes, feed) {
                    _ if failed => tokio::time::sleep(retry_in).await,
                    // The sender lives as long as the feed; an error only means it is gone.
                    (Some(changes), _) => {
                        let _ = changes.changed().await;
                    }
                    (None, Feed::Poll { interval, .. }) => tokio::time::sleep(*interval).await,
                    (None, Feed::Hub { .. }) => tokio::time::sleep(retry_in).await,
                }
            };
            // The heartbeat timer and the stop future live as long as the connection: nothing
            // is registered or re-armed per delivered event.
            tokio::select! {
                biased;
                _ = self.stopped.as_mut(), if closing.is_none() => {
                    let spread = self.settings.close_spread.as_millis() as u64;
                    let delay = if spread == 0 { 0 } else { rand::rng().random_range(0..spread) };
                    self.close_at = Some(Instant::now() + Duration::from_millis(delay));
                }
                _ = sleep_until_opt(closing) => return Some(self.close()),
                _ = sleep_until_opt(expiry) => return Some(self.expire()),
                _ = wake => {}
                _ = self.heartbeat.as_mut() => {
                    let now = Instant::now();
                    let due = self.last_write + self.settings.heartbeat;
                    if due <= now {
                        self.last_write = now;
                        self.heartbeat.as_mut().reset(now + self.settings.heartbeat);
                        return Some(HEARTBEAT);
                    }
                    self.heartbeat.as_mut().reset(due);
                }
            }
        }
    }

    /// Ends the stream with a jittered `retry:` so clients of a draining pod do not all come
    /// back in the same instant.
    fn close(&mut self) -> Bytes {
        self.closed = true;
        let base = self.settings.reconnect_delay.as_millis() as u64;
        let jitter = if base == 0 {
            0
        } else {
            rand::rng().random_range(0..=base)
        };
        retry_frame(base + jitter)
    }

    /// The log refused to read after the cursor (or answered with data that cannot be read):
    /// reading again would fail the same way, poll after poll. The first time the client gets
    /// `reset` and the stream continues at the end of the log; if the log refuses that too, the
    /// stream ends (its client reconnects after the `retry:` hint).
    async fn refused(&mut self, error: LogError) -> Bytes {
        self.refusals += 1;
        let end = match self.refusals {
            1 => self.feed.log().last_position().await.ok(),
            _ => None,
        };
        let metrics = &self.settings.metrics;
        match end {
            Some(end) => {
                tracing::warn!(%error, cursor = %self.cursor, %end, "the event store refused to read after this cursor; sending reset");
                metrics.cursor_errors.with_label_values(&["reset"]).inc();
                metrics.resets.with_label_values(&[ResetReason::Refused.as_str()]).inc();
                let frame = reset_frame(&Reset {
                    reason: ResetReason::Refused,
                    requested: self.cursor,
                    oldest: None,
                    resume_after: end,
                    epoch: None,
                });
                self.cursor = end;
                self.claims_history = false;
                self.verify = false;
                frame
            }
            None => {
                tracing::warn!(%error, cursor = %self.cursor, "the event store keeps refusing this stream's reads; closing it");
                metrics.cursor_errors.with_label_values(&["close"]).inc();
                self.close()
            }
        }
    }

    /// Ends the stream because its token expired; clients must not simply reconnect with it.
    fn expire(&mut self) -> Bytes {
        self.closed = true;
        let at = self.expires.map_or(std::time::SystemTime::now(), |(_, at)| at);
        token_expired_frame(time::OffsetDateTime::from(at))
    }

    async fn step(&mut self) -> Result<Step, LogError> {
        let feed = self.feed.clone();
        match &*feed {
            Feed::Hub { ring, log } => {
                let generation = ring.generation();
                if generation != self.generation {
                    // The ring restarted: the history this cursor was checked in may be gone.
                    self.generation = generation;
                    if self.claims_history {
                        self.verify = true;
                    } else {
                        // A mere starting point, never delivered from: start over where the
                        // ring's new history starts if that is earlier.
                        self.cursor = self.cursor.min(ring.floor());
                    }
                }
                if self.verify {
                    return self.catch_up(ring, log).await;
                }
                self.batch.clear();
                let read = ring.read_after(
                    self.cursor,
                    MAX_BATCH_EVENTS,
                    MAX_BATCH_BYTES,
                    self.filter.as_deref(),
                    &mut self.batch,
                );
                match read {
                    RingRead::Events { count, last, first_ms } => {
                        self.cursor = last;
                        self.claims_history = true;
                        if count == 0 {
                            return Ok(Step::Again);
                        }
                        record_delivery(&self.settings.metrics, 1, count as u64, first_ms);
                        Ok(Step::Chunk(join(&mut self.batch)))
                    }
                    RingRead::UpToDate => Ok(Step::Idle),
                    RingRead::Behind => self.catch_up(ring, log).await,
                }
            }
            Feed::Poll { log, count, .. } => {
                let page = self.read_log(log, *count).await?;
                Ok(self.page_chunk(page))
            }
        }
    }

    /// Reads after the cursor from the log (which also checks the cursor), for a cursor behind
    /// the ring or one that must be checked; joins the ring when the log has nothing before it.
    async fn catch_up(&mut self, ring: &EventRing, log: &Arc<dyn EventLog>) -> Result<Step, LogError> {
        self.settings.metrics.catchup_reads.inc();
        let page = self.read_log(log, self.settings.catchup_page).await?;
        self.verify = false;
        let floor = ring.floor();
        let step = self.page_chunk(page);
        if matches!(step, Step::Idle) && self.cursor < floor && floor != StreamPosition::MAX {
            // Nothing in the log between the cursor and the ring: join the ring.
            self.cursor = floor;
            return Ok(Step::Again);
        }
        Ok(step)
    }

    /// Reads after the cursor from the log. When the cursor is about to be reset as not of the
    /// log's history and that history has no epoch yet (the stream was recreated and nothing
    /// has been written since), one is recorded first, so the reset names the history the
    /// client continues in.
    async fn read_log(&self, log: &Arc<dyn EventLog>, limit: usize) -> Result<LogPage, LogError> {
        let mut page = log.read_after(self.cursor, limit).await?;
        if self.claims_history && page.epoch.is_none() && matches!(page.cursor, CursorCheck::Missing { .. }) {
            page.epoch = log.renew_epoch(None).await?;
        }
        Ok(page)
    }

    fn page_chunk(&mut self, page: LogPage) -> Step {
        let mut chunk = BytesMut::new();
        let metrics = &self.settings.metrics;
        if let Some(lost) = page.lost {
            let reason = ResetReason::BehindRetention;
            metrics.resets.with_label_values(&[reason.as_str()]).inc();
            tracing::info!(cursor = %self.cursor, oldest = ?lost.oldest, "cursor behind retention; sending reset");
            let resume_after = self.cursor.max(lost.through);
            chunk.extend_from_slice(&reset_frame(&Reset {
                reason,
                requested: self.cursor,
                oldest: lost.oldest,
                resume_after,
                epoch: page.epoch.as_ref(),
            }));
            self.cursor = resume_after;
        } else if let (true, CursorCheck::Missing { resume_after }) = (self.claims_history, page.cursor) {
            // Nothing after the cursor at all: it is past the end of the log.
            let reason = if page.events.is_empty() {
                ResetReason::AheadOfLog
            } else {
                ResetReason::HistoryLost
            };
            metrics.resets.with_label_values(&[reason.as_str()]).inc();
            tracing::info!(cursor = %self.cursor, %resume_after, epoch = ?page.epoch, reason = reason.as_str(), "the log's history lacks this cursor; sending reset");
            let frame = reset_frame(&Reset {
                reason,
                requested: self.cursor,
                oldest: None,
                resume_after,
                epoch: page.epoch.as_ref(),
            });
            // The events read belong after the old cursor: read again after the shared point.
            self.cursor = resume_after;
            return Step::Chunk(frame);
        }
        let mut count = 0;
        let mut first_ms = 0;
        for event in &page.events {
            self.cursor = event.position;
            self.claims_history = true;
            if self
                .filter
                .as_deref()
                .is_none_or(|wanted| *event.customer_id == *wanted)
            {
                if count == 0 {
                    first_ms = event.position.ms;
                }
                count += 1;
                chunk.extend_from_slice(&event.frame);
            }
        }
        if count > 0 {
            record_delivery(&self.settings.metrics, 1, count as u64, first_ms);
        }
        if chunk.is_empty() {
            if page.events.is_empty() {
                Step::Idle
            } else {
                Step::Again
            }
        } else {
            Step::Chunk(chunk.freeze())
        }
    }
}

pub(crate) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Counts one write of `events` events to each of `clients` connections, and observes the
/// delivery lag once per connection written: how long ago the oldest of those events was
/// created. Each transport's writer calls this, so the histogram means the same on both.
pub(crate) fn record_delivery(metrics: &Metrics, clients: u64, events: u64, oldest_ms: u64) {
    if clients == 0 || events == 0 {
        return;
    }
    metrics.events_delivered.inc_by(clients * events);
    let lag = wall_clock_ms().saturating_sub(oldest_ms) as f64 / 1000.0;
    if clients == 1 {
        metrics.delivery_lag.observe(lag);
        return;
    }
    // A fan-out round writes thousands of sockets: one flush instead of an atomic update each.
    let local = metrics.delivery_lag.local();
    for _ in 0..clients {
        local.observe(lag);
    }
    local.flush();
}

/// One frame is passed on as is (shared, no copy); several are coalesced into one write.
pub(crate) fn join(batch: &mut Vec<Bytes>) -> Bytes {
    if batch.len() == 1 {
        return batch.pop().unwrap_or_default();
    }
    let total = batch.iter().map(Bytes::len).sum();
    let mut chunk = BytesMut::with_capacity(total);
    for frame in batch.drain(..) {
        chunk.extend_from_slice(&frame);
    }
    chunk.freeze()
}
