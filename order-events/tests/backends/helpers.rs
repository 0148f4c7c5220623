//! What the backend tests share: private Redis and Sentinel processes, settings, sample orders
//! and events, and polling with a deadline.

use std::process::Command;
use std::time::Duration;

use order_events::domain::{Order, OrderCreated, OrderRequest};
use order_events::order_store::{IdempotencyKey, NewOrder, request_fingerprint};
use order_events::redis::{DEFAULT_STREAM_KEY, RedisSettings, RetentionSettings};
pub use order_events::testing::{RedisServer, Sentinel, eventually};
use serde_json::json;
use time::OffsetDateTime;

pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

pub fn settings(url: &str) -> RedisSettings {
    RedisSettings {
        url: url.to_owned(),
        stream_key: DEFAULT_STREAM_KEY.to_owned(),
        command_timeout: COMMAND_TIMEOUT,
    }
}

/// Retention bounded by count only.
pub fn keep_last(max_len: u64) -> RetentionSettings {
    RetentionSettings {
        max_len,
        ..RetentionSettings::default()
    }
}

/// An event whose payload names its customer and a number, so every event differs.
pub fn event(customer: &str, n: usize) -> OrderCreated {
    OrderCreated {
        customer_id: customer.to_owned(),
        payload: json!({"customerId": customer, "n": n}).to_string(),
        traceparent: None,
    }
}

/// A fresh order for `customer` (a new id each time), optionally under an idempotency key.
pub fn new_order(customer: &str, sku: &str, idempotency_key: Option<&str>) -> NewOrder {
    let request = OrderRequest::parse(&json!({
        "customerId": customer,
        "currency": "EUR",
        "items": [{"sku": sku, "quantity": 2, "unitPrice": "9.99"}]
    }))
    .unwrap();
    let order = Order::create(&request, OffsetDateTime::now_utc());
    NewOrder {
        event: OrderCreated::of(
            &order,
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        ),
        idempotency: idempotency_key.map(|key| (IdempotencyKey::parse(key).unwrap(), request_fingerprint(&request))),
        order,
    }
}

/// Runs `redis-cli` with arguments that need not be UTF-8 (to write malformed entries).
pub fn cli_bytes(server: &RedisServer, args: &[&[u8]]) -> String {
    use std::os::unix::ffi::OsStrExt;
    let output = Command::new("redis-cli")
        .args(["-p", &server.port().to_string()])
        .args(args.iter().map(|arg| std::ffi::OsStr::from_bytes(arg)))
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
