//! `EventLog`: the narrow interface over where events live (append, read after a position,
//! follow the tail), with its backends as sibling modules.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::OrderCreated;
use crate::frame::EncodedEvent;
use crate::position::StreamPosition;

/// Events read after a position.
#[derive(Debug, Default)]
pub struct LogPage {
    /// In position order, all strictly after the requested position.
    pub events: Vec<EncodedEvent>,
    /// Set when events after the requested position were dropped by retention: the page then
    /// starts at the oldest event still held (`None` if nothing is held).
    pub lost: Option<Lost>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// The oldest event still held, if any.
    pub oldest: Option<StreamPosition>,
    /// Every event up to and including this position is gone: a reader continues after it.
    pub through: StreamPosition,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    #[error("the event store timed out")]
    Timeout,
    #[error("the event store returned malformed data: {0}")]
    Malformed(String),
}

#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends one event and returns its position.
    async fn append(&self, event: OrderCreated) -> Result<StreamPosition, LogError>;

    /// At most `limit` events strictly after `after`, oldest first, telling whether retention
    /// dropped any event after `after`.
    async fn read_after(&self, after: StreamPosition, limit: usize) -> Result<LogPage, LogError>;

    /// Like `read_after`, but waits up to `wait` for the first event when none is there yet.
    async fn follow(&self, after: StreamPosition, limit: usize, wait: Duration) -> Result<LogPage, LogError>;

    /// The newest position in the log (`StreamPosition::ZERO` when it is empty).
    async fn last_position(&self) -> Result<StreamPosition, LogError>;

    /// The backend's clock in milliseconds since the epoch: ids are stamped with it, so a replay
    /// window must be measured on it rather than on this process' clock.
    async fn now_ms(&self) -> Result<u64, LogError> {
        Ok(memory::wall_clock_ms())
    }

    /// Whether the backend can serve requests now.
    async fn check_ready(&self) -> Result<(), LogError>;

    /// A short name for logs and metrics.
    fn backend(&self) -> &'static str;
}
