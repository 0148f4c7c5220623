//! The publisher: creates events on a fixed schedule through the publish endpoint, on its own
//! thread so that reading thousands of sockets never delays a send.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::config::{HttpUrl, PublishMode};
use crate::http::{PostConnection, with_customer};
use crate::ledger::{Clock, Ledger};
use crate::sse::SEQ_MARKER;

/// A POST that takes longer than this is counted as failed.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// What and how fast to publish.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub mode: PublishMode,
    pub url: HttpUrl,
    pub rate: f64,
    pub count: u64,
    /// Publishing stops at this point even if events remain: open-loop load is offered for a
    /// fixed time, and what a slow server did not take is reported as unsent.
    pub duration: Duration,
    pub max_outstanding: u32,
    pub event_bytes: usize,
    pub order_pad_items: u32,
    /// Events go to customers `c0`..`c{N-1}` in turn (an order names its customer in its body,
    /// a raw event in the publish URL's query); 0: all to one customer.
    pub customers: u32,
    /// Header lines every POST carries (the bearer token), or empty.
    pub extra_headers: String,
    /// Set by the caller to stop publishing early.
    pub abort: Arc<std::sync::atomic::AtomicBool>,
}

impl PublishPlan {
    /// The body of event `seq`.
    pub fn body(&self, seq: u64) -> Vec<u8> {
        match self.mode {
            PublishMode::Order => order_body(seq, self.order_pad_items, self.event_bytes, &self.customer_of(seq)),
            PublishMode::Raw | PublishMode::None => raw_body(seq, self.event_bytes),
        }
    }

    /// Where event `seq` is POSTed. A raw event spread over customers names its customer in a
    /// `customerId` query argument, which is how the reference servers route it.
    pub fn url_of(&self, seq: u64) -> Cow<'_, HttpUrl> {
        if self.mode != PublishMode::Raw || self.customers == 0 {
            return Cow::Borrowed(&self.url);
        }
        Cow::Owned(HttpUrl {
            path: with_customer(&self.url.path, &self.customer_of(seq)),
            ..self.url.clone()
        })
    }

    /// The customer of event `seq`.
    pub fn customer_of(&self, seq: u64) -> String {
        customer_name(self.customers, seq)
    }

    fn content_type(&self) -> &'static str {
        match self.mode {
            PublishMode::Order => "application/json",
            PublishMode::Raw | PublishMode::None => "text/plain",
        }
    }
}

/// `{"seq":"lgseq-N","pad":"...."}` padded to `size` bytes.
pub fn raw_body(seq: u64, size: usize) -> Vec<u8> {
    let head = format!("{{\"seq\":\"{SEQ_MARKER}{seq}\",\"pad\":\"");
    let mut body = head.into_bytes();
    let pad = size.saturating_sub(body.len() + 2);
    body.resize(body.len() + pad, b'x');
    body.extend_from_slice(b"\"}");
    body
}

/// An order whose first item's sku carries the marker, with padding items so the event
/// the server delivers is about `event_bytes` long. Sizes are those of sse-orders' event
/// JSON: about 215 bytes for an order of one item (ids, totals, time) and 62 bytes plus the
/// sku for each further item; the report shows the delivered mean.
/// Customer `c{n % customers}`, or `bench` when orders are not spread.
pub fn customer_name(customers: u32, n: u64) -> String {
    if customers == 0 {
        "bench".to_owned()
    } else {
        format!("c{}", n % u64::from(customers))
    }
}

pub fn order_body(seq: u64, pad_items: u32, event_bytes: usize, customer: &str) -> Vec<u8> {
    let mut items = vec![format!(
        "{{\"sku\":\"{SEQ_MARKER}{seq}\",\"quantity\":1,\"unitPrice\":\"1.00\"}}"
    )];
    if pad_items > 0 {
        let budget = event_bytes.saturating_sub(215) / pad_items as usize;
        // A sku is 1 to 64 characters.
        let sku_len = budget.saturating_sub(62).clamp(1, 64);
        for n in 0..pad_items {
            let mut sku = format!("pad{n}-");
            sku.extend(std::iter::repeat_n('x', sku_len.saturating_sub(sku.len())));
            items.push(format!("{{\"sku\":\"{sku}\",\"quantity\":1,\"unitPrice\":\"1.00\"}}"));
        }
    }
    format!(
        "{{\"customerId\":\"{customer}\",\"currency\":\"EUR\",\"items\":[{}]}}",
        items.join(",")
    )
    .into_bytes()
}

/// What the publisher saw.
#[derive(Debug)]
pub struct PublishStats {
    pub attempted: u64,
    pub accepted: u64,
    pub failures: std::collections::BTreeMap<String, u64>,
    /// Send to response, microseconds.
    pub post_latency_us: Histogram<u64>,
    /// Scheduled time to send time, microseconds: how long a POST waited for a free slot.
    pub schedule_lag_us: Histogram<u64>,
    pub first_sent_ns: u64,
    pub last_answered_ns: u64,
}

impl PublishStats {
    fn new() -> Self {
        Self {
            attempted: 0,
            accepted: 0,
            failures: Default::default(),
            post_latency_us: new_histogram(),
            schedule_lag_us: new_histogram(),
            first_sent_ns: 0,
            last_answered_ns: 0,
        }
    }
}

/// A histogram of microseconds, 1 µs to 2 minutes, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 120_000_000, 3) {
        Ok(histogram) => histogram,
        // Constant bounds that hdrhistogram accepts; never reached.
        Err(_) => unreachable!("constant histogram bounds are valid"),
    }
}

const TIMER_SLACK: Duration = Duration::from_millis(10);

/// Runs the whole schedule on a current-thread runtime of the calling thread.
pub fn run(plan: PublishPlan, clock: Clock, ledger: Arc<Ledger>) -> std::io::Result<PublishStats> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(publish(plan, clock, ledger)))
}

async fn publish(plan: PublishPlan, clock: Clock, ledger: Arc<Ledger>) -> PublishStats {
    let stats = Arc::new(Mutex::new(PublishStats::new()));
    let plan = Arc::new(plan);
    let slots = plan.max_outstanding as usize;
    let (idle_tx, mut idle_rx) = mpsc::channel(slots);
    for _ in 0..slots {
        // The channel holds exactly `slots` connections, so these sends cannot fail.
        let _ = idle_tx.try_send(PostConnection::new(plan.url.addr));
    }
    let start = tokio::time::Instant::now();
    let start_ns = clock.now_ns();
    let interval_ns = 1e9 / plan.rate;
    for seq in 0..plan.count {
        let due_ns = (seq as f64 * interval_ns) as u64;
        tokio::time::sleep_until(start + Duration::from_nanos(due_ns)).await;
        // The last events are due just before the end; a timer that fires a little late must
        // not count them as unsent.
        let deadline = start + plan.duration + TIMER_SLACK;
        // `timeout_at` would still take a free slot after the deadline: check it first.
        if plan.abort.load(std::sync::atomic::Ordering::Relaxed) || tokio::time::Instant::now() >= deadline {
            break;
        }
        let mut connection = match tokio::time::timeout_at(deadline, idle_rx.recv()).await {
            Ok(Some(connection)) => connection,
            // Every slot still busy at the end of the publishing time, or the pool closed.
            Ok(None) | Err(_) => break,
        };
        let sent_ns = clock.now_ns();
        let lag_us = sent_ns.saturating_sub(start_ns + due_ns) / 1000;
        {
            let mut stats = lock(&stats);
            stats.attempted += 1;
            stats.schedule_lag_us.saturating_record(lag_us.max(1));
            if stats.first_sent_ns == 0 {
                stats.first_sent_ns = sent_ns;
            }
        }
        let (plan, ledger, stats, idle_tx) = (
            Arc::clone(&plan),
            Arc::clone(&ledger),
            Arc::clone(&stats),
            idle_tx.clone(),
        );
        tokio::spawn(async move {
            let body = plan.body(seq);
            let url = plan.url_of(seq);
            let sent_ns = clock.now_ns();
            ledger.mark_sent(seq, sent_ns);
            let result = tokio::time::timeout(
                POST_TIMEOUT,
                connection.post(&url, plan.content_type(), &plan.extra_headers, &body),
            )
            .await;
            let answered_ns = clock.now_ns();
            let outcome = match result {
                Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
                Ok(Ok(status)) => Err(format!("status {status}")),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => {
                    connection = PostConnection::new(plan.url.addr);
                    Err("timeout".to_owned())
                }
            };
            ledger.mark_answered(seq, answered_ns, outcome.is_ok());
            {
                let mut stats = lock(&stats);
                stats
                    .post_latency_us
                    .saturating_record(((answered_ns - sent_ns) / 1000).max(1));
                stats.last_answered_ns = stats.last_answered_ns.max(answered_ns);
                match outcome {
                    Ok(()) => stats.accepted += 1,
                    Err(reason) => *stats.failures.entry(reason).or_default() += 1,
                }
            }
            // Release the figures before the slot, so the collector finds them unshared.
            drop(stats);
            let _ = idle_tx.send(connection).await;
        });
    }
    // Every connection back in the pool means every POST was answered or timed out.
    for _ in 0..slots {
        if idle_rx.recv().await.is_none() {
            break;
        }
    }
    drop(idle_tx);
    match Arc::try_unwrap(stats) {
        Ok(stats) => stats.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner),
        Err(shared) => {
            // A task still holds a clone only if it is between returning its connection and
            // ending; copy the figures out.
            let stats = lock(&shared);
            PublishStats {
                attempted: stats.attempted,
                accepted: stats.accepted,
                failures: stats.failures.clone(),
                post_latency_us: stats.post_latency_us.clone(),
                schedule_lag_us: stats.schedule_lag_us.clone(),
                first_sent_ns: stats.first_sent_ns,
                last_answered_ns: stats.last_answered_ns,
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::find_seq;

    fn plan(mode: PublishMode, path: &str, customers: u32) -> PublishPlan {
        PublishPlan {
            mode,
            url: HttpUrl {
                addr: "127.0.0.1:8091".parse().unwrap(),
                authority: "127.0.0.1:8091".into(),
                path: path.into(),
            },
            rate: 50.0,
            count: 10,
            duration: Duration::from_secs(1),
            max_outstanding: 1,
            event_bytes: 300,
            order_pad_items: 1,
            customers,
            extra_headers: String::new(),
            abort: Arc::default(),
        }
    }

    #[test]
    fn raw_events_spread_over_customers_name_theirs_in_the_publish_url() {
        let plan = plan(PublishMode::Raw, "/publish", 1000);
        assert_eq!(plan.url_of(0).path, "/publish?customerId=c0");
        assert_eq!(plan.url_of(1234).path, "/publish?customerId=c234");
        assert_eq!(plan.url_of(1234).authority, "127.0.0.1:8091");
    }

    #[test]
    fn a_publish_url_with_a_query_gets_the_customer_after_it() {
        let plan = plan(PublishMode::Raw, "/pub?token=x", 3);
        assert_eq!(plan.url_of(5).path, "/pub?token=x&customerId=c2");
    }

    #[test]
    fn orders_and_unspread_raw_events_keep_the_publish_url() {
        assert_eq!(
            plan(PublishMode::Order, "/api/order", 1000).url_of(7).path,
            "/api/order"
        );
        assert!(matches!(
            plan(PublishMode::Raw, "/publish", 0).url_of(7),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn raw_body_has_the_requested_size_and_marker() {
        let body = raw_body(12345, 300);
        assert_eq!(body.len(), 300);
        assert_eq!(find_seq(&body), Some(12345));
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
    }

    #[test]
    fn order_body_is_valid_json_with_valid_skus() {
        let body = order_body(7, 2, 300, "bench");
        let order: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let items = order["items"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["sku"], "lgseq-7");
        for item in items {
            let sku = item["sku"].as_str().unwrap();
            assert!((1..=64).contains(&sku.len()));
            assert!(sku.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c)));
        }
    }
}
