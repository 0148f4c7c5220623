//! The production path end to end: order-api writing to Redis Streams, several stream-gateway
//! processes serving SSE from it, with gateways killed and Redis stopped mid-run.
#![allow(clippy::unwrap_used)]

mod delivery;
mod drain;
mod helpers;
mod history;
mod outages;
mod retention;
mod snapshot;
