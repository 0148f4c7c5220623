//! Reading values out of Redis replies.

use fred::types::Value;

use super::Failure;
use crate::position::StreamPosition;

/// The text of a bulk string reply, if it is valid UTF-8.
pub(crate) fn text(value: &Value) -> Option<&str> {
    match value {
        Value::String(text) => Some(text),
        Value::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

/// A stream entry id from a reply.
pub(crate) fn position(value: &Value) -> Result<StreamPosition, Failure> {
    let id = text(value).ok_or_else(|| Failure::Malformed(format!("expected a stream id, got {value:?}")))?;
    StreamPosition::parse(id).map_err(|e| Failure::Malformed(e.to_string()))
}
