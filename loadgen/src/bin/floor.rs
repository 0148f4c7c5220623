//! Bench-only reference: the floor. It accepts connections, answers `GET /sub` with the SSE
//! head and a `retry:` line, and for each `POST /publish` builds the frame once and writes it
//! to every subscriber socket with one write each. No framework, one thread, no per-delivery
//! allocation: its CPU per delivery and its time to write one event to every socket are the
//! physical limit of the machine. It answers a publish only after that fan-out, so the POST
//! latency seen by the load generator is the fan-out time.
//!
//! Customer-scoped streams: `GET /sub?customerId=X` joins channel X, a list of subscribers
//! found by name, and `POST /publish?customerId=X` writes only to that list and to the
//! unfiltered subscribers (plain `GET /sub`); a publish without it goes to every subscriber.
//! The value is taken as written (no percent-decoding); an empty one counts as absent.
//!
//! A socket that is full keeps the rest of the frame in a per-subscriber queue. When a queue
//! passes `--max-pending-bytes`, publishing waits until it has drained below that: nothing is
//! dropped and memory stays bounded, at the price of slower publishes under overload.
#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The floor SSE server (benchmark reference).
#[derive(Debug, Parser)]
#[command(name = "floor", version, about)]
struct Config {
    /// Address to listen on.
    #[arg(long, env = "FLOOR_LISTEN", default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, env = "FLOOR_LISTEN_BACKLOG", default_value_t = 4096)]
    listen_backlog: u32,
    /// Bytes queued for one slow subscriber before publishing waits for it.
    #[arg(long, env = "FLOOR_MAX_PENDING_BYTES", default_value_t = 256 * 1024)]
    max_pending_bytes: usize,
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\nretry: 2000\n\n";
const PUBLISHED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const MAX_REQUEST: usize = 1 << 20;

/// A subscriber socket and whatever a full socket buffer left unwritten.
struct Subscriber {
    stream: TcpStream,
    pending: RefCell<Vec<u8>>,
    closed: Cell<bool>,
    /// Counted in `Hub::congested`.
    over_limit: Cell<bool>,
    hub: Rc<Hub>,
}

#[derive(Default)]
struct Hub {
    /// Subscribers of a customer's channel, by the channel's name.
    channels: RefCell<HashMap<String, Vec<Rc<Subscriber>>>>,
    /// Subscribers without a channel: every event is theirs.
    unfiltered: RefCell<Vec<Rc<Subscriber>>>,
    next_id: Cell<u64>,
    frame: RefCell<Vec<u8>>,
    max_pending: usize,
    /// Subscribers whose queue is above `max_pending`; publishing waits while any is.
    congested: Cell<usize>,
    drained: tokio::sync::Notify,
}

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(config.listen)?;
    let listener = socket.listen(config.listen_backlog)?;
    eprintln!("floor listening on {}", listener.local_addr()?);
    let hub = Rc::new(Hub {
        max_pending: config.max_pending_bytes.max(1),
        ..Hub::default()
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors or a connection reset before accept: keep serving.
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let hub = Rc::clone(&hub);
        tokio::task::spawn_local(async move {
            let _ = connection(hub, stream).await;
        });
    }
}

/// Serves requests on one connection until it becomes a subscriber or closes.
async fn connection(hub: Rc<Hub>, mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let head_end = loop {
            if let Some(at) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > MAX_REQUEST || stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut request_line = head.split_whitespace();
        let (method, target) = (request_line.next().unwrap_or(""), request_line.next().unwrap_or(""));
        let (path, channel) = split_target(target);
        match (method, path) {
            ("GET", "/sub") => {
                stream.write_all(SSE_HEAD).await?;
                let subscriber = Rc::new(Subscriber {
                    stream,
                    pending: RefCell::new(Vec::new()),
                    closed: Cell::new(false),
                    over_limit: Cell::new(false),
                    hub: Rc::clone(&hub),
                });
                match channel {
                    Some(name) => hub
                        .channels
                        .borrow_mut()
                        .entry(name.to_owned())
                        .or_default()
                        .push(subscriber),
                    None => hub.unfiltered.borrow_mut().push(subscriber),
                }
                return Ok(());
            }
            ("POST", "/publish") => {
                let length = content_length(&head).unwrap_or(0);
                while buf.len() < head_end + length {
                    if stream.read_buf(&mut buf).await? == 0 {
                        return Ok(());
                    }
                }
                while hub.congested.get() > 0 {
                    hub.drained.notified().await;
                }
                hub.publish(channel, &buf[head_end..head_end + length]);
                buf.drain(..head_end + length);
                stream.write_all(PUBLISHED).await?;
            }
            _ => {
                stream.write_all(NOT_FOUND).await?;
                return Ok(());
            }
        }
    }
}

impl Hub {
    /// Builds the frame once and writes it to the subscribers of `channel` and the unfiltered
    /// ones, or without a channel to every subscriber: one write each.
    fn publish(&self, channel: Option<&str>, body: &[u8]) {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        let mut frame = self.frame.borrow_mut();
        frame.clear();
        frame.extend_from_slice(b"id: ");
        frame.extend_from_slice(id.to_string().as_bytes());
        frame.extend_from_slice(b"\nevent: message\ndata: ");
        frame.extend_from_slice(body);
        frame.extend_from_slice(b"\n\n");
        let mut channels = self.channels.borrow_mut();
        match channel {
            Some(name) => {
                if let Some(subscribers) = channels.get_mut(name) {
                    send_all(subscribers, &frame);
                    if subscribers.is_empty() {
                        channels.remove(name);
                    }
                }
            }
            None => channels.retain(|_, subscribers| {
                send_all(subscribers, &frame);
                !subscribers.is_empty()
            }),
        }
        send_all(&mut self.unfiltered.borrow_mut(), &frame);
    }

    fn leave_congestion(&self) {
        let congested = self.congested.get().saturating_sub(1);
        self.congested.set(congested);
        if congested == 0 {
            self.drained.notify_waiters();
        }
    }
}

/// Writes `frame` to each of `subscribers` and lets go of those that turned out closed.
fn send_all(subscribers: &mut Vec<Rc<Subscriber>>, frame: &[u8]) {
    let mut any_closed = false;
    for subscriber in subscribers.iter() {
        subscriber.send(frame);
        any_closed |= subscriber.closed.get();
    }
    if any_closed {
        subscribers.retain(|s| !s.closed.get());
    }
}

impl Subscriber {
    fn send(self: &Rc<Self>, frame: &[u8]) {
        if self.closed.get() {
            return;
        }
        let mut pending = self.pending.borrow_mut();
        if !pending.is_empty() {
            // A flusher is already waiting for room; keep the order.
            pending.extend_from_slice(frame);
            if pending.len() > self.hub.max_pending && !self.over_limit.get() {
                self.over_limit.set(true);
                self.hub.congested.set(self.hub.congested.get() + 1);
            }
            return;
        }
        match self.stream.try_write(frame) {
            Ok(n) if n == frame.len() => {}
            Ok(n) => {
                pending.extend_from_slice(&frame[n..]);
                self.spawn_flusher();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pending.extend_from_slice(frame);
                self.spawn_flusher();
            }
            Err(_) => {
                drop(pending);
                self.close();
            }
        }
    }

    fn close(&self) {
        self.closed.set(true);
        self.pending.borrow_mut().clear();
        if self.over_limit.replace(false) {
            self.hub.leave_congestion();
        }
    }

    fn spawn_flusher(self: &Rc<Self>) {
        let this = Rc::clone(self);
        tokio::task::spawn_local(async move {
            loop {
                if this.stream.writable().await.is_err() {
                    this.close();
                    return;
                }
                let mut pending = this.pending.borrow_mut();
                match this.stream.try_write(&pending) {
                    Ok(n) => {
                        pending.drain(..n);
                        if pending.len() <= this.hub.max_pending && this.over_limit.replace(false) {
                            this.hub.leave_congestion();
                        }
                        if pending.is_empty() {
                            *pending = Vec::new();
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        drop(pending);
                        this.close();
                        return;
                    }
                }
            }
        });
    }
}

/// The path of a request target and the channel its `customerId` query argument names.
fn split_target(target: &str) -> (&str, Option<&str>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let channel = query
        .split('&')
        .find_map(|argument| argument.strip_prefix("customerId="))
        .filter(|name| !name.is_empty());
    (path, channel)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_a_customer_names_no_channel() {
        assert_eq!(split_target("/sub"), ("/sub", None));
        assert_eq!(split_target("/sub?x=1"), ("/sub", None));
        assert_eq!(split_target("/publish?customerId="), ("/publish", None));
    }

    #[test]
    fn the_customer_argument_names_the_channel_wherever_it_is_in_the_query() {
        assert_eq!(split_target("/sub?customerId=c7"), ("/sub", Some("c7")));
        assert_eq!(split_target("/publish?x=1&customerId=c7&y=2"), ("/publish", Some("c7")));
    }
}
