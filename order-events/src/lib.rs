//! The shared contract of sse-orders: what an order is, how events are identified, framed,
//! stored and read, and the pieces both services run on.
//!
//! - [`auth`]: bearer JWTs (secret, public key, JWKS), scopes and the customer a token is
//!   confined to; the `ReadAccess`/`WriteAccess` extractors.
//! - [`cors`]: which browser origins may call the API, preflights included.
//! - [`domain`]: order requests, validation and the stored `Order`.
//! - [`position`]: `StreamPosition`, the `<ms>-<seq>` event id, and the clock that makes them.
//! - [`frame`]: SSE frames, encoded once per event and shared by every connection.
//! - [`ring`]: `EventRing`, the bounded window of recent events readers wait on.
//! - [`event_log`]: the `EventLog` trait with its `memory` and `redis` backends.
//! - [`order_store`]: the `OrderStore` trait (order + event + idempotency key, atomically).
//! - [`redis`]: Redis settings, key names, fred connections and the Lua scripts (`redis/scripts/*.lua`)
//!   the Redis backends share.
//! - [`problem`]: the one `application/problem+json` error body.
//! - [`strict_json`]: request bodies parsed with repeated keys refused.
//! - [`config`]: flag groups both binaries flatten into their clap config.
//! - [`metrics`], [`telemetry`]: Prometheus registry, tracing and OpenTelemetry export.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics` and the HTTP metrics middleware.
//! - `testing` (feature `testing`): a private `redis-server` per test.
//! - [`server`], [`shutdown`]: binding, serving HTTP/1.1 and h2c, and draining on a signal.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod cors;
pub mod domain;
pub mod event_log;
pub mod frame;
pub mod metrics;
pub mod ops;
pub mod order_store;
pub mod position;
pub mod problem;
pub mod redis;
pub mod ring;
pub mod server;
pub mod shutdown;
pub mod strict_json;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use position::StreamPosition;
