//! `OrderCreated`, the event appended with every new order.

use super::Order;

/// An `OrderCreated` event ready to append: the payload is the order's JSON.
#[derive(Debug, Clone)]
pub struct OrderCreated {
    pub customer_id: String,
    pub payload: String,
    pub traceparent: Option<String>,
}

impl OrderCreated {
    pub fn of(order: &Order, traceparent: Option<String>) -> Self {
        Self {
            customer_id: order.customer_id.clone(),
            payload: order.to_json(),
            traceparent,
        }
    }
}
