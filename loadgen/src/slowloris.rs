//! `loadgen slowloris`: many sockets trickle a never-ending request head, one byte at a time;
//! each one the server closes is opened again. Meanwhile one SSE stream stays open, an order is
//! posted and a new client asks for `/healthz` every second: the report says how many were
//! answered, how fast, and whether the stream received every order.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::SlowlorisConfig;

#[derive(Debug, serde::Serialize)]
pub struct SlowlorisReport {
    pub server: String,
    pub sockets: u32,
    pub byte_interval_s: f64,
    pub silent: bool,
    pub probe_duration_s: f64,
    /// Seconds until every trickling socket had been opened once.
    pub ramp_s: f64,
    /// Trickling connections opened in all (reopens included).
    pub attack_connections: u64,
    /// Trickling connections the server closed.
    pub closed_by_server: u64,
    /// Attempts to open a trickling socket that failed.
    pub attack_connect_errors: u64,
    /// How long the server let a trickling socket live (closed ones), milliseconds.
    pub socket_lifetime_ms_p50: Option<u64>,
    pub socket_lifetime_ms_p99: Option<u64>,
    pub socket_lifetime_ms_max: Option<u64>,
    /// Trickling sockets still open at the end of the run that were opened at the start.
    pub never_closed: u64,
    pub probes: u64,
    pub probes_answered: u64,
    pub probe_ms_p50: Option<u64>,
    pub probe_ms_max: Option<u64>,
    pub orders_posted: u64,
    pub orders_created: u64,
    /// Orders the stream opened before the attack received.
    pub stream_events: u64,
    pub stream_open_at_end: bool,
    /// Most open file descriptors of the server seen (with --server-pid).
    pub server_fds_max: Option<u64>,
    /// One line per second: live trickling sockets, server fds, probe answered and ms.
    pub timeline: Vec<TimelinePoint>,
}

#[derive(Debug, serde::Serialize)]
pub struct TimelinePoint {
    pub t_s: u64,
    pub live_sockets: u64,
    pub server_fds: Option<u64>,
    pub probe_ms: Option<u64>,
}

impl SlowlorisReport {
    pub fn summary(&self) -> String {
        let ms = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"));
        format!(
            "slowloris against {}: {} sockets, one byte every {:.1}s{}\n\
             ramp {:.1}s; trickling connections opened {}, closed by the server {}, connect errors {}\n\
             socket lifetime p50 {} p99 {} max {}; opened at the start and never closed: {}\n\
             new clients answered {}/{} (p50 {}, max {})\n\
             orders posted {} created {}, received on the stream opened before the attack {}; stream open at end: {}\n\
             server fds max {}\n",
            self.server,
            self.sockets,
            self.byte_interval_s,
            if self.silent { " (silent)" } else { "" },
            self.ramp_s,
            self.attack_connections,
            self.closed_by_server,
            self.attack_connect_errors,
            ms(self.socket_lifetime_ms_p50),
            ms(self.socket_lifetime_ms_p99),
            ms(self.socket_lifetime_ms_max),
            self.never_closed,
            self.probes_answered,
            self.probes,
            ms(self.probe_ms_p50),
            ms(self.probe_ms_max),
            self.orders_posted,
            self.orders_created,
            self.stream_events,
            self.stream_open_at_end,
            self.server_fds_max.map_or_else(|| "-".to_owned(), |v| v.to_string()),
        )
    }
}

#[derive(Default)]
struct AttackStats {
    opened: AtomicU64,
    live: AtomicU64,
    closed_by_server: AtomicU64,
    connect_errors: AtomicU64,
    first_round_done: AtomicU64,
    first_still_open: AtomicU64,
    lifetimes_ms: Mutex<Vec<u64>>,
}

pub fn run(config: &SlowlorisConfig) -> anyhow::Result<SlowlorisReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(attack(config))
}

async fn attack(config: &SlowlorisConfig) -> anyhow::Result<SlowlorisReport> {
    let addr = config.url.addr;
    let host = config.url.authority.clone();
    let stop = CancellationToken::new();

    // The stream that must keep flowing.
    let stream_events = Arc::new(AtomicU64::new(0));
    let stream_open = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let stream = open_stream(addr, &host).await?;
    tokio::spawn(count_events(stream, stream_events.clone(), stream_open.clone()));

    let stats = Arc::new(AttackStats::default());
    let sources: Vec<Ipv4Addr> = (1..=config.source_addrs).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect();
    let started = Instant::now();
    let connect_permits = Arc::new(tokio::sync::Semaphore::new(500));
    for n in 0..config.sockets {
        let source = sources[n as usize % sources.len()];
        let stats = stats.clone();
        let stop = stop.clone();
        let host = host.clone();
        let permits = connect_permits.clone();
        let interval = config.byte_interval;
        let silent = config.silent;
        tokio::spawn(async move {
            let mut first = true;
            while !stop.is_cancelled() {
                let socket = {
                    let _permit = permits.acquire().await;
                    connect_from(source, addr).await
                };
                let socket = match socket {
                    Ok(socket) => socket,
                    Err(_) => {
                        stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                stats.opened.fetch_add(1, Ordering::Relaxed);
                stats.live.fetch_add(1, Ordering::Relaxed);
                if first {
                    stats.first_round_done.fetch_add(1, Ordering::Relaxed);
                    stats.first_still_open.fetch_add(1, Ordering::Relaxed);
                }
                let opened_at = Instant::now();
                let closed = trickle(socket, &host, interval, silent, &stop).await;
                stats.live.fetch_sub(1, Ordering::Relaxed);
                if closed {
                    stats.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    stats.lifetimes_ms.lock().push(opened_at.elapsed().as_millis() as u64);
                    if first {
                        stats.first_still_open.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                first = false;
            }
        });
    }
    // Ramp: until every socket has been opened once (or a minute has passed).
    let ramp_deadline = started + Duration::from_secs(60);
    while stats.first_round_done.load(Ordering::Relaxed) < u64::from(config.sockets) && Instant::now() < ramp_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ramp = started.elapsed();
    eprintln!(
        "{} trickling sockets opened in {:.1}s; probing for {:?}",
        stats.first_round_done.load(Ordering::Relaxed),
        ramp.as_secs_f64(),
        config.duration
    );

    let mut timeline = Vec::new();
    let mut probe_ms = Vec::new();
    let mut probes = 0u64;
    let mut orders_posted = 0u64;
    let mut orders_created = 0u64;
    let mut server_fds_max = None;
    let events_before = stream_events.load(Ordering::Relaxed);
    let probe_started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while probe_started.elapsed() < config.duration {
        tick.tick().await;
        probes += 1;
        let asked = Instant::now();
        let answered = tokio::time::timeout(config.probe_timeout, request(addr, &host, "GET", "/healthz", None))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|status| status == 200);
        let elapsed_ms = answered.then(|| asked.elapsed().as_millis() as u64);
        if let Some(ms) = elapsed_ms {
            probe_ms.push(ms);
        }
        orders_posted += 1;
        let body = format!(
            r#"{{"customerId":"slowloris-probe","currency":"EUR","items":[{{"sku":"PROBE-{orders_posted}","quantity":1,"unitPrice":1}}]}}"#
        );
        let created = tokio::time::timeout(
            config.probe_timeout,
            request(addr, &host, "POST", "/api/order", Some(&body)),
        )
        .await
        .ok()
        .and_then(Result::ok);
        if created == Some(201) {
            orders_created += 1;
        }
        let fds = config.server_pid.and_then(open_fds);
        server_fds_max = server_fds_max.max(fds);
        timeline.push(TimelinePoint {
            t_s: probe_started.elapsed().as_secs(),
            live_sockets: stats.live.load(Ordering::Relaxed),
            server_fds: fds,
            probe_ms: elapsed_ms,
        });
    }
    // Let the last order reach the stream.
    let drain = Instant::now() + Duration::from_secs(5);
    while stream_events.load(Ordering::Relaxed) - events_before < orders_created && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let never_closed = stats.first_still_open.load(Ordering::Relaxed);
    stop.cancel();

    let mut lifetimes = std::mem::take(&mut *stats.lifetimes_ms.lock());
    lifetimes.sort_unstable();
    probe_ms.sort_unstable();
    Ok(SlowlorisReport {
        server: config.server.clone(),
        sockets: config.sockets,
        byte_interval_s: config.byte_interval.as_secs_f64(),
        silent: config.silent,
        probe_duration_s: config.duration.as_secs_f64(),
        ramp_s: ramp.as_secs_f64(),
        attack_connections: stats.opened.load(Ordering::Relaxed),
        closed_by_server: stats.closed_by_server.load(Ordering::Relaxed),
        attack_connect_errors: stats.connect_errors.load(Ordering::Relaxed),
        socket_lifetime_ms_p50: percentile(&lifetimes, 0.5),
        socket_lifetime_ms_p99: percentile(&lifetimes, 0.99),
        socket_lifetime_ms_max: lifetimes.last().copied(),
        never_closed,
        probes,
        probes_answered: probe_ms.len() as u64,
        probe_ms_p50: percentile(&probe_ms, 0.5),
        probe_ms_max: probe_ms.last().copied(),
        orders_posted,
        orders_created,
        stream_events: stream_events.load(Ordering::Relaxed) - events_before,
        stream_open_at_end: stream_open.load(Ordering::Relaxed),
        server_fds_max,
        timeline,
    })
}

fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(index).copied()
}

fn open_fds(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64)
}

async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    socket.connect(addr).await
}

/// Sends a request head that never ends, one byte per `interval`; true when the server closed
/// the socket, false when the run ended first.
async fn trickle(
    mut socket: TcpStream,
    host: &str,
    interval: Duration,
    silent: bool,
    stop: &CancellationToken,
) -> bool {
    let start = format!("GET /api/order/stream HTTP/1.1\r\nHost: {host}\r\n");
    let endless = start
        .bytes()
        .chain(b"X-Padding: a".iter().copied())
        .chain(std::iter::repeat(b'a'));
    let (mut reader, mut writer) = socket.split();
    let mut discard = [0u8; 512];
    let closed_by_server = async {
        loop {
            match reader.read(&mut discard).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let mut closed_by_server = std::pin::pin!(closed_by_server);
    let mut bytes = endless;
    loop {
        if !silent {
            let byte = bytes.next().unwrap_or(b'a');
            if writer.write_all(&[byte]).await.is_err() {
                return true;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            () = &mut closed_by_server => return true,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn open_stream(addr: SocketAddr, host: &str) -> anyhow::Result<TcpStream> {
    let mut socket = TcpStream::connect(addr).await?;
    socket
        .write_all(
            format!("GET /api/order/stream HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n").as_bytes(),
        )
        .await?;
    Ok(socket)
}

/// Counts `event: order-created` lines on the stream.
async fn count_events(mut socket: TcpStream, events: Arc<AtomicU64>, open: Arc<std::sync::atomic::AtomicBool>) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut carry = Vec::new();
    let marker = b"event: order-created\n";
    loop {
        let n = match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        carry.extend_from_slice(&buffer[..n]);
        let found = memchr::memmem::find_iter(&carry, marker).count() as u64;
        events.fetch_add(found, Ordering::Relaxed);
        // Keep a tail shorter than the marker: a marker split across reads is counted next time.
        let keep = carry.len().min(marker.len() - 1);
        carry.drain(..carry.len() - keep);
    }
    open.store(false, Ordering::Relaxed);
}

/// One request on a fresh connection; the response status.
async fn request(addr: SocketAddr, host: &str, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<u16> {
    let mut socket = TcpStream::connect(addr).await?;
    let head = match body {
        Some(body) => format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        None => format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    };
    socket.write_all(head.as_bytes()).await?;
    let mut response = Vec::new();
    let mut buffer = [0u8; 1024];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buffer).await?;
        if n == 0 {
            anyhow::bail!("closed before the response head");
        }
        response.extend_from_slice(&buffer[..n]);
    }
    let status = std::str::from_utf8(response.get(9..12).unwrap_or_default())?.parse()?;
    Ok(status)
}
