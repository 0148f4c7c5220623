//! The fan-out writer's own CPU accounting, read from an sse-orders `/metrics` page.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::config::HttpUrl;

/// Largest `/metrics` page read.
const MAX_PAGE_BYTES: usize = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Counters of one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FanOutCounters {
    /// CPU seconds writing new events (with the writer's bookkeeping).
    pub events_cpu_s: f64,
    pub heartbeats_cpu_s: f64,
    /// CPU seconds catching up connections that park.
    pub admissions_cpu_s: f64,
    /// Events the writer put into parked connections.
    pub deliveries: u64,
}

impl FanOutCounters {
    pub fn since(&self, earlier: &FanOutCounters) -> FanOutCounters {
        FanOutCounters {
            events_cpu_s: self.events_cpu_s - earlier.events_cpu_s,
            heartbeats_cpu_s: self.heartbeats_cpu_s - earlier.heartbeats_cpu_s,
            admissions_cpu_s: self.admissions_cpu_s - earlier.admissions_cpu_s,
            deliveries: self.deliveries.saturating_sub(earlier.deliveries),
        }
    }

    /// Reads the counters out of a Prometheus text page; `None` when the page has none of them
    /// (a server without a fan-out).
    pub fn parse(page: &str) -> Option<FanOutCounters> {
        let mut counters = FanOutCounters::default();
        let mut seen = false;
        for line in page.lines().filter(|line| !line.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let slot = match name {
                "sse_orders_fan_out_cpu_seconds_total{work=\"events\"}" => &mut counters.events_cpu_s,
                "sse_orders_fan_out_cpu_seconds_total{work=\"heartbeats\"}" => &mut counters.heartbeats_cpu_s,
                "sse_orders_fan_out_cpu_seconds_total{work=\"admissions\"}" => &mut counters.admissions_cpu_s,
                "sse_orders_fan_out_deliveries_total" => {
                    counters.deliveries = value as u64;
                    seen = true;
                    continue;
                }
                _ => continue,
            };
            *slot = value;
            seen = true;
        }
        seen.then_some(counters)
    }
}

/// Fetches `url` (plain HTTP) and reads the fan-out counters from it.
pub async fn scrape(url: &HttpUrl) -> anyhow::Result<Option<FanOutCounters>> {
    let page = tokio::time::timeout(TIMEOUT, fetch(url))
        .await
        .with_context(|| format!("{url} did not answer within {TIMEOUT:?}"))??;
    Ok(FanOutCounters::parse(&page))
}

async fn fetch(url: &HttpUrl) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(url.addr)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        url.path, url.authority
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_PAGE_BYTES as u64)
        .read_to_end(&mut response)
        .await?;
    let text = String::from_utf8_lossy(&response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("{url} sent no complete response");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{url} answered {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fan_out_counters_are_read_from_a_metrics_page() {
        let page = "# HELP sse_orders_fan_out_cpu_seconds_total CPU\n\
            sse_orders_fan_out_cpu_seconds_total{work=\"admissions\"} 0.5\n\
            sse_orders_fan_out_cpu_seconds_total{work=\"events\"} 1.25\n\
            sse_orders_fan_out_cpu_seconds_total{work=\"heartbeats\"} 0.125\n\
            sse_orders_fan_out_deliveries_total 1000\n\
            sse_orders_events_delivered_total 1200\n";
        let counters = FanOutCounters::parse(page).unwrap();
        assert_eq!(
            counters,
            FanOutCounters {
                events_cpu_s: 1.25,
                heartbeats_cpu_s: 0.125,
                admissions_cpu_s: 0.5,
                deliveries: 1000,
            }
        );
        let later = FanOutCounters {
            events_cpu_s: 2.25,
            deliveries: 3000,
            ..counters
        };
        assert_eq!(later.since(&counters).deliveries, 2000);
        assert_eq!(later.since(&counters).events_cpu_s, 1.0);
    }

    #[test]
    fn a_page_without_a_fan_out_reads_as_none() {
        assert_eq!(FanOutCounters::parse("sse_orders_events_delivered_total 5\n"), None);
    }
}
