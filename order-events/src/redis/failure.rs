//! A Redis failure, classified once, before each backend turns it into its own error type.

use fred::error::{Error as FredError, ErrorKind};

use crate::event_log::LogError;
use crate::order_store::StoreError;

/// A Redis failure, before each backend turns it into its own error type.
#[derive(Debug)]
pub(crate) enum Failure {
    Unavailable(String),
    /// Redis answered the command with an `ERR` reply: the same command will fail again.
    Refused(String),
    Timeout,
    Malformed(String),
}

impl From<FredError> for Failure {
    fn from(error: FredError) -> Self {
        match error.kind() {
            ErrorKind::Timeout => Failure::Timeout,
            // A reply of the wrong shape or type is a data problem that retrying will not fix.
            ErrorKind::InvalidArgument | ErrorKind::Parse | ErrorKind::Protocol | ErrorKind::NotFound => {
                Failure::Malformed(error.to_string())
            }
            // An `ERR` reply (say `ERR Invalid stream ID`) is about the command, not the server.
            ErrorKind::Unknown if error.details().starts_with("ERR") => Failure::Refused(error.to_string()),
            // Connection loss, fail-fast refusals while reconnecting, cluster and sentinel
            // trouble, LOADING, BUSY, READONLY...: all transient from a request's point of view.
            _ => Failure::Unavailable(error.to_string()),
        }
    }
}

impl From<Failure> for LogError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unavailable(message) => LogError::Unavailable(message),
            Failure::Refused(message) => LogError::Refused(message),
            Failure::Timeout => LogError::Timeout,
            Failure::Malformed(message) => LogError::Malformed(message),
        }
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            // A write Redis refused wrote nothing; the caller may retry (503).
            Failure::Unavailable(message) | Failure::Refused(message) => StoreError::Unavailable(message),
            Failure::Timeout => StoreError::Timeout,
            Failure::Malformed(message) => StoreError::Malformed(message),
        }
    }
}
