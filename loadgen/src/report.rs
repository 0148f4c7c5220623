//! The report of one run: JSON shape, the human summary, and the figures derived from raw
//! counters (rates, CPU per delivery, memory per connection, who was the bottleneck).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::procstat::CpuTimes;
use crate::server_metrics::FanOutCounters;

/// A CPU running at least this fraction of the time it was given is called saturated.
pub const SATURATED: f64 = 0.90;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// From a histogram of microseconds, in milliseconds.
    pub fn from_us(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: histogram.len(),
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectionFigures {
    pub requested: u64,
    pub established: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    /// Connections that ended before the run did, by reason.
    pub disconnects: BTreeMap<String, u64>,
    /// TCP connect to response head, per connection.
    pub connect_ms: Percentiles,
    /// First attempt to last connection settled.
    pub connect_wall_s: f64,
    /// The load generator's reading thread during the connect phase, as a fraction of a core
    /// (near 1 means connect times include its own queueing).
    #[serde(default)]
    pub loadgen_connect_fraction: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishFigures {
    pub mode: String,
    pub target_rate: f64,
    pub max_outstanding: u32,
    /// Events the schedule held (rate × duration).
    #[serde(default)]
    pub planned: u64,
    /// Events sent before the publishing time ran out.
    pub attempted: u64,
    pub accepted: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub achieved_rate: f64,
    pub post_ms: Percentiles,
    pub schedule_lag_ms: Percentiles,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliveryFigures {
    /// Accepted events times connections that were open at the end.
    pub expected: u64,
    pub delivered: u64,
    pub deliveries_per_s: f64,
    /// First publish to last delivery.
    pub window_s: f64,
    pub latency_ms: Percentiles,
    /// Accepted events a connection did not receive: `lost` + `undelivered`.
    pub missing: u64,
    /// Missing although a later event reached the same connection: never coming.
    #[serde(default)]
    pub lost: u64,
    /// Missing with nothing later received: still queued when the drain timed out, or lost
    /// at the end (only a drained run proves them zero).
    #[serde(default)]
    pub undelivered: u64,
    pub duplicates: u64,
    pub out_of_order_seq: u64,
    pub out_of_order_id: u64,
    pub unknown_seq: u64,
    pub unmatched_events: u64,
    pub comments: u64,
    pub retry_fields: u64,
    pub mean_event_bytes: f64,
    /// Everything expected arrived before the drain timeout.
    pub drained: bool,
    /// End of publishing to last delivery (or to the timeout).
    pub drain_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub name: String,
    pub rss_end_kib: Option<u64>,
    pub run_cpu: Option<CpuTimes>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerFigures {
    pub processes: Vec<ProcessInfo>,
    pub rss_before_kib: u64,
    pub rss_connected_kib: u64,
    pub rss_end_kib: u64,
    /// RSS growth from before connecting to all connected, per established connection.
    pub rss_per_connection_bytes: Option<f64>,
    /// CPU while the connections were made.
    pub connect_cpu: CpuTimes,
    /// CPU from the start of publishing to the end of the drain.
    pub run_cpu: CpuTimes,
    /// `run_cpu` over the wall time of that window (1.0 = one core).
    pub run_cpu_fraction: f64,
    pub cpu_per_delivery_us: Option<f64>,
    pub saturated: bool,
    /// The fan-out writer's own accounting, when the server exposes it.
    #[serde(default)]
    pub fan_out: Option<FanOutFigures>,
}

/// What the fan-out writer spent during the run, by its own measure (thread CPU time between
/// its awaits): delivery work apart from what the process does per order or per connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanOutFigures {
    pub counters: FanOutCounters,
    /// Events and admissions CPU over the events the writer delivered.
    pub cpu_per_delivery_us: Option<f64>,
    /// Heartbeat CPU over the run's wall time (1.0 = one core).
    pub heartbeat_cpu_fraction: f64,
}

impl FanOutFigures {
    pub fn from_counters(counters: FanOutCounters, run_wall_s: f64) -> Self {
        Self {
            cpu_per_delivery_us: (counters.deliveries > 0)
                .then(|| (counters.events_cpu_s + counters.admissions_cpu_s) * 1e6 / counters.deliveries as f64),
            heartbeat_cpu_fraction: if run_wall_s > 0.0 {
                counters.heartbeats_cpu_s / run_wall_s
            } else {
                0.0
            },
            counters,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadgenFigures {
    pub allowed_cpus: usize,
    /// The load generator's CPU over the publish-and-drain window.
    pub run_cpu: CpuTimes,
    pub run_cpu_fraction: f64,
    /// The thread reading every connection, as a fraction of one core.
    pub subscriber_thread_fraction: f64,
    /// The load generator, not the server, limited this run.
    pub bottleneck: bool,
    /// CPU used by processes other than the server and the load generator during the run,
    /// as a fraction of one core (anything well above 0 disturbed the figures).
    #[serde(default)]
    pub other_cpu_fraction: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timeline {
    pub bucket_ms: u64,
    /// Deliveries per second in each bucket, from the first publish on.
    pub deliveries_per_s: Vec<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    pub scenario: String,
    pub server: String,
    pub started_unix_s: u64,
    pub config: serde_json::Value,
    pub connections: ConnectionFigures,
    pub publish: Option<PublishFigures>,
    pub delivery: DeliveryFigures,
    pub server_process: ServerFigures,
    pub loadgen: LoadgenFigures,
    pub timeline: Timeline,
    /// (latency in ms, fraction of deliveries at or below it).
    pub latency_cdf_ms: Vec<(f64, f64)>,
    /// No lost, duplicate, out-of-order or unknown event, no failed connection or POST.
    /// Undelivered events (a drain that timed out) are shown by `delivery.drained`.
    pub clean: bool,
    pub notes: Vec<String>,
}

/// Points of the latency CDF, dense in the tail where comparisons matter.
pub fn cdf_points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut quantiles: Vec<f64> = (0..=90).map(|q| f64::from(q) / 100.0).collect();
    quantiles.extend([
        0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
    ]);
    quantiles
        .into_iter()
        .map(|q| (histogram.value_at_quantile(q) as f64 / 1000.0, q))
        .collect()
}

impl RunReport {
    /// The human summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let c = &self.connections;
        let d = &self.delivery;
        let s = &self.server_process;
        let l = &self.loadgen;
        let _ = writeln!(out, "== {} / {} ==", self.scenario, self.server);
        let _ = writeln!(
            out,
            "connections   {} made, {} failed {:?}, {} dropped {:?}; connect p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({:.2} s for all, load generator {:.0}% busy)",
            c.established,
            c.failed,
            c.failures,
            c.disconnects.values().sum::<u64>(),
            c.disconnects,
            c.connect_ms.p50,
            c.connect_ms.p99,
            c.connect_ms.max,
            c.connect_wall_s,
            c.loadgen_connect_fraction * 100.0
        );
        if let Some(p) = &self.publish {
            let _ = writeln!(
                out,
                "publish       {} {}/{} accepted at {:.1}/s (target {:.1}/s, {} in flight max); POST p50 {:.2} ms p99 {:.2} ms max {:.2} ms; schedule lag p99 {:.2} ms max {:.2} ms",
                p.mode,
                p.accepted,
                p.attempted,
                p.achieved_rate,
                p.target_rate,
                p.max_outstanding,
                p.post_ms.p50,
                p.post_ms.p99,
                p.post_ms.max,
                p.schedule_lag_ms.p99,
                p.schedule_lag_ms.max
            );
            if p.failed > 0 {
                let _ = writeln!(out, "              POST failures {:?}", p.failures);
            }
            let _ = writeln!(
                out,
                "deliveries    {}/{} in {:.2} s = {:.0}/s, mean event {:.0} B; drained: {} ({:.2} s after publishing)",
                d.delivered, d.expected, d.window_s, d.deliveries_per_s, d.mean_event_bytes, d.drained, d.drain_s
            );
            let _ = writeln!(
                out,
                "latency       p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
                d.latency_ms.p50, d.latency_ms.p90, d.latency_ms.p99, d.latency_ms.p999, d.latency_ms.max
            );
            let _ = writeln!(
                out,
                "correctness   missing {} (lost {}, undelivered {})  duplicate {}  out-of-order {} (by publish order) {} (by id)  unknown {}",
                d.missing, d.lost, d.undelivered, d.duplicates, d.out_of_order_seq, d.out_of_order_id, d.unknown_seq
            );
        }
        let _ = writeln!(
            out,
            "server        RSS {} -> {} -> {} KiB{}; CPU connect {:.2} s, run user {:.2} s sys {:.2} s ({:.0}% of a core){}",
            s.rss_before_kib,
            s.rss_connected_kib,
            s.rss_end_kib,
            s.rss_per_connection_bytes
                .map(|b| format!(" ({:.2} KiB per connection)", b / 1024.0))
                .unwrap_or_default(),
            s.connect_cpu.total(),
            s.run_cpu.user_s,
            s.run_cpu.system_s,
            s.run_cpu_fraction * 100.0,
            s.cpu_per_delivery_us
                .map(|us| format!(", {us:.2} µs per delivery"))
                .unwrap_or_default(),
        );
        let _ = writeln!(
            out,
            "loadgen       CPU {:.2} s ({:.0}% of {} allowed core(s)); reader thread {:.0}% of a core{}",
            l.run_cpu.total(),
            l.run_cpu_fraction * 100.0,
            l.allowed_cpus,
            l.subscriber_thread_fraction * 100.0,
            if l.bottleneck {
                "  ** LOAD GENERATOR WAS THE BOTTLENECK **"
            } else {
                ""
            }
        );
        for note in &self.notes {
            let _ = writeln!(out, "note          {note}");
        }
        let _ = writeln!(out, "verdict       {}", if self.clean { "clean" } else { "NOT CLEAN" });
        out
    }
}
