//! The Lua scripts the Redis backends run (one `scripts/*.lua` file each), and running them by
//! their SHA-1.

use std::sync::OnceLock;

use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::Value;

use super::{RedisConnection, RetentionSettings};

/// A Lua script run by its SHA-1. The hash is learned from `SCRIPT LOAD` on first use; a server
/// that lost its script cache (a restart flushes it) answers `NOSCRIPT` and gets the source once
/// through `EVAL`, which caches it again.
pub(crate) struct LuaScript {
    source: &'static str,
    sha: OnceLock<String>,
}

impl LuaScript {
    pub(crate) const fn new(source: &'static str) -> Self {
        Self {
            source,
            sha: OnceLock::new(),
        }
    }

    pub(crate) async fn run(
        &self,
        redis: &RedisConnection,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, FredError> {
        let client = redis.client().with_options(redis.options());
        let sha = match self.sha.get() {
            Some(sha) => sha.clone(),
            None => {
                let sha: String = client.script_load(self.source).await?;
                // Every server computes the same hash for the same source, so a race is harmless.
                let _ = self.sha.set(sha.clone());
                sha
            }
        };
        match client.evalsha::<Value, _, _, _>(sha, keys.clone(), args.clone()).await {
            Err(error) if error.details().starts_with("NOSCRIPT") => client.eval(self.source, keys, args).await,
            result => result,
        }
    }
}

/// A script that appends to the stream: `scripts/retention.lua` followed by the script itself.
///
/// The shared part reads Redis' clock (a script refuses a write past its deadline with
/// `{'expired', now_ms}`) and applies retention recording exactly the largest id it removes.
/// Redis' own `max-deleted-entry-id` is not updated by `XADD MAXLEN` or `XTRIM` (7.0), so a reader
/// could not tell "your events were trimmed" from "there were none": the scripts trim themselves
/// and keep the largest removed id in the trim marker. Ids are compared as decimal strings, which
/// stays exact past 2^53 where Lua's numbers would not.
macro_rules! appending_script {
    ($file:literal) => {
        LuaScript::new(concat!(include_str!("scripts/retention.lua"), include_str!($file)))
    };
}

/// The arguments every appending script starts with: the write deadline (on Redis' clock) and
/// the retention bounds.
pub(crate) fn append_args(deadline_ms: u64, retention: &RetentionSettings) -> Vec<String> {
    vec![
        deadline_ms.to_string(),
        retention.max_len.to_string(),
        (retention.max_age.as_millis() as u64).to_string(),
    ]
}

/// XADD one event and apply retention, unless Redis' clock is past the caller's deadline.
/// KEYS: stream, trim marker, epoch. ARGV: deadline ms, max_len, max_age ms, data, customer,
/// traceparent, epoch to record if the stream has none.
pub(crate) static APPEND: LuaScript = appending_script!("scripts/append.lua");

/// Create one order: check the idempotency key, append the event, store the order and apply
/// retention, unless Redis' clock is past the caller's deadline.
/// KEYS: stream, trim marker, the new order's hash, the idempotency record (only touched when
/// ARGV[7] is '1', but always named so that a cluster routes every key to one slot), epoch.
/// ARGV: deadline ms, max_len, max_age ms, order JSON, customer, traceparent, use key ('1'/'0'),
/// fingerprint, idempotency TTL ms (0 = no expiry), order id, order key prefix, epoch to record
/// if the stream has none.
///
/// A replay reads the original order's hash, whose name is built here from its id: it shares the
/// stream key's hash tag, so it lives on the script's slot (cluster URLs require the tag).
pub(crate) static CREATE_ORDER: LuaScript = appending_script!("scripts/create_order.lua");

/// The trim marker, the entries after a position, the epoch and whether the position is an
/// entry of this stream (else the newest entry before it), read atomically: read apart, a trim
/// or a failover in between would hide lost events or report a loss that did not happen.
/// KEYS: stream, trim marker, epoch. ARGV: after id, count, '1' to read entries ('0': only
/// check the position; `(` of the largest id is not a valid range start).
pub(crate) static READ_AFTER: LuaScript = LuaScript::new(include_str!("scripts/read_after.lua"));

/// Replaces the epoch unless someone else already did. KEYS: epoch. ARGV: the epoch seen ('' for
/// none), the new one. Returns the epoch in force.
pub(crate) static RENEW_EPOCH: LuaScript = LuaScript::new(include_str!("scripts/renew_epoch.lua"));

/// The stream's last generated id, which stays put when entries are trimmed; nil without a stream.
pub(crate) static LAST_POSITION: LuaScript = LuaScript::new(include_str!("scripts/last_position.lua"));

/// Redis' clock, read on the node that holds the stream (its ids are stamped with it).
pub(crate) static SERVER_TIME: LuaScript = LuaScript::new(include_str!("scripts/server_time.lua"));

/// The newest entries (optionally one customer's, older than a position), the stream's last id
/// and its epoch, in one atomic step: no order can be created between the page and its position.
/// KEYS: stream, epoch. ARGV: start ('+' or '(' .. id), limit, customer ('' for all), most
/// entries to scan. Returns {position, epoch, {id, data, ...}, last id scanned or false when the
/// stream has nothing older}.
pub(crate) static SNAPSHOT: LuaScript = LuaScript::new(include_str!("scripts/snapshot.lua"));
