//! order-api: `POST /api/order` validates an order and stores it together with its
//! `OrderCreated` event; `GET /api/order/{id}` reads it back.
//!
//! - [`config`]: the clap configuration of the binary and the flags this service adds.
//! - [`routes`]: the HTTP handlers and `router(state)`.
//! - [`redis`]: connecting the Redis order store.
//! - [`app`]: `Application`: builds the store, binds, serves until stopped.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod redis;
pub mod routes;

pub use app::Application;
pub use config::{Config, OrderApiArgs};
pub use routes::{ApiState, router};
