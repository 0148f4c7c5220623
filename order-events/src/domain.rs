//! Orders: the request a client sends, its validation field by field, and the stored order.
//!
//! - `validation`: `OrderRequest` parsed from a JSON body, with a `FieldError` per bad field.
//! - `currency`, `money`: ISO 4217 codes and amounts in their minor units.
//! - `order`: the stored `Order` and the `CreatedOrder` a create returns.
//! - `event`: `OrderCreated`, the event appended with each order.

mod currency;
mod event;
mod money;
mod order;
mod validation;

pub use currency::Currency;
pub use event::OrderCreated;
pub use order::{CreatedOrder, Order, OrderLine};
pub use validation::{
    FieldError, LineItem, MAX_CUSTOMER_ID_CHARS, MAX_ITEMS, MAX_QUANTITY, MAX_SKU_CHARS, MAX_UNIT_PRICE_MINOR,
    OrderRequest,
};
