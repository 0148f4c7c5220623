//! The SSE connections: connect with bounded concurrency, then read and judge every event.
//!
//! All connections live on one current-thread runtime and read into one shared buffer; a
//! connection keeps only its decoder state and a bitmap of the sequence numbers it received.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use crate::http::{ResponseHead, parse_head};
use crate::ledger::{Clock, Ledger};
use crate::publisher::new_histogram;
use crate::sse::{BodyDecoder, ChunkedDecoder, EventId, SseItem, SseParser};

/// Size of the read buffer shared by every connection of the thread.
const SCRATCH_BYTES: usize = 256 * 1024;
/// Width of one bucket of the deliveries-over-time series.
pub const TIMELINE_BUCKET_NS: u64 = 100_000_000;

/// Delivery counters of the whole run (subscriber thread only).
pub struct DeliveryStats {
    /// Publish-to-receive latency in microseconds.
    pub latency_us: Histogram<u64>,
    /// Connect time (TCP connect to response head) in microseconds.
    pub connect_us: Histogram<u64>,
    /// Deliveries per `TIMELINE_BUCKET_NS` since publishing started.
    pub timeline: Vec<u64>,
    pub established: u64,
    pub failures: BTreeMap<String, u64>,
    /// Connections that ended before the run did.
    pub disconnects: BTreeMap<String, u64>,
    /// First deliveries of a published sequence number on a connection.
    pub delivered: u64,
    pub duplicates: u64,
    /// Received after a later sequence number whose POST started after this one's POST
    /// had been answered: a real ordering violation even with concurrent POSTs.
    pub out_of_order_seq: u64,
    /// An SSE `id:` lower than the previous one on the same connection.
    pub out_of_order_id: u64,
    /// Events without a sequence marker (e.g. Nchan's ping events).
    pub unmatched_events: u64,
    /// Events whose marker names a sequence number that was never sent.
    pub unknown_seq: u64,
    pub comments: u64,
    pub retry_fields: u64,
    pub data_bytes: u64,
    pub first_delivery_ns: u64,
    pub last_delivery_ns: u64,
}

impl DeliveryStats {
    fn new() -> Self {
        Self {
            latency_us: new_histogram(),
            connect_us: new_histogram(),
            timeline: Vec::new(),
            established: 0,
            failures: BTreeMap::new(),
            disconnects: BTreeMap::new(),
            delivered: 0,
            duplicates: 0,
            out_of_order_seq: 0,
            out_of_order_id: 0,
            unmatched_events: 0,
            unknown_seq: 0,
            comments: 0,
            retry_fields: 0,
            data_bytes: 0,
            first_delivery_ns: 0,
            last_delivery_ns: 0,
        }
    }
}

/// State shared by the connections of the subscriber thread.
pub struct Subscribers {
    clock: Clock,
    ledger: Arc<Ledger>,
    pub stats: RefCell<DeliveryStats>,
    scratch: RefCell<Vec<u8>>,
    /// Connections that have finished connecting, successfully or not.
    pub settled: Cell<u64>,
    /// Connections currently open.
    pub open: Cell<u64>,
    publish_start_ns: Cell<u64>,
    /// Every established connection's reading state, kept here so that what a connection
    /// received can be collected after its task is aborted at the end of the run.
    readers: RefCell<Vec<Rc<RefCell<EventReader>>>>,
}

/// Where and how connections are made.
pub struct ConnectPlan {
    pub target: SocketAddr,
    /// Connection `i` sends `requests[i % len]`.
    pub requests: Vec<Vec<u8>>,
    /// Connection `i` reads only customer `i % customers`'s events (0: every event).
    pub customers: u32,
    pub sources: Vec<Ipv4Addr>,
    pub timeout: Duration,
    pub concurrency: usize,
}

impl Subscribers {
    pub fn new(clock: Clock, ledger: Arc<Ledger>) -> Rc<Self> {
        Rc::new(Self {
            clock,
            ledger,
            stats: RefCell::new(DeliveryStats::new()),
            scratch: RefCell::new(vec![0; SCRATCH_BYTES]),
            settled: Cell::new(0),
            open: Cell::new(0),
            publish_start_ns: Cell::new(0),
            readers: RefCell::new(Vec::new()),
        })
    }

    pub fn set_publish_start(&self, ns: u64) {
        self.publish_start_ns.set(ns);
    }

    /// Spawns `count` connections on the current `LocalSet`; each runs until the server ends
    /// it or the returned set is shut down.
    pub fn spawn_all(self: &Rc<Self>, count: u32, plan: Rc<ConnectPlan>) -> tokio::task::JoinSet<()> {
        let permits = Rc::new(Semaphore::new(plan.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..count as usize {
            let source = plan.sources[index % plan.sources.len()];
            let this = Rc::clone(self);
            let plan = Rc::clone(&plan);
            let permits = Rc::clone(&permits);
            tasks.spawn_local(async move { this.connection(index, source, &plan, &permits).await });
        }
        tasks
    }

    /// Per connection, after the tasks ended: the bitmap of received sequence numbers and the
    /// highest one received.
    /// Per connection, after the tasks ended: the bitmap of received sequence numbers, the
    /// highest one received and the customer it reads (when spread over customers).
    pub fn take_received(&self) -> Vec<(Vec<u64>, Option<u64>, Option<u32>)> {
        self.readers
            .take()
            .into_iter()
            .map(|reader| {
                let mut reader = reader.borrow_mut();
                (
                    std::mem::take(&mut reader.track.received),
                    reader.track.max_seq,
                    reader.track.customer,
                )
            })
            .collect()
    }

    async fn connection(&self, index: usize, source: Ipv4Addr, plan: &ConnectPlan, permits: &Semaphore) {
        let permit = permits.acquire().await;
        let started = self.clock.now_ns();
        let request = &plan.requests[index % plan.requests.len()];
        let connected = match tokio::time::timeout(plan.timeout, connect(source, plan, request)).await {
            Ok(result) => result,
            Err(_) => Err("timeout".to_owned()),
        };
        drop(permit);
        self.settled.set(self.settled.get() + 1);
        let (stream, head, leftover) = match connected {
            Ok(connected) => connected,
            Err(reason) => {
                *self.stats.borrow_mut().failures.entry(reason).or_default() += 1;
                return;
            }
        };
        {
            let mut stats = self.stats.borrow_mut();
            stats.established += 1;
            let took_us = (self.clock.now_ns() - started) / 1000;
            stats.connect_us.saturating_record(took_us.max(1));
        }
        self.open.set(self.open.get() + 1);

        let decoder = if head.chunked {
            BodyDecoder::Chunked(ChunkedDecoder::default())
        } else {
            BodyDecoder::UntilClose
        };
        let reader = Rc::new(RefCell::new(EventReader {
            decoder,
            parser: SseParser::default(),
            track: Track {
                received: Vec::new(),
                max_seq: None,
                last_id: None,
                customer: (plan.customers > 0).then(|| (index % plan.customers as usize) as u32),
            },
        }));
        self.readers.borrow_mut().push(Rc::clone(&reader));
        let mut ended = None;
        if !leftover.is_empty() {
            ended = self.consume(&mut reader.borrow_mut(), &leftover);
        }
        drop(leftover);
        // The hot loop: one wake-up, one read. The run ends it by aborting the task.
        while ended.is_none() {
            if let Err(e) = stream.readable().await {
                ended = Some(error_reason(&e));
                break;
            }
            ended = self.drain_socket(&stream, &mut reader.borrow_mut());
        }
        self.open.set(self.open.get() - 1);
        if let Some(reason) = ended {
            *self.stats.borrow_mut().disconnects.entry(reason).or_default() += 1;
        }
    }

    /// Reads everything the socket has; `Some(reason)` when the connection ended.
    fn drain_socket(&self, stream: &TcpStream, reader: &mut EventReader) -> Option<String> {
        let mut scratch = self.scratch.borrow_mut();
        let capacity = scratch.len();
        loop {
            let mut got = 0;
            // A read shorter than the buffer emptied the socket: report WouldBlock from the
            // closure so tokio clears the readiness now, instead of a second read finding
            // nothing (an event arriving meanwhile sets it again).
            let result = stream.try_io(Interest::READABLE, || {
                got = stream.try_read(&mut scratch)?;
                if got > 0 && got < capacity {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(got)
                }
            });
            match result {
                Ok(0) => return Some("closed by server".to_owned()),
                Ok(n) => {
                    if let Some(reason) = self.consume(reader, &scratch[..n]) {
                        return Some(reason);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if got > 0 {
                        self.consume(reader, &scratch[..got])
                    } else {
                        None
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(error_reason(&e)),
            }
        }
    }

    fn consume(&self, reader: &mut EventReader, bytes: &[u8]) -> Option<String> {
        let now_ns = self.clock.now_ns();
        let EventReader { decoder, parser, track } = reader;
        let mut stats = self.stats.borrow_mut();
        let stats = &mut *stats;
        let mut on_item = |item| match item {
            SseItem::Comment => stats.comments += 1,
            SseItem::Retry => stats.retry_fields += 1,
            SseItem::Event { id, seq, data_bytes } => self.judge(stats, track, id, seq, data_bytes, now_ns),
        };
        let body = decoder.feed(bytes, &mut |payload| parser.feed(payload, &mut on_item));
        match body {
            Ok(true) => None,
            Ok(false) => Some("body ended".to_owned()),
            Err(_) => Some("malformed chunked body".to_owned()),
        }
    }

    fn judge(
        &self,
        stats: &mut DeliveryStats,
        reader: &mut Track,
        id: Option<EventId>,
        seq: Option<u64>,
        data_bytes: u32,
        now_ns: u64,
    ) {
        if let Some(id) = id {
            if reader.last_id.is_some_and(|last| id < last) {
                stats.out_of_order_id += 1;
            }
            reader.last_id = Some(id);
        }
        let Some(seq) = seq else {
            stats.unmatched_events += 1;
            return;
        };
        let Some(sent_ns) = self.ledger.sent_ns(seq) else {
            stats.unknown_seq += 1;
            return;
        };
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if reader.received.len() <= word {
            reader.received.resize(word + 1, 0);
        }
        if reader.received[word] & bit != 0 {
            stats.duplicates += 1;
            return;
        }
        reader.received[word] |= bit;
        if let Some(max) = reader.max_seq {
            if seq < max {
                let answered_before_later_sent = match (self.ledger.answered_ns(seq), self.ledger.sent_ns(max)) {
                    (Some(answered), Some(later_sent)) => answered < later_sent,
                    _ => false,
                };
                if answered_before_later_sent {
                    stats.out_of_order_seq += 1;
                }
            } else {
                reader.max_seq = Some(seq);
            }
        } else {
            reader.max_seq = Some(seq);
        }
        stats.delivered += 1;
        stats.data_bytes += u64::from(data_bytes);
        stats
            .latency_us
            .saturating_record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
        if stats.first_delivery_ns == 0 {
            stats.first_delivery_ns = now_ns;
        }
        stats.last_delivery_ns = now_ns;
        let bucket = (now_ns.saturating_sub(self.publish_start_ns.get()) / TIMELINE_BUCKET_NS) as usize;
        if bucket < 100_000 {
            if stats.timeline.len() <= bucket {
                stats.timeline.resize(bucket + 1, 0);
            }
            stats.timeline[bucket] += 1;
        }
    }
}

/// Per-connection reading state.
struct EventReader {
    decoder: BodyDecoder,
    parser: SseParser,
    track: Track,
}

/// What one connection has received so far.
struct Track {
    /// Bitmap of the sequence numbers received.
    received: Vec<u64>,
    max_seq: Option<u64>,
    last_id: Option<EventId>,
    customer: Option<u32>,
}

/// Opens one SSE connection: TCP connect from `source`, request, response head.
async fn connect(
    source: Ipv4Addr,
    plan: &ConnectPlan,
    request: &[u8],
) -> Result<(TcpStream, ResponseHead, Vec<u8>), String> {
    let socket = TcpSocket::new_v4().map_err(|e| error_reason(&e))?;
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .map_err(|e| format!("bind: {}", error_reason(&e)))?;
    let mut stream = socket.connect(plan.target).await.map_err(|e| error_reason(&e))?;
    stream.set_nodelay(true).map_err(|e| error_reason(&e))?;
    stream.write_all(request).await.map_err(|e| error_reason(&e))?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        stream.readable().await.map_err(|e| error_reason(&e))?;
        let mut chunk = [0u8; 2048];
        match stream.try_read(&mut chunk) {
            Ok(0) => return Err("closed before response".to_owned()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(error_reason(&e)),
        }
        match parse_head(&buf) {
            Ok(Some((head, len))) => {
                if head.status != 200 {
                    return Err(format!("status {}", head.status));
                }
                if !head.event_stream {
                    return Err("not text/event-stream".to_owned());
                }
                buf.drain(..len);
                buf.shrink_to_fit();
                return Ok((stream, head, buf));
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn error_reason(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::AddrNotAvailable | io::ErrorKind::AddrInUse => "no source port available".to_owned(),
        io::ErrorKind::TimedOut => "timeout".to_owned(),
        _ => error.to_string(),
    }
}
