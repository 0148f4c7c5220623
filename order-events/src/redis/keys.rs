//! Key names: every key derives from the stream key, so that its hash tag covers them all.

use uuid::Uuid;

/// Every key name, derived from the stream key so that its hash tag covers them all.
#[derive(Clone, Debug)]
pub struct StreamKeys {
    stream: String,
    trimmed: String,
    epoch: String,
    order_prefix: String,
    idempotency_prefix: String,
}

impl StreamKeys {
    pub fn new(stream_key: &str) -> Self {
        Self {
            stream: stream_key.to_owned(),
            trimmed: format!("{stream_key}:trimmed"),
            epoch: format!("{stream_key}:epoch"),
            order_prefix: format!("{stream_key}:order:"),
            idempotency_prefix: format!("{stream_key}:idem:"),
        }
    }

    /// The stream of `OrderCreated` events.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The largest entry id retention ever removed from the stream.
    pub fn trimmed(&self) -> &str {
        &self.trimmed
    }

    /// The stream's epoch: names its current history (see [`crate::position::Epoch`]).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The hash holding one order (`order`, `eventId`).
    pub fn order(&self, id: Uuid) -> String {
        format!("{}{id}", self.order_prefix)
    }

    pub(crate) fn order_prefix(&self) -> &str {
        &self.order_prefix
    }

    /// The record of one customer's idempotency key (`<fingerprint> <order id>`). The customer
    /// id is length-prefixed (in bytes), so no customer's keys can be named like another's.
    pub fn idempotency(&self, customer_id: &str, key: &str) -> String {
        format!("{}{}:{customer_id}:{key}", self.idempotency_prefix, customer_id.len())
    }
}

/// Whether Redis Cluster would put `key` and every key derived from it on one slot: it hashes only
/// the first non-empty `{...}` of a key.
pub(crate) fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::DEFAULT_STREAM_KEY;

    #[test]
    fn derives_every_key_from_the_stream_key() {
        let keys = StreamKeys::new(DEFAULT_STREAM_KEY);
        let id = Uuid::nil();
        assert_eq!(keys.stream(), "{orders}:events");
        assert_eq!(keys.trimmed(), "{orders}:events:trimmed");
        assert_eq!(keys.epoch(), "{orders}:events:epoch");
        assert_eq!(
            keys.order(id),
            "{orders}:events:order:00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(keys.idempotency("c-1", "k-1"), "{orders}:events:idem:3:c-1:k-1");
        assert_ne!(keys.idempotency("a:1", "b"), keys.idempotency("a", "1:b"));
    }

    #[test]
    fn recognises_hash_tags_as_redis_cluster_does() {
        assert!(has_hash_tag("{orders}:events"));
        assert!(has_hash_tag("app:{orders}"));
        assert!(!has_hash_tag("orders:events"));
        assert!(!has_hash_tag("{}:events"));
        assert!(!has_hash_tag("{orders"));
    }
}
