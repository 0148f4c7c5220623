//! The stored order: what `POST` returns, what `GET` returns and what its event carries.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Currency, OrderRequest};
use crate::position::StreamPosition;

/// A stored order: what `POST` returns, what `GET` returns and what the event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: Uuid,
    pub customer_id: String,
    pub currency: Currency,
    pub items: Vec<OrderLine>,
    pub total: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub sku: String,
    pub quantity: u64,
    pub unit_price: String,
    pub line_total: String,
}

impl Order {
    /// Builds the order a validated request describes, stamped now with a fresh time-ordered id.
    pub fn create(request: &OrderRequest, now: OffsetDateTime) -> Self {
        let currency = request.currency;
        let items = request
            .items
            .iter()
            .map(|item| OrderLine {
                sku: item.sku.clone(),
                quantity: item.quantity,
                unit_price: currency.format(item.unit_price_minor),
                // Bounded by MAX_UNIT_PRICE_MINOR × MAX_QUANTITY, far below i64::MAX.
                line_total: currency.format(item.unit_price_minor.saturating_mul(item.quantity as i64)),
            })
            .collect();
        let now = now
            .replace_nanosecond(now.millisecond() as u32 * 1_000_000)
            .unwrap_or(now);
        Self {
            order_id: Uuid::now_v7(),
            customer_id: request.customer_id.clone(),
            currency,
            items,
            total: currency.format(request.total_minor().unwrap_or(0)),
            created_at: now,
        }
    }

    /// The compact JSON the event and the REST responses carry.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers and a UUID cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The `201 Created` / idempotent-replay body: the order plus the id of its `OrderCreated` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedOrder {
    #[serde(flatten)]
    pub order: Order,
    pub event_id: StreamPosition,
}
