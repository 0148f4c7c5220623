//! stream-gateway: `GET /api/order/stream` serves order events over SSE, each connection with
//! its own cursor.
//!
//! - [`config`]: the clap configuration and the flags this service adds.
//! - [`feed`]: where events come from: the hub (one tail reader, a shared ring) or polling.
//! - [`delivery`]: one connection's cursor and the loop that writes its stream.
//! - [`fast_path`]: the same stream served straight on the socket for HTTP/1.1 clients.
//! - [`fan_out`]: one writer that puts each new event into every caught-up fast-path socket,
//!   grouped by the customer a stream may see.
//! - [`routes`]: the SSE handler (access, start position, limits, headers) and the demo page.
//! - [`redis`]: connecting the Redis event log.
//! - [`app`]: `Application`: builds the feed, binds, serves until stopped.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod delivery;
pub mod fan_out;
pub mod fast_path;
pub mod feed;
pub mod redis;
pub mod routes;

pub use app::Application;
pub use config::{Config, DeliveryMode, GatewayArgs};
