//! `Feed`: where a connection's events come from. In hub mode one `TailReader` per process
//! follows the log into a shared `EventRing`; in poll mode each connection reads the log itself.

use std::sync::Arc;
use std::time::Duration;

use order_events::event_log::memory::{MemoryLog, wall_clock_ms};
use order_events::event_log::{CursorCheck, EventLog, LogError};
use order_events::metrics::Metrics;
use order_events::position::{Epoch, StreamPosition};
use order_events::ring::{EventRing, RingBounds};
use tokio_util::sync::CancellationToken;

pub enum Feed {
    /// Connections read `ring`; cursors behind it read `log` until they reach it.
    Hub {
        ring: Arc<EventRing>,
        log: Arc<dyn EventLog>,
    },
    /// Connections read `log` every `interval`.
    Poll {
        log: Arc<dyn EventLog>,
        interval: Duration,
        count: usize,
    },
}

impl Feed {
    /// The memory log's ring is the whole log: connections read it directly.
    pub fn memory(log: Arc<MemoryLog>) -> Self {
        Feed::Hub { ring: log.ring(), log }
    }

    /// A ring fed by a tail reader that runs until `stop`.
    pub fn hub(log: Arc<dyn EventLog>, capacity: usize, stop: CancellationToken, metrics: Arc<Metrics>) -> Self {
        // Until the reader knows where the log ends, every cursor is "behind" and reads the log.
        let ring = Arc::new(EventRing::new(
            RingBounds {
                capacity,
                max_age: None,
            },
            StreamPosition::MAX,
        ));
        tokio::spawn(
            TailReader {
                log: log.clone(),
                ring: ring.clone(),
                metrics,
            }
            .run(stop),
        );
        Feed::Hub { ring, log }
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        match self {
            Feed::Hub { log, .. } | Feed::Poll { log, .. } => log,
        }
    }

    /// The position a connection that wants "only new events" starts from.
    pub async fn current_end(&self) -> Result<StreamPosition, LogError> {
        match self {
            Feed::Hub { ring, log } => {
                let newest = ring.newest();
                if newest == StreamPosition::MAX {
                    log.last_position().await
                } else {
                    Ok(newest)
                }
            }
            Feed::Poll { log, .. } => log.last_position().await,
        }
    }

    pub fn is_following(&self) -> bool {
        match self {
            Feed::Hub { ring, .. } => ring.newest() != StreamPosition::MAX,
            Feed::Poll { .. } => true,
        }
    }
}

/// Follows the end of the log with one blocking read at a time and appends what it reads to
/// the ring, so the log's load does not grow with the number of connections.
struct TailReader {
    log: Arc<dyn EventLog>,
    ring: Arc<EventRing>,
    metrics: Arc<Metrics>,
}

const FOLLOW_WAIT: Duration = Duration::from_secs(5);
const FOLLOW_BATCH: usize = 1000;

impl TailReader {
    async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::default();
        let mut last = loop {
            match self.log.last_position().await {
                Ok(position) => break position,
                Err(error) => {
                    tracing::warn!(%error, "tail reader cannot find the end of the log; retrying");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                }
            }
        };
        self.ring.restart(last);
        tracing::info!(start = %last, backend = self.log.backend(), "tail reader following the log");
        backoff.reset();
        // The epoch of the history the ring holds; `None` until the first read tells.
        let mut epoch: Option<Option<Epoch>> = None;
        loop {
            let page = tokio::select! {
                _ = stop.cancelled() => return,
                page = self.log.follow(last, FOLLOW_BATCH, FOLLOW_WAIT) => page,
            };
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "tail read failed; retrying");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            if let CursorCheck::Missing { resume_after } = page.cursor {
                // The event this reader read last is gone, and not by retention: the history
                // it followed was lost (a restart without persistence, a failover to a replica
                // that missed writes). A new epoch tells every other reader; the ring restarts
                // where the two histories part, and every cursor is checked again.
                let renewed = match self.log.renew_epoch(page.epoch.as_ref()).await {
                    Ok(renewed) => renewed,
                    Err(error) => {
                        tracing::warn!(%error, "cannot record the new epoch; retrying");
                        if !backoff.wait(&stop).await {
                            return;
                        }
                        continue;
                    }
                };
                tracing::warn!(previous = %last, %resume_after, epoch = ?renewed, "the log lost events this reader had read; restarting the ring in a new epoch");
                self.metrics.history_changes.inc();
                last = resume_after;
                epoch = Some(renewed);
                self.ring.restart(last);
                continue;
            }
            match &epoch {
                Some(known) if *known != page.epoch => {
                    // Another reader found the history lost, or the stream was recreated with a
                    // new epoch: this reader's position is still held, but cursors in the ring
                    // may not be. Restart the ring so every connection is checked again.
                    tracing::warn!(previous = ?known, epoch = ?page.epoch, position = %last, "the stream's epoch changed; restarting the ring");
                    self.metrics.history_changes.inc();
                    self.ring.restart(last);
                    epoch = Some(page.epoch.clone());
                    continue;
                }
                Some(_) => {}
                None => epoch = Some(page.epoch.clone()),
            }
            if let Some(lost) = page.lost {
                // The reader itself fell behind retention (cut off from Redis longer than the
                // stream keeps events): restart the ring after the gap, so cursors that were in
                // it go to the log and get their reset there.
                tracing::warn!(previous = %last, through = %lost.through, "tail reader fell behind retention; restarting the ring");
                last = last.max(lost.through);
                self.ring.restart(last);
            }
            if let Some(marker) = page.trimmed_through {
                // What Redis trimmed leaves the ring too: a cursor gets `reset` or not by the
                // log's retention, whatever this ring still holds.
                self.ring.trim_through(marker);
            }
            if !page.events.is_empty() {
                trace_fan_out(&page.events);
                if let Some(newest) = page.events.last() {
                    last = newest.position;
                }
                self.ring.extend(page.events, wall_clock_ms());
                self.metrics.event_log_retained.set(self.ring.len() as i64);
            }
        }
    }
}

/// One span per event entering this process' ring, linked to the request that created it, so
/// a trace shows where each order went.
fn trace_fan_out(events: &[order_events::frame::EncodedEvent]) {
    use opentelemetry::trace::TraceContextExt;
    use order_events::telemetry::context_from_traceparent;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    for event in events {
        let span = tracing::info_span!("order_event.fan_out", event_id = %event.position);
        if let Some(traceparent) = &event.traceparent {
            span.add_link(context_from_traceparent(traceparent).span().span_context().clone());
        }
    }
}

/// Exponential backoff from 50 ms to 2 s.
#[derive(Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn delay(&mut self) -> Duration {
        let delay = Duration::from_millis(50u64.saturating_mul(1 << self.attempt.min(6))).min(Duration::from_secs(2));
        self.attempt += 1;
        delay
    }

    /// Waits the next delay; false when stopped meanwhile.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.delay();
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}
