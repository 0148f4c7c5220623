//! Redis Streams backend of the event log.
