//! Test support for the workspace's integration tests (feature `testing`).

mod redis_server;
mod sse_client;

pub use redis_server::{RedisServer, free_port};
pub use sse_client::{Sse, SseClient};
