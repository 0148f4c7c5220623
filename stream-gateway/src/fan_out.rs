//! `FanOut`: one task that writes each new event straight into the socket of every caught-up
//! HTTP/1.1 connection, so a delivery costs one `write` and no task wake-up. A connection
//! whose socket has no room, or whose cursor falls behind the ring, is handed back to its own
//! task with exactly the bytes and cursor it still owes; it parks again once it has caught up.
//!
//! Connections are grouped by the customer they may see: unfiltered ones get every event,
//! a customer's group only that customer's events, so a round costs one write per connection
//! that receives something, however many customers are connected. Each group keeps its own
//! heartbeat clock.

use std::collections::HashMap;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use order_events::frame::EncodedEvent;
use order_events::frame::HEARTBEAT;
use order_events::metrics::Metrics;
use order_events::position::StreamPosition;
use order_events::ring::{EventRing, RingRead};
use parking_lot::Mutex;
use prometheus::core::{AtomicF64, GenericCounter};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::delivery::{join, record_delivery, sleep_until_opt};

/// Bytes of events written to a connection in one `write`.
const CHUNK_BYTES: usize = 64 * 1024;
const CHUNK_EVENTS: usize = 1024;
/// Sockets written between two yields to the scheduler, so accepts and publishes run during a
/// long fan-out round.
const WRITES_PER_YIELD: usize = 256;
/// Longest time a departed connection's socket stays open before the writer lets go of it.
const PURGE_DELAY: Duration = Duration::from_millis(250);

/// What a parked connection gets back when the fan-out stops writing for it.
#[derive(Debug)]
pub enum Handoff {
    /// Write `pending` first (events up to and including `cursor`), then continue from `cursor`.
    Resume { cursor: StreamPosition, pending: Bytes },
    /// The socket failed: the connection is over.
    Failed,
}

/// A parked connection's side of the hand-off.
pub struct Slot {
    handoff: Mutex<Option<Handoff>>,
    returned: Notify,
    gone: AtomicBool,
    /// The connection asked to be handed back (its token expires).
    recall: AtomicBool,
}

impl Slot {
    /// Waits until the fan-out hands the connection back.
    pub async fn handed_back(&self) -> Handoff {
        loop {
            if let Some(handoff) = self.handoff.lock().take() {
                return handoff;
            }
            self.returned.notified().await;
        }
    }

    fn give(&self, handoff: Handoff) {
        *self.handoff.lock() = Some(handoff);
        self.returned.notify_one();
    }
}

/// Leaves the fan-out when dropped (the client went away or its task ended).
pub struct Parked {
    slot: Arc<Slot>,
    fan_out: Arc<FanOut>,
}

impl Parked {
    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    /// Asks the writer to hand the connection back at its next round (it still owns the
    /// socket until then, so only it may write).
    pub fn recall(&self) {
        if !self.slot.recall.swap(true, Ordering::AcqRel) {
            self.fan_out.recalled.fetch_add(1, Ordering::AcqRel);
            self.fan_out.wake.notify_one();
        }
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        if !self.slot.gone.swap(true, Ordering::AcqRel) {
            // The first departure since the last purge wakes the writer; the rest only count.
            if self.fan_out.departed.fetch_add(1, Ordering::AcqRel) == 0 {
                self.fan_out.wake.notify_one();
            }
        }
    }
}

struct Member {
    stream: Arc<TcpStream>,
    slot: Arc<Slot>,
}

impl Member {
    /// Gives the connection back to its task; the socket is released first so only the task
    /// writes to it from now on.
    fn hand_back(self, handoff: Handoff, metrics: &Metrics) {
        metrics.fan_out_handbacks.inc();
        drop(self.stream);
        self.slot.gone.store(true, Ordering::Release);
        self.slot.give(handoff);
    }
}

struct Joiner {
    cursor: StreamPosition,
    customer: Option<Arc<str>>,
    member: Member,
}

/// Connections that receive the same events, and when they were last written.
struct Group {
    members: Vec<Member>,
    last_write: Instant,
}

impl Group {
    fn new() -> Self {
        Self {
            members: Vec::new(),
            last_write: Instant::now(),
        }
    }
}

/// Every parked connection: the unfiltered ones and one group per customer.
struct Members {
    all: Group,
    by_customer: HashMap<Arc<str>, Group>,
}

impl Members {
    fn len(&self) -> usize {
        self.all.members.len() + self.by_customer.values().map(|g| g.members.len()).sum::<usize>()
    }

    fn groups_mut(&mut self) -> impl Iterator<Item = &mut Group> {
        std::iter::once(&mut self.all).chain(self.by_customer.values_mut())
    }

    fn push(&mut self, customer: Option<Arc<str>>, member: Member) {
        match customer {
            None => self.all.members.push(member),
            Some(customer) => self
                .by_customer
                .entry(customer)
                .or_insert_with(Group::new)
                .members
                .push(member),
        }
    }

    fn retain(&mut self, keep: impl Fn(&Member) -> bool) {
        for group in self.groups_mut() {
            group.members.retain(&keep);
        }
        self.by_customer.retain(|_, group| !group.members.is_empty());
    }

    /// Hands every member back (with `handoff` made per member).
    fn hand_back_all(&mut self, cursor: StreamPosition, metrics: &Metrics) {
        for group in self.groups_mut() {
            for member in group.members.drain(..) {
                member.hand_back(resume_at(cursor), metrics);
            }
        }
        self.by_customer.clear();
    }
}

#[derive(Default)]
struct Joins {
    waiting: Vec<Joiner>,
    closed: bool,
}

pub struct FanOut {
    joins: Mutex<Joins>,
    wake: Notify,
    /// Parked connections that left since the last purge of the members.
    departed: AtomicUsize,
    /// Parked connections that asked to be handed back.
    recalled: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// Events after one cursor, cut into writes.
struct Chunk {
    bytes: Bytes,
    last: StreamPosition,
    events: u64,
    /// When its oldest event was created, for the delivery lag.
    oldest_ms: u64,
}

enum Written {
    All,
    Short(Handoff),
}

/// CPU time used so far by the calling thread.
fn thread_cpu() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

/// One wake-up of the writer: counts its writes so it yields every few hundred, and measures
/// the CPU it uses between yields. The clock stops across each await, so the figure is the
/// writer's own work on whichever worker thread runs it, which is what
/// `fan_out_cpu_seconds_total` divided by `fan_out_deliveries_total` reports per delivery.
struct Round {
    writes: usize,
    started: Duration,
    spent: Duration,
}

impl Round {
    fn start() -> Self {
        Self {
            writes: 0,
            started: thread_cpu(),
            spent: Duration::ZERO,
        }
    }

    /// Counts one socket write; every `WRITES_PER_YIELD` lets accepts and publishes run.
    async fn count_write(&mut self) {
        self.writes += 1;
        if self.writes % WRITES_PER_YIELD == 0 {
            self.spent += thread_cpu().saturating_sub(self.started);
            tokio::task::yield_now().await;
            self.started = thread_cpu();
        }
    }

    /// The CPU used since the last lap, added to `counter`.
    fn lap(&mut self, counter: &GenericCounter<AtomicF64>) {
        let now = thread_cpu();
        let spent = self.spent + now.saturating_sub(self.started);
        self.spent = Duration::ZERO;
        self.started = now;
        counter.inc_by(spent.as_secs_f64());
    }
}

/// Why the writer woke up.
enum Wake {
    Heartbeat,
    Other,
}

impl FanOut {
    /// Starts the writer over `ring`; it hands every connection back when `stop` fires.
    pub fn spawn(
        ring: Arc<EventRing>,
        heartbeat: Duration,
        stop: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let fan_out = Arc::new(Self {
            joins: Mutex::new(Joins::default()),
            wake: Notify::new(),
            departed: AtomicUsize::new(0),
            recalled: AtomicUsize::new(0),
            metrics,
        });
        tokio::spawn(fan_out.clone().run(ring, heartbeat, stop));
        fan_out
    }

    /// Parks a connection whose stream has been written up to `cursor` and that sees only
    /// `customer`'s events when given. `None` once the fan-out has stopped: the connection
    /// carries on by itself.
    pub fn park(
        self: &Arc<Self>,
        cursor: StreamPosition,
        customer: Option<Arc<str>>,
        stream: Arc<TcpStream>,
    ) -> Option<Parked> {
        let slot = Arc::new(Slot {
            handoff: Mutex::new(None),
            returned: Notify::new(),
            gone: AtomicBool::new(false),
            recall: AtomicBool::new(false),
        });
        {
            let mut joins = self.joins.lock();
            if joins.closed {
                return None;
            }
            joins.waiting.push(Joiner {
                cursor,
                customer,
                member: Member {
                    stream,
                    slot: slot.clone(),
                },
            });
        }
        self.wake.notify_one();
        Some(Parked {
            slot,
            fan_out: self.clone(),
        })
    }

    async fn run(self: Arc<Self>, ring: Arc<EventRing>, heartbeat: Duration, stop: CancellationToken) {
        let mut changes = ring.subscribe();
        let mut members = Members {
            all: Group::new(),
            by_customer: HashMap::new(),
        };
        let mut cursor = ring.newest();
        // A restarted ring may hold another history: every connection then checks its cursor.
        let mut generation = ring.generation();
        let mut chunks = Vec::new();
        let mut purge_at: Option<Instant> = None;
        // Heartbeats go out on a tick of an eighth of the interval, to every group that would
        // otherwise be silent for longer than the interval by the next tick: no round has to
        // work out when the next one is due, however many customers are connected.
        let beat_every = (heartbeat / 8).max(Duration::from_millis(1));
        let mut next_beat = Instant::now() + beat_every;
        let cpu_of = |work: &str| self.metrics.fan_out_cpu.with_label_values(&[work]);
        let (events_cpu, heartbeats_cpu, admissions_cpu) =
            (cpu_of("events"), cpu_of("heartbeats"), cpu_of("admissions"));
        loop {
            let wake = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = changes.changed() => Wake::Other,
                _ = self.wake.notified() => Wake::Other,
                _ = sleep_until_opt(purge_at) => Wake::Other,
                _ = tokio::time::sleep_until(next_beat) => Wake::Heartbeat,
            };
            let mut round = Round::start();
            // Whether members left or joined in this round: only then are emptied groups
            // dropped and the parked gauge counted, both walks over every group.
            let mut membership_changed = false;
            if let Wake::Heartbeat = wake {
                let now = Instant::now();
                let beat = Chunk {
                    bytes: HEARTBEAT,
                    last: cursor,
                    events: 0,
                    oldest_ms: 0,
                };
                for group in members.groups_mut() {
                    if group.last_write + heartbeat <= now + beat_every && !group.members.is_empty() {
                        group.last_write = now;
                        write_to_members(&mut group.members, &beat, &mut round, &self.metrics).await;
                    }
                }
                next_beat = now + beat_every;
                // Members may have left; the gauge is counted again on every tick anyway.
                membership_changed = true;
                round.lap(&heartbeats_cpu);
            }
            changes.borrow_and_update();
            // A purge walks every member: when many leave at once (a client-side restart, a
            // network blip) it runs once per batch of departures or once per PURGE_DELAY, not
            // once per departure. Rounds that write skip departed members anyway.
            let departed = self.departed.load(Ordering::Acquire);
            if departed > 0 {
                let due = *purge_at.get_or_insert_with(|| Instant::now() + PURGE_DELAY);
                if departed >= members.len() / 16 || Instant::now() >= due {
                    self.departed.store(0, Ordering::Release);
                    purge_at = None;
                    members.retain(|member| !member.slot.gone.load(Ordering::Acquire));
                    membership_changed = true;
                }
            }
            if self.recalled.swap(0, Ordering::AcqRel) > 0 {
                for group in members.groups_mut() {
                    let mut index = 0;
                    while index < group.members.len() {
                        if group.members[index].slot.recall.load(Ordering::Acquire) {
                            group
                                .members
                                .swap_remove(index)
                                .hand_back(resume_at(cursor), &self.metrics);
                        } else {
                            index += 1;
                        }
                    }
                }
                membership_changed = true;
            }

            let newest = ring.newest();
            let current = ring.generation();
            let restarted = current != generation;
            generation = current;
            if restarted || newest == StreamPosition::MAX || newest < cursor {
                // The ring does not follow a log yet, or restarted below us: every connection
                // finds its own way from its cursor.
                members.hand_back_all(cursor, &self.metrics);
                membership_changed = true;
                if newest != StreamPosition::MAX {
                    cursor = newest;
                }
            } else if newest > cursor {
                chunks.clear();
                if read_event_chunks(&ring, cursor, newest, &mut chunks) {
                    let now = Instant::now();
                    for chunk in &chunks {
                        if !members.all.members.is_empty() {
                            let mut frames = chunk.events.iter().map(|e| e.frame.clone()).collect();
                            let all = Chunk {
                                bytes: join(&mut frames),
                                last: chunk.last,
                                events: chunk.events.len() as u64,
                                oldest_ms: chunk.first_ms,
                            };
                            membership_changed |=
                                write_to_members(&mut members.all.members, &all, &mut round, &self.metrics).await;
                            members.all.last_write = now;
                        }
                        if !members.by_customer.is_empty() {
                            membership_changed |=
                                write_by_customer(&mut members.by_customer, chunk, now, &mut round, &self.metrics)
                                    .await;
                        }
                    }
                    if let Some(chunk) = chunks.last() {
                        cursor = chunk.last;
                    }
                } else {
                    members.hand_back_all(cursor, &self.metrics);
                    membership_changed = true;
                    cursor = newest;
                }
            }

            let joiners = std::mem::take(&mut self.joins.lock().waiting);
            if !joiners.is_empty() {
                round.lap(&events_cpu);
                self.admit(&ring, cursor, joiners, &mut members, &mut round).await;
                round.lap(&admissions_cpu);
                membership_changed = true;
            }
            if membership_changed {
                members.by_customer.retain(|_, group| !group.members.is_empty());
                self.metrics.fan_out_parked.set(members.len() as i64);
            }
            round.lap(&events_cpu);
        }
        let joiners = {
            let mut joins = self.joins.lock();
            joins.closed = true;
            std::mem::take(&mut joins.waiting)
        };
        for joiner in joiners {
            joiner.member.hand_back(resume_at(joiner.cursor), &self.metrics);
        }
        members.hand_back_all(cursor, &self.metrics);
        self.metrics.fan_out_parked.set(0);
    }

    /// Brings joiners up to `cursor` one by one and adds those whose sockets took it all.
    async fn admit(
        &self,
        ring: &EventRing,
        cursor: StreamPosition,
        joiners: Vec<Joiner>,
        members: &mut Members,
        round: &mut Round,
    ) {
        let mut catch_up: Option<(StreamPosition, Option<Arc<str>>, Vec<Chunk>)> = None;
        for joiner in joiners {
            round.count_write().await;
            if joiner.member.slot.gone.load(Ordering::Acquire) {
                continue;
            }
            if joiner.member.slot.recall.load(Ordering::Acquire) {
                joiner.member.hand_back(resume_at(joiner.cursor), &self.metrics);
                continue;
            }
            if joiner.cursor == cursor {
                members.push(joiner.customer, joiner.member);
                continue;
            }
            if joiner.cursor > cursor {
                joiner.member.hand_back(resume_at(joiner.cursor), &self.metrics);
                continue;
            }
            if catch_up
                .as_ref()
                .is_none_or(|(from, customer, _)| *from != joiner.cursor || *customer != joiner.customer)
            {
                let mut chunks = Vec::new();
                // Only what the fan-out has already written to its members: later events come
                // with the next round.
                let held = read_chunks(ring, joiner.cursor, cursor, joiner.customer.as_deref(), &mut chunks);
                catch_up = held.then_some((joiner.cursor, joiner.customer.clone(), chunks));
            }
            let Some((_, _, chunks)) = &catch_up else {
                joiner.member.hand_back(resume_at(joiner.cursor), &self.metrics);
                continue;
            };
            if chunks.last().is_none_or(|chunk| chunk.last != cursor) {
                // The ring no longer reaches the fan-out's cursor (it restarted): the connection
                // reads on by itself.
                joiner.member.hand_back(resume_at(joiner.cursor), &self.metrics);
                continue;
            }
            let mut refused = None;
            for chunk in chunks.iter().filter(|chunk| !chunk.bytes.is_empty()) {
                match write_chunk(&joiner.member.stream, chunk) {
                    Ok(Written::All) => record_fan_out(&self.metrics, 1, chunk),
                    Ok(Written::Short(handoff)) => {
                        record_fan_out(&self.metrics, 1, chunk);
                        refused = Some(handoff);
                        break;
                    }
                    Err(_) => {
                        refused = Some(Handoff::Failed);
                        break;
                    }
                }
            }
            match refused {
                Some(handoff) => joiner.member.hand_back(handoff, &self.metrics),
                None => members.push(joiner.customer, joiner.member),
            }
        }
    }
}

fn resume_at(cursor: StreamPosition) -> Handoff {
    Handoff::Resume {
        cursor,
        pending: Bytes::new(),
    }
}

/// Cuts the events after `cursor` up to `until` (only `customer`'s, when given) into chunks;
/// false when some of them already left the ring. A chunk's `last` is the position read up to,
/// which may be past its last frame when the filter skipped events.
fn read_chunks(
    ring: &EventRing,
    mut cursor: StreamPosition,
    until: StreamPosition,
    customer: Option<&str>,
    chunks: &mut Vec<Chunk>,
) -> bool {
    let mut frames = Vec::new();
    loop {
        frames.clear();
        match ring.read_range(cursor, until, CHUNK_EVENTS, CHUNK_BYTES, customer, &mut frames) {
            RingRead::Behind => return false,
            RingRead::UpToDate => return true,
            RingRead::Events { count, last, first_ms } => {
                cursor = last;
                chunks.push(Chunk {
                    bytes: join(&mut frames),
                    last,
                    events: count as u64,
                    oldest_ms: first_ms,
                });
            }
        }
    }
}

/// Events of one round, cut into writes, with their customers.
struct EventChunk {
    events: Vec<EncodedEvent>,
    last: StreamPosition,
    first_ms: u64,
}

/// Like [`read_chunks`], keeping whole events so they can be sorted by customer.
fn read_event_chunks(
    ring: &EventRing,
    mut cursor: StreamPosition,
    until: StreamPosition,
    chunks: &mut Vec<EventChunk>,
) -> bool {
    loop {
        let mut events = Vec::new();
        match ring.read_events(cursor, until, CHUNK_EVENTS, CHUNK_BYTES, &mut events) {
            RingRead::Behind => return false,
            RingRead::UpToDate => return true,
            RingRead::Events { last, first_ms, .. } => {
                cursor = last;
                chunks.push(EventChunk { events, last, first_ms });
            }
        }
    }
}

/// Writes each customer's events of `chunk` to that customer's group, in order; customers
/// without parked connections cost a map lookup. True when some member left a group.
async fn write_by_customer(
    groups: &mut HashMap<Arc<str>, Group>,
    chunk: &EventChunk,
    now: Instant,
    round: &mut Round,
    metrics: &Metrics,
) -> bool {
    let mut removed = false;
    let mut frames_of: HashMap<&str, (u64, Vec<Bytes>)> = HashMap::new();
    for event in &chunk.events {
        if groups.contains_key(&*event.customer_id) {
            frames_of
                .entry(&event.customer_id)
                .or_insert_with(|| (event.position.ms, Vec::new()))
                .1
                .push(event.frame.clone());
        }
    }
    for (customer, (oldest_ms, mut frames)) in frames_of {
        let Some(group) = groups.get_mut(customer) else {
            continue;
        };
        let events = frames.len() as u64;
        let own = Chunk {
            bytes: join(&mut frames),
            last: chunk.last,
            events,
            oldest_ms,
        };
        removed |= write_to_members(&mut group.members, &own, round, metrics).await;
        group.last_write = now;
    }
    removed
}

/// Writes one chunk to every member; members whose socket is full or failed are handed back.
/// `round` counts across calls so a round yields to the scheduler every few hundred writes.
/// True when some member was removed.
async fn write_to_members(members: &mut Vec<Member>, chunk: &Chunk, round: &mut Round, metrics: &Metrics) -> bool {
    let before = members.len();
    let mut index = 0;
    let mut delivered = 0;
    while index < members.len() {
        round.count_write().await;
        let member = &members[index];
        if member.slot.gone.load(Ordering::Acquire) {
            members.swap_remove(index);
            continue;
        }
        match write_chunk(&member.stream, chunk) {
            Ok(Written::All) => {
                delivered += 1;
                index += 1;
            }
            Ok(Written::Short(handoff)) => {
                delivered += 1;
                members.swap_remove(index).hand_back(handoff, metrics);
            }
            Err(_) => members.swap_remove(index).hand_back(Handoff::Failed, metrics),
        }
    }
    record_fan_out(metrics, delivered, chunk);
    members.len() != before
}

/// One `write`; what it could not take is handed back with the chunk's last position.
fn write_chunk(stream: &TcpStream, chunk: &Chunk) -> io::Result<Written> {
    match stream.try_write(&chunk.bytes) {
        Ok(written) if written == chunk.bytes.len() => Ok(Written::All),
        Ok(written) => Ok(Written::Short(Handoff::Resume {
            cursor: chunk.last,
            pending: chunk.bytes.slice(written..),
        })),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(Written::Short(Handoff::Resume {
            cursor: chunk.last,
            pending: chunk.bytes.clone(),
        })),
        Err(error) => Err(error),
    }
}

/// Counts what the writer delivered: the deliveries (and their lag) every writer records, and
/// the writer's own share of them.
fn record_fan_out(metrics: &Metrics, clients: u64, chunk: &Chunk) {
    record_delivery(metrics, clients, chunk.events, chunk.oldest_ms);
    metrics.fan_out_deliveries.inc_by(clients * chunk.events);
}
