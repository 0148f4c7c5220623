//! One run: connect every subscriber, publish on schedule, drain, sample /proc, report.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::config::{PublishMode, RunConfig};
use crate::http::{bench_token, subscribe_request};
use crate::ledger::{Clock, Ledger};
use crate::procstat::{self, Sample};
use crate::publisher::{self, PublishPlan, PublishStats};
use crate::report::{
    ConnectionFigures, DeliveryFigures, FanOutFigures, LoadgenFigures, Percentiles, ProcessInfo, PublishFigures,
    RunReport, SATURATED, ServerFigures, Timeline, cdf_points,
};
use crate::server_metrics::{self, FanOutCounters};
use crate::subscriber::{ConnectPlan, Subscribers, TIMELINE_BUCKET_NS};

/// How often progress is checked while waiting for connections or deliveries.
const POLL: Duration = Duration::from_millis(10);

/// Runs one scenario on a current-thread runtime of the calling thread.
pub fn run(config: &RunConfig) -> anyhow::Result<RunReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the subscriber runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run_on_local_set(config))
}

async fn run_on_local_set(config: &RunConfig) -> anyhow::Result<RunReport> {
    let clock = Clock::new();
    let abort = Arc::new(AtomicBool::new(false));
    let rss_limit_kib = config.max_server_rss_mib * 1024;
    let over_rss_limit = || {
        let rss: u64 = config
            .server_pids
            .iter()
            .filter_map(|&pid| procstat::rss_kib(pid))
            .sum();
        rss > rss_limit_kib
    };
    let mut cut_short = false;
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let write_token = match &config.jwt_secret {
        Some(secret) => Some(bench_token(secret, "orders:write", None)?),
        None => None,
    };
    let publish_plan = match (&config.publish, &config.publish_url) {
        (PublishMode::Order | PublishMode::Raw, Some(url)) => Some(PublishPlan {
            mode: config.publish,
            url: url.clone(),
            rate: config.rate,
            count: ((config.rate * config.duration.as_secs_f64()).round() as u64).max(1),
            duration: config.duration,
            max_outstanding: config.max_outstanding,
            event_bytes: config.event_bytes as usize,
            order_pad_items: config.order_pad_items,
            customers: config.customers,
            extra_headers: write_token
                .as_ref()
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default(),
            abort: Arc::clone(&abort),
        }),
        _ => None,
    };
    let ledger = Arc::new(Ledger::with_capacity(
        publish_plan.as_ref().map_or(0, |p| p.count as usize),
    ));
    let subscribers = Subscribers::new(clock, Arc::clone(&ledger));

    // Connect.
    let before = Sample::take(&config.server_pids);
    let connect_started = Instant::now();
    let plan = Rc::new(ConnectPlan {
        target: config.url.addr,
        requests: subscribe_requests(config)?,
        customers: config.customers,
        sources: config.source_ips(),
        timeout: config.connect_timeout,
        concurrency: config.connect_concurrency as usize,
    });
    let connect_sample = Sample::take(&[]);
    let mut tasks = subscribers.spawn_all(config.connections, plan);
    while subscribers.settled.get() < u64::from(config.connections) {
        tokio::time::sleep(POLL).await;
    }
    let connect_wall_s = connect_started.elapsed().as_secs_f64();
    let connect_thread_s = Sample::take(&[])
        .own_subscriber_thread
        .since(&connect_sample.own_subscriber_thread)
        .total();
    tokio::time::sleep(config.settle).await;
    let connected = Sample::take(&config.server_pids);
    let fan_out_connected = scrape_fan_out(config).await;

    // Publish (on its own thread) and drain, or hold the connections idle.
    let run_started = Instant::now();
    let publish_start_ns = clock.now_ns();
    subscribers.set_publish_start(publish_start_ns);
    let mut publish_stats: Option<PublishStats> = None;
    let mut drained = true;
    let mut drain_s = 0.0;
    if let Some(plan) = publish_plan.clone() {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let thread_ledger = Arc::clone(&ledger);
        std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                let _ = done_tx.send(publisher::run(plan, clock, thread_ledger));
            })
            .context("starting the publisher thread")?;
        let mut done_rx = std::pin::pin!(done_rx);
        let mut watchdog = tokio::time::interval(Duration::from_millis(500));
        let stats = loop {
            tokio::select! {
                done = &mut done_rx => break done
                    .context("the publisher thread ended without a result")?
                    .context("building the publisher runtime")?,
                _ = watchdog.tick() => {
                    if !cut_short && over_rss_limit() {
                        cut_short = true;
                        abort.store(true, Ordering::Relaxed);
                    }
                }
            }
        };
        let published_at = Instant::now();
        // Each connection expects the accepted events of its customer (all of them unspread).
        let per_customer = accepted_per_customer(
            &ledger.accepted_bitmap(publish_plan.as_ref().map_or(0, |p| p.count)),
            config.customers,
        );
        let expected = expected_deliveries(&per_customer, config.customers, subscribers.open.get());
        let mut last_check = Instant::now();
        loop {
            if subscribers.stats.borrow().delivered >= expected {
                break;
            }
            if published_at.elapsed() >= config.drain_timeout || cut_short {
                drained = false;
                break;
            }
            if last_check.elapsed() >= Duration::from_millis(500) {
                last_check = Instant::now();
                cut_short = over_rss_limit();
            }
            tokio::time::sleep(POLL).await;
        }
        drain_s = published_at.elapsed().as_secs_f64();
        publish_stats = Some(stats);
    } else {
        tokio::time::sleep(config.duration).await;
    }
    let run_wall_s = run_started.elapsed().as_secs_f64();
    let end = Sample::take(&config.server_pids);
    let fan_out_end = scrape_fan_out(config).await;
    let open_at_end = subscribers.open.get();

    // Stop the connections and collect what each one received.
    tasks.shutdown().await;
    let accepted = ledger.accepted_bitmap(publish_plan.as_ref().map_or(0, |p| p.count));
    let accepted_count: u64 = accepted.iter().map(|w| u64::from(w.count_ones())).sum();
    let received = subscribers.take_received();
    let mut masks: std::collections::HashMap<u32, Vec<u64>> = std::collections::HashMap::new();
    let mut expected_total = 0;
    let (lost, undelivered) = received.iter().fold((0, 0), |(lost, late), (bits, max_seq, customer)| {
        let wanted = match customer {
            None => &accepted,
            Some(customer) => masks
                .entry(*customer)
                .or_insert_with(|| customer_mask(&accepted, config.customers, *customer)),
        };
        expected_total += wanted.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
        let (l, u) = classify_missing(wanted, bits, *max_seq, &ledger);
        (lost + l, late + u)
    });
    let stats = subscribers.stats.borrow();
    let mut notes = Vec::new();
    let connections = ConnectionFigures {
        requested: u64::from(config.connections),
        established: stats.established,
        failed: stats.failures.values().sum(),
        failures: stats.failures.clone(),
        disconnects: stats.disconnects.clone(),
        connect_ms: Percentiles::from_us(&stats.connect_us),
        connect_wall_s,
        loadgen_connect_fraction: if connect_wall_s > 0.0 {
            connect_thread_s / connect_wall_s
        } else {
            0.0
        },
    };

    let publish = publish_stats.as_ref().map(|p| {
        let span_s = (p.last_answered_ns.saturating_sub(p.first_sent_ns)) as f64 / 1e9;
        PublishFigures {
            mode: format!("{:?}", config.publish).to_lowercase(),
            target_rate: config.rate,
            max_outstanding: config.max_outstanding,
            planned: publish_plan.as_ref().map_or(0, |plan| plan.count),
            attempted: p.attempted,
            accepted: p.accepted,
            failed: p.failures.values().sum(),
            failures: p.failures.clone(),
            achieved_rate: if span_s > 0.0 { p.attempted as f64 / span_s } else { 0.0 },
            post_ms: Percentiles::from_us(&p.post_latency_us),
            schedule_lag_ms: Percentiles::from_us(&p.schedule_lag_us),
        }
    });

    let first_sent_ns = publish_stats.as_ref().map_or(publish_start_ns, |p| p.first_sent_ns);
    let window_s = stats.last_delivery_ns.saturating_sub(first_sent_ns) as f64 / 1e9;
    let delivery = DeliveryFigures {
        expected: if config.customers == 0 {
            accepted_count * u64::try_from(received.len()).unwrap_or(0)
        } else {
            expected_total
        },
        delivered: stats.delivered,
        deliveries_per_s: if window_s > 0.0 {
            stats.delivered as f64 / window_s
        } else {
            0.0
        },
        window_s,
        latency_ms: Percentiles::from_us(&stats.latency_us),
        missing: lost + undelivered,
        lost,
        undelivered,
        duplicates: stats.duplicates,
        out_of_order_seq: stats.out_of_order_seq,
        out_of_order_id: stats.out_of_order_id,
        unknown_seq: stats.unknown_seq,
        unmatched_events: stats.unmatched_events,
        comments: stats.comments,
        retry_fields: stats.retry_fields,
        mean_event_bytes: if stats.delivered > 0 {
            stats.data_bytes as f64 / stats.delivered as f64
        } else {
            0.0
        },
        drained,
        drain_s,
    };

    let server_run_cpu = end.server_cpu().since(&connected.server_cpu());
    let run_cpu_fraction = if run_wall_s > 0.0 {
        server_run_cpu.total() / run_wall_s
    } else {
        0.0
    };
    let rss_per_connection_bytes = (stats.established > 0 && !config.server_pids.is_empty()).then(|| {
        (connected.server_rss_kib() as f64 - before.server_rss_kib() as f64) * 1024.0 / stats.established as f64
    });
    let server_process = ServerFigures {
        processes: config
            .server_pids
            .iter()
            .map(|&pid| {
                let at = |sample: &Sample| sample.servers.iter().find(|(p, _, _)| *p == pid).and_then(|s| s.1);
                ProcessInfo {
                    pid,
                    name: procstat::command_name(pid).unwrap_or_else(|| "gone".into()),
                    rss_end_kib: end.servers.iter().find(|(p, _, _)| *p == pid).and_then(|s| s.2),
                    run_cpu: at(&end).zip(at(&connected)).map(|(e, c)| e.since(&c)),
                }
            })
            .collect(),
        rss_before_kib: before.server_rss_kib(),
        rss_connected_kib: connected.server_rss_kib(),
        rss_end_kib: end.server_rss_kib(),
        rss_per_connection_bytes,
        connect_cpu: connected.server_cpu().since(&before.server_cpu()),
        run_cpu: server_run_cpu,
        run_cpu_fraction,
        cpu_per_delivery_us: (stats.delivered > 0 && !config.server_pids.is_empty())
            .then(|| server_run_cpu.total() * 1e6 / stats.delivered as f64),
        saturated: run_cpu_fraction >= SATURATED,
        fan_out: fan_out_end
            .zip(fan_out_connected)
            .map(|(end, start)| FanOutFigures::from_counters(end.since(&start), run_wall_s)),
    };

    let allowed_cpus = procstat::allowed_cpus();
    let own_cpu = end.own_process.since(&connected.own_process);
    let own_thread = end.own_subscriber_thread.since(&connected.own_subscriber_thread);
    let own_fraction = if run_wall_s > 0.0 {
        own_cpu.total() / run_wall_s
    } else {
        0.0
    };
    let thread_fraction = if run_wall_s > 0.0 {
        own_thread.total() / run_wall_s
    } else {
        0.0
    };
    let bottleneck = thread_fraction >= SATURATED || own_fraction >= SATURATED * allowed_cpus as f64;
    let machine_busy = end.machine_busy_s - connected.machine_busy_s;
    let other_cpu_fraction = if run_wall_s > 0.0 {
        ((machine_busy - server_run_cpu.total() - own_cpu.total()) / run_wall_s).max(0.0)
    } else {
        0.0
    };
    let loadgen = LoadgenFigures {
        allowed_cpus,
        run_cpu: own_cpu,
        run_cpu_fraction: own_fraction,
        subscriber_thread_fraction: thread_fraction,
        bottleneck,
        other_cpu_fraction,
    };
    if other_cpu_fraction >= 0.25 {
        notes.push(format!(
            "other processes used {:.0}% of a core during the run: the figures were disturbed",
            other_cpu_fraction * 100.0
        ));
    }
    if connections.loadgen_connect_fraction >= SATURATED && connections.requested > 0 {
        notes.push(format!(
            "the load generator was busy {:.0}% of the connect phase: connect times include its own queueing",
            connections.loadgen_connect_fraction * 100.0
        ));
    }
    if bottleneck {
        notes.push(
            "the load generator used its whole core: deliveries/s is a lower bound and latency includes its own queueing"
                .into(),
        );
    }
    if server_process.saturated {
        notes.push("the server used its whole core (saturated)".into());
    }
    if let Some(p) = &publish {
        if p.attempted < p.planned {
            notes.push(format!(
                "{} of {} events were not sent within --duration: the server took POSTs too slowly (publisher starved)",
                p.planned - p.attempted,
                p.planned
            ));
        }
        if p.failed > 0 {
            notes.push(format!("{} POST(s) failed: {:?}", p.failed, p.failures));
        }
        if p.schedule_lag_ms.p99 > (1000.0 / config.rate).max(10.0) {
            notes.push(format!(
                "the publisher fell behind its schedule (lag p99 {:.1} ms): the server answered POSTs too slowly",
                p.schedule_lag_ms.p99
            ));
        }
    }
    if open_at_end < stats.established {
        notes.push(format!(
            "{} connection(s) ended during the run",
            stats.established - open_at_end
        ));
    }
    if cut_short {
        notes.push(format!(
            "the server's RSS passed --max-server-rss-mib {}: publishing and draining were cut short",
            config.max_server_rss_mib
        ));
    }
    if !drained {
        notes.push(format!(
            "not every delivery arrived within --drain-timeout {:?}",
            config.drain_timeout
        ));
    }

    let bucket_s = TIMELINE_BUCKET_NS as f64 / 1e9;
    let clean = connections.failed == 0
        && connections.disconnects.is_empty()
        && publish.as_ref().is_none_or(|p| p.failed == 0)
        && delivery.lost == 0
        && delivery.duplicates == 0
        && delivery.out_of_order_seq == 0
        && delivery.out_of_order_id == 0
        && delivery.unknown_seq == 0;
    Ok(RunReport {
        scenario: config.scenario.clone(),
        server: config.server.clone(),
        started_unix_s,
        config: serde_json::to_value(config).unwrap_or_default(),
        connections,
        publish,
        delivery,
        server_process,
        loadgen,
        timeline: Timeline {
            bucket_ms: TIMELINE_BUCKET_NS / 1_000_000,
            deliveries_per_s: stats.timeline.iter().map(|&n| n as f64 / bucket_s).collect(),
        },
        latency_cdf_ms: cdf_points(&stats.latency_us),
        clean,
        notes,
    })
}

/// The subscribe request of each connection (one for all when streams are not spread).
/// The server's fan-out counters now, when `--server-metrics` names a page that has them; a
/// failed scrape is said once per run end and leaves the figure out.
async fn scrape_fan_out(config: &RunConfig) -> Option<FanOutCounters> {
    let url = config.server_metrics.as_ref()?;
    match server_metrics::scrape(url).await {
        Ok(counters) => counters,
        Err(error) => {
            eprintln!("loadgen: --server-metrics: {error:#}");
            None
        }
    }
}

fn subscribe_requests(config: &RunConfig) -> anyhow::Result<Vec<Vec<u8>>> {
    let secret = config.jwt_secret.as_deref();
    if config.customers == 0 {
        let token = secret.map(|s| bench_token(s, "orders:read:all", None)).transpose()?;
        return Ok(vec![subscribe_request(&config.url, None, token.as_deref())]);
    }
    (0..config.customers)
        .map(|n| {
            let customer = crate::publisher::customer_name(config.customers, u64::from(n));
            Ok(match secret {
                // The token confines the stream to its customer.
                Some(secret) => {
                    let token = bench_token(secret, "orders:read", Some(&customer))?;
                    subscribe_request(&config.url, None, Some(&token))
                }
                None => subscribe_request(&config.url, Some(&customer), None),
            })
        })
        .collect()
}

/// The accepted bitmap restricted to the events of `customer` (event `s` is customer `s % customers`).
fn customer_mask(accepted: &[u64], customers: u32, customer: u32) -> Vec<u64> {
    let mut mask = accepted.to_vec();
    for (index, word) in mask.iter_mut().enumerate() {
        for bit in 0..64u64 {
            let seq = index as u64 * 64 + bit;
            if seq % u64::from(customers) != u64::from(customer) {
                *word &= !(1u64 << bit);
            }
        }
    }
    mask
}

/// Accepted events per customer (one entry, all of them, when not spread).
fn accepted_per_customer(accepted: &[u64], customers: u32) -> Vec<u64> {
    if customers == 0 {
        return vec![accepted.iter().map(|w| u64::from(w.count_ones())).sum()];
    }
    let mut counts = vec![0; customers as usize];
    for (index, word) in accepted.iter().enumerate() {
        let mut bits = *word;
        while bits != 0 {
            let seq = index as u64 * 64 + u64::from(bits.trailing_zeros());
            bits &= bits - 1;
            counts[(seq % u64::from(customers)) as usize] += 1;
        }
    }
    counts
}

/// Deliveries expected by `open` connections, connection `i` reading customer `i % customers`.
fn expected_deliveries(per_customer: &[u64], customers: u32, open: u64) -> u64 {
    if customers == 0 {
        return per_customer[0] * open;
    }
    (0..open)
        .map(|i| per_customer[(i % u64::from(customers)) as usize])
        .sum()
}

/// Splits the accepted events a connection did not receive into lost (a later event that was
/// published after this one had been accepted did arrive, so this one never will) and
/// undelivered (nothing after it arrived: late, or lost at the end of the run).
fn classify_missing(accepted: &[u64], received: &[u64], max_seq: Option<u64>, ledger: &Ledger) -> (u64, u64) {
    let later_sent = max_seq.and_then(|m| ledger.sent_ns(m));
    let mut lost = 0;
    let mut undelivered = 0;
    for (index, &want) in accepted.iter().enumerate() {
        let mut absent = want & !received.get(index).copied().unwrap_or(0);
        if absent == 0 {
            continue;
        }
        let (Some(max), Some(later_sent)) = (max_seq, later_sent) else {
            undelivered += u64::from(absent.count_ones());
            continue;
        };
        if (index as u64) * 64 > max {
            undelivered += u64::from(absent.count_ones());
            continue;
        }
        while absent != 0 {
            let seq = index as u64 * 64 + u64::from(absent.trailing_zeros());
            absent &= absent - 1;
            let answered_before = ledger.answered_ns(seq).is_some_and(|answered| answered < later_sent);
            if seq < max && answered_before {
                lost += 1;
            } else {
                undelivered += 1;
            }
        }
    }
    (lost, undelivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_connections_expect_only_their_customers_events() {
        // Events 0..10 accepted, 3 customers: c0 has 0,3,6,9; c1 1,4,7; c2 2,5,8.
        let accepted = vec![(1u64 << 10) - 1];
        assert_eq!(customer_mask(&accepted, 3, 1), vec![(1 << 1) | (1 << 4) | (1 << 7)]);
        let per_customer = accepted_per_customer(&accepted, 3);
        assert_eq!(per_customer, vec![4, 3, 3]);
        // Five connections read c0, c1, c2, c0, c1.
        assert_eq!(expected_deliveries(&per_customer, 3, 5), 4 + 3 + 3 + 4 + 3);
        assert_eq!(expected_deliveries(&accepted_per_customer(&accepted, 0), 0, 5), 50);
    }
}
