//! Test support for the workspace's integration tests (feature `testing`).

mod child_log;
mod polling;
mod redis_server;
mod sentinel;
mod sse_client;
mod transport;
mod writer;

pub use child_log::ChildLog;
pub use polling::eventually;
pub use redis_server::{RedisServer, free_port};
pub use sentinel::Sentinel;
pub use sse_client::{Sse, SseClient};
pub use transport::Transport;
pub use writer::post_order;
