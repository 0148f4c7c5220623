//! The event log and order store backends held to one set of expectations: the conformance cases
//! run against the memory log and Redis alike; what only Redis promises (the atomic order script,
//! write deadlines, outages, retention bookkeeping, sentinel URLs) has modules of its own. Every
//! Redis test starts its own `redis-server` on a free port.
#![allow(clippy::unwrap_used)]

mod conformance;
mod helpers;
mod redis_log;
mod redis_store;
mod sentinel;
