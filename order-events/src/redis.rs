//! Redis for the Redis backends: settings, key names, connections, the Lua scripts they run and
//! how Redis failures map onto backend errors.
//!
//! - `settings`: where Redis is (`RedisSettings`) and what the stream retains (`RetentionSettings`).
//! - `keys`: `StreamKeys`, every key name derived from the stream key.
//! - `connection`: the fred pool, dedicated clients and write deadlines on Redis' clock.
//! - `scripts`: the Lua scripts (`scripts/*.lua`), run by their SHA-1.
//! - `failure`, `reply`: Redis errors and replies, read into backend terms.

mod connection;
mod failure;
mod keys;
mod reply;
pub(crate) mod scripts;
mod settings;

pub(crate) use connection::{RedisConnection, wait_until_connected};
pub(crate) use failure::Failure;
pub use keys::StreamKeys;
pub(crate) use reply::{position, text};
pub use settings::{DEFAULT_STREAM_KEY, RedisSettings, RetentionSettings};
