//! `OrderStore`: where `order-api` keeps orders; creating one also appends its `OrderCreated`
//! event and records its idempotency key, all in one atomic step.

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::{CreatedOrder, Order, OrderCreated, OrderRequest};

pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A client-chosen `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<Self, InvalidIdempotencyKey> {
        let valid =
            !text.is_empty() && text.len() <= MAX_IDEMPOTENCY_KEY_LEN && text.bytes().all(|b| b.is_ascii_graphic());
        valid.then(|| Self(text.to_owned())).ok_or(InvalidIdempotencyKey)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Identifies what a request asked for, so a key reused with another request is refused: the
/// SHA-256 of the validated request as JSON (`["customer","EUR",[["SKU",2,1250]]]`). Every
/// string is quoted and escaped and every list delimited, so two different requests never hash
/// the same bytes.
pub fn request_fingerprint(request: &OrderRequest) -> String {
    let items: Vec<(&str, u64, i64)> = request
        .items
        .iter()
        .map(|item| (item.sku.as_str(), item.quantity, item.unit_price_minor))
        .collect();
    let canonical = (request.customer_id.as_str(), request.currency.code(), items);
    // Serializing strings and integers into memory cannot fail.
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// Everything one `POST /api/order` writes.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order: Order,
    pub event: OrderCreated,
    /// The key and the request's fingerprint. A key belongs to the order's customer: the same
    /// key sent for another customer is another key (it neither conflicts nor replays).
    pub idempotency: Option<(IdempotencyKey, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The order and its event were written now.
    Created(CreatedOrder),
    /// The idempotency key was seen before with the same request: the original order.
    Replayed(CreatedOrder),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the order store is unavailable: {0}")]
    Unavailable(String),
    #[error("the order store did not answer in time")]
    Timeout,
    #[error("the idempotency key was already used with a different request")]
    IdempotencyConflict,
    #[error("the order store returned malformed data: {0}")]
    Malformed(String),
}

#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    async fn create(&self, new: NewOrder) -> Result<CreateOutcome, StoreError>;
    async fn get(&self, id: Uuid) -> Result<Option<CreatedOrder>, StoreError>;
    async fn check_ready(&self) -> Result<(), StoreError>;
    fn backend(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, LineItem};

    fn request(customer_id: &str, items: &[(&str, u64, i64)]) -> OrderRequest {
        OrderRequest {
            customer_id: customer_id.to_owned(),
            currency: Currency::parse("EUR").unwrap(),
            items: items
                .iter()
                .map(|&(sku, quantity, unit_price_minor)| LineItem {
                    sku: sku.to_owned(),
                    quantity,
                    unit_price_minor,
                })
                .collect(),
        }
    }

    #[test]
    fn requests_whose_fields_run_together_alike_have_different_fingerprints() {
        // Fed field after field into one hash, these two were the same bytes.
        let first = request("c", &[("A", 1, 0x45_5552), ("B", 1, 1)]);
        let second = request("c\0EUR\0A\0\0\0\0\0\0\0\u{1}\0\0\0\0", &[("B", 1, 1)]);
        assert_ne!(request_fingerprint(&first), request_fingerprint(&second));
        // Splitting one field differently is another request as well.
        assert_ne!(
            request_fingerprint(&request("c", &[("AB", 1, 1)])),
            request_fingerprint(&request("c", &[("A", 1, 1), ("B", 1, 1)]))
        );
    }

    #[test]
    fn the_same_request_has_the_same_fingerprint() {
        let fingerprint = request_fingerprint(&request("c", &[("A", 2, 1250)]));
        assert_eq!(fingerprint, request_fingerprint(&request("c", &[("A", 2, 1250)])));
        assert_eq!(fingerprint.len(), 64);
        assert_ne!(fingerprint, request_fingerprint(&request("c", &[("A", 2, 1251)])));
    }
}
