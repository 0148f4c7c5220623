//! stream-gateway: `GET /api/order/stream` serves order events over SSE, each connection with
//! its own cursor.
//!
//! - [`config`]: the clap configuration and the flags this service adds.
//! - [`feed`]: where events come from: the hub (one tail reader, a shared ring) or polling.
//! - [`opening`]: opening a stream on either transport: query and headers read once, access,
//!   start position and limits checked, and one answer: the stream's head, or a problem.
//! - [`delivery`]: one connection's cursor and the loop that writes its stream.
//! - [`routes`]: the stream as hyper serves it (HTTP/2, and HTTP/1.1 after a connection's first
//!   request) and the demo page.
//! - [`fast_path`]: the stream served straight on the socket to HTTP/1.1 clients. It plugs into
//!   `order_events::server` as its [`Interceptor`](order_events::server::Interceptor) (`app`
//!   passes it to `Server::bind`): the server offers it each connection's first request head
//!   before hyper sees the connection.
//! - [`fan_out`]: one writer that puts each new event into every caught-up fast-path socket,
//!   grouped by the customer a stream may see.
//! - [`redis`]: connecting the Redis event log.
//! - [`app`]: `Application`: builds the feed, binds, serves until stopped.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod delivery;
pub mod fan_out;
pub mod fast_path;
pub mod feed;
pub mod opening;
pub mod redis;
pub mod routes;

pub use app::Application;
pub use config::{Config, DeliveryMode, GatewayArgs};
