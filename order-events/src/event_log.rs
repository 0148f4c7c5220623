//! `EventLog`: the narrow interface over where events live (append, read after a position,
//! follow the tail), with its backends as sibling modules.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::OrderCreated;
use crate::frame::EncodedEvent;
use crate::position::{Epoch, StreamPosition};

/// Events read after a position, with what the log knows about that position, read in the same
/// atomic step.
#[derive(Debug, Default)]
pub struct LogPage {
    /// In position order, all strictly after the requested position.
    pub events: Vec<EncodedEvent>,
    /// Set when events after the requested position were dropped by retention: the page then
    /// starts at the oldest event still held (`None` if nothing is held).
    pub lost: Option<Lost>,
    /// Whether the requested position belongs to the log's current history.
    pub cursor: CursorCheck,
    /// The log's current epoch (`None` before anything recorded one).
    pub epoch: Option<Epoch>,
    /// The retention marker: every event up to and including it was trimmed.
    pub trimmed_through: Option<StreamPosition>,
}

/// Whether a position read after is one of the log's own: the start (`0-0`), a position at or
/// before the retention marker, or the id of an event the log holds. A cursor that named an event
/// its client received and is none of these comes from a history the log no longer has.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum CursorCheck {
    #[default]
    Held,
    /// Not a position of this history. `resume_after` is the newest position at or before it
    /// that is (an event held, the retention marker, or `0-0`): what the log and the cursor's
    /// history may still have in common.
    Missing { resume_after: StreamPosition },
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
    /// The store answered the read with an error: reading again from the same position fails
    /// again.
    #[error("the event store refused the read: {0}")]
    Refused(String),
    #[error("the event store returned malformed data: {0}")]
    Malformed(String),
}

impl LogError {
    /// Whether trying the same read again can succeed (the store was down or slow), as opposed
    /// to a read the store refuses or answers with data nobody can read.
    pub fn is_transient(&self) -> bool {
        matches!(self, LogError::Unavailable(_) | LogError::Timeout)
    }
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

    /// Replaces the epoch with a new one, unless it is no longer `seen` (another reader replaced
    /// it first). Returns the epoch now in force. Called by a reader that found its own position
    /// gone from the log: the history it followed was lost.
    async fn renew_epoch(&self, seen: Option<&Epoch>) -> Result<Option<Epoch>, LogError> {
        Ok(seen.cloned())
    }

    /// Whether the backend can serve requests now.
    async fn check_ready(&self) -> Result<(), LogError>;

    /// A short name for logs and metrics.
    fn backend(&self) -> &'static str;
}
