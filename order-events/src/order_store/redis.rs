//! Orders in Redis, written atomically with their event.
