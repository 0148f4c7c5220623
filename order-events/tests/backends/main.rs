//! The event log and order store backends held to one set of expectations: the conformance suites
//! run against the memory backends and Redis alike; what only Redis promises (write deadlines,
//! expiring idempotency keys, outages, retention bookkeeping, sentinel URLs) has modules of its
//! own. Every Redis test starts its own `redis-server` on a free port.
#![allow(clippy::unwrap_used)]

mod conformance;
mod helpers;
mod redis_log;
mod redis_store;
mod sentinel;
