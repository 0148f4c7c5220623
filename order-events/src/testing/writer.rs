//! Creating orders in tests as a real client does: every POST carries an `Idempotency-Key`, and
//! a 503 (the store was briefly unavailable, nothing was written) is retried with the same key.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// How long a writer keeps retrying 503s before the test fails.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// POSTs `body` to `url` under a fresh `Idempotency-Key`, retrying 503s and transport errors
/// with the same key, and returns the body of the 201 (or of the 200 that replays it when an
/// earlier attempt was written after all). Panics on any other status.
pub async fn post_order(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + RETRY_FOR;
    let mut delay = Duration::from_millis(50);
    loop {
        let sent = client.post(url).header("idempotency-key", &key).json(body).send().await;
        let retry_after = match sent {
            Ok(response) if response.status() == 201 || response.status() == 200 => {
                return response.json().await.expect("order JSON");
            }
            Ok(response) if response.status() == 503 => response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs),
            Ok(response) => {
                let status = response.status();
                panic!("POST {url}: {status}: {}", response.text().await.unwrap_or_default());
            }
            // The connection failed: whether the order was written is unknown, so the same key
            // goes again.
            Err(_) => None,
        };
        assert!(Instant::now() < deadline, "POST {url} kept failing for {RETRY_FOR:?}");
        tokio::time::sleep(retry_after.unwrap_or(delay).min(Duration::from_secs(1))).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}
