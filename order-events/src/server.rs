//! Binding with a configurable backlog and serving a router over HTTP/1.1 and h2c until the
//! lifecycle stops, then draining open connections with a deadline.
//!
//! Before a connection reaches hyper, its first request head is read here so that an
//! [`Interceptor`] can take connections it serves more cheaply itself (the SSE stream: one
//! shared frame written per event, with no per-connection HTTP machinery). Everything else,
//! including HTTP/2, goes to hyper with the bytes already read put back in front, through a
//! reader that checks every later request head of the connection the same way (`guard`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{self, StatusCode};
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::{ConnectionArgs, ListenArgs};
use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::shutdown::Lifecycle;

mod guard;

use guard::Guarded;

/// Binds the listen address with `SO_REUSEADDR` and the configured accept backlog (the default
/// of 128 drops connections when thousands of clients reconnect at once).
pub fn bind(args: &ListenArgs) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(args.listen), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&args.listen.into())?;
    socket.listen(args.listen_backlog as i32)?;
    TcpListener::from_std(socket.into())
}

/// The parsed head of a connection's first HTTP/1.x request.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Minor version: 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Whether the `Host` header obeys [`crate::ops::host_problem`].
    pub fn host_is_valid(&self) -> bool {
        let version = if self.version == 1 {
            axum::http::Version::HTTP_11
        } else {
            axum::http::Version::HTTP_10
        };
        let hosts = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.as_slice());
        let authority = self
            .target
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(""));
        crate::ops::host_problem(version, hosts, authority).is_none()
    }

    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Serves some requests without hyper. Only the connection's first request is offered, and
/// a connection taken is the interceptor's until it closes it.
pub trait Interceptor: Send + Sync + 'static {
    fn wants(&self, head: &RequestHead) -> bool;
    fn serve(self: Arc<Self>, stream: TcpStream, head: RequestHead) -> BoxFuture<'static, ()>;
}

const MAX_HEAD_BYTES: usize = 8 * 1024;
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";
/// After an accept fails for lack of file descriptors: time for connections to close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` until `lifecycle` stops, offering each connection's first request to
/// `interceptor` first, then waits at most `grace` for open connections.
pub async fn serve_with(
    listener: TcpListener,
    connection: ConnectionArgs,
    router: Router,
    interceptor: Option<Arc<dyn Interceptor>>,
    lifecycle: Lifecycle,
    grace: Duration,
    metrics: Arc<Metrics>,
) -> io::Result<()> {
    let stop = lifecycle.stop_token();
    let tracker = TaskTracker::new();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let mut accept_failures = AcceptFailures::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                accept_failures.recovered();
                stream
            }
            Err(error) => {
                // Running out of file descriptors must not spin or stop the server: wait a
                // little for connections to close (the timeouts below see to that) and go on.
                if accept_failures.failed(&error, &metrics) {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let accepted_at = Instant::now();
        // Small SSE frames must leave at once rather than wait for Nagle's algorithm.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let router = router.clone();
        let builder = builder.clone();
        let interceptor = interceptor.clone();
        let stop = stop.clone();
        let connection = connection.clone();
        let metrics = metrics.clone();
        tracker.spawn(async move {
            let head_deadline = accepted_at + connection.header_read_timeout;
            let Some((stream, read, protocol)) = offer(stream, interceptor, head_deadline, &stop, &metrics).await
            else {
                return;
            };
            let activity = Arc::new(Activity::new(accepted_at));
            let io = Guarded::new(stream, read, protocol, activity.clone(), metrics.clone());
            let service = TowerToHyperService::new(TrackedService {
                router,
                activity: activity.clone(),
            });
            let served = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            let mut served = std::pin::pin!(served);
            let mut draining = false;
            loop {
                tokio::select! {
                    result = served.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%error, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stop.cancelled(), if !draining => {
                        served.as_mut().graceful_shutdown();
                        draining = true;
                    }
                    // A later head was refused: the responses before it are finished, then the
                    // refusal is written and the connection closed.
                    _ = activity.refused(), if !draining => {
                        served.as_mut().graceful_shutdown();
                        draining = true;
                    }
                    reason = activity.expired(&connection, protocol), if !draining => {
                        // Nothing is in flight: closing loses no request.
                        metrics.connections_closed.with_label_values(&[reason]).inc();
                        break;
                    }
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            ?grace,
            "connections still open after the shutdown grace; exiting anyway"
        );
    }
    Ok(())
}

/// Logs accept failures once per burst and counts every one of them.
#[derive(Default)]
struct AcceptFailures {
    in_burst: u64,
}

impl AcceptFailures {
    /// Records a failed accept; true when the server should pause before the next one.
    fn failed(&mut self, error: &io::Error, metrics: &Metrics) -> bool {
        // EMFILE (24): this process' limit; ENFILE (23): the system's; ENOBUFS/ENOMEM alike.
        let exhausted = matches!(error.raw_os_error(), Some(23 | 24 | 105 | 12));
        let kind = if exhausted { "fd_exhausted" } else { "other" };
        metrics.accept_errors.with_label_values(&[kind]).inc();
        if self.in_burst == 0 {
            if exhausted {
                tracing::warn!(%error, "out of file descriptors: pausing accepts briefly, open connections keep being served");
            } else {
                tracing::warn!(%error, "accept failed");
            }
        }
        self.in_burst += 1;
        exhausted
    }

    fn recovered(&mut self) {
        if self.in_burst > 0 {
            tracing::info!(failed = self.in_burst, "accepting connections again");
            self.in_burst = 0;
        }
    }
}

/// Which protocol hyper will speak on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireProtocol {
    Http1,
    H2,
}

/// What a connection is doing, for its timeouts: how many requests are in flight (a response
/// body still being sent counts, so an open stream is never idle) and since when nothing is.
struct Activity {
    state: watch::Sender<ActivityState>,
    /// Whether a byte arrived since the connection became idle (starts a keep-alive head's clock).
    head_started: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct ActivityState {
    in_flight: usize,
    requests: u64,
    idle_since: Instant,
    head_started_at: Option<Instant>,
    /// A request head was refused: the connection closes once its earlier responses are done.
    refused: bool,
}

impl Activity {
    fn new(accepted_at: Instant) -> Self {
        Self {
            state: watch::Sender::new(ActivityState {
                in_flight: 0,
                requests: 0,
                idle_since: accepted_at,
                head_started_at: None,
                refused: false,
            }),
            head_started: AtomicBool::new(false),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.state.send_modify(|state| {
            state.in_flight += 1;
            state.requests += 1;
            state.head_started_at = None;
        });
        InFlight(self.clone())
    }

    fn bytes_arrived(&self) {
        if self.head_started.swap(true, Ordering::Relaxed) {
            return;
        }
        self.state.send_if_modified(|state| {
            let starts = state.in_flight == 0 && state.head_started_at.is_none();
            if starts {
                state.head_started_at = Some(Instant::now());
            }
            starts
        });
    }

    fn refuse(&self) {
        self.state.send_modify(|state| state.refused = true);
    }

    /// Completes once a request head has been refused.
    async fn refused(&self) {
        let mut state = self.state.subscribe();
        if state.wait_for(|state| state.refused).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Completes, with the reason, once the connection has been idle too long or has taken too
    /// long over a request head; never while a request is in flight.
    async fn expired(&self, limits: &ConnectionArgs, protocol: WireProtocol) -> &'static str {
        let mut state = self.state.subscribe();
        loop {
            let now = *state.borrow_and_update();
            let deadline = if now.in_flight > 0 {
                None
            } else if now.requests == 0 {
                // The first request's head (for h2: its HEADERS) is due within the head timeout.
                Some((now.idle_since + limits.header_read_timeout, "header_timeout"))
            } else {
                let idle = (now.idle_since + limits.idle_timeout, "idle_timeout");
                match (protocol, now.head_started_at) {
                    // HTTP/2 frames between requests (pings, window updates) are no request head.
                    (WireProtocol::Http1, Some(started)) => {
                        Some(idle.min((started + limits.header_read_timeout, "header_timeout")))
                    }
                    _ => Some(idle),
                }
            };
            match deadline {
                Some((at, reason)) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => return reason,
                    changed = state.changed() => if changed.is_err() { std::future::pending::<()>().await },
                },
                None => {
                    if state.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

/// One request in flight; dropped when its response body is done (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.send_modify(|state| {
            state.in_flight -= 1;
            if state.in_flight == 0 {
                state.idle_since = Instant::now();
                state.head_started_at = None;
            }
        });
        self.0.head_started.store(false, Ordering::Relaxed);
    }
}

/// The router, with every request and its response body counted as in flight.
#[derive(Clone)]
struct TrackedService {
    router: Router,
    activity: Arc<Activity>,
}

impl tower::Service<http::Request<hyper::body::Incoming>> for TrackedService {
    type Response = http::Response<TrackedBody>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            Ok(response.map(|body| TrackedBody {
                inner: body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Reads the first request head, all of it before `deadline`; hands the connection to the
/// interceptor when it wants it, else returns it with the bytes read, for hyper. A head that
/// is late, malformed or too large is answered (408, 400, 431) and the connection closed here.
async fn offer(
    mut stream: TcpStream,
    interceptor: Option<Arc<dyn Interceptor>>,
    deadline: Instant,
    stop: &tokio_util::sync::CancellationToken,
    metrics: &Metrics,
) -> Option<(TcpStream, BytesMut, WireProtocol)> {
    let mut buffer = BytesMut::with_capacity(1024);
    let head = loop {
        // A connection that has not sent its request when the server stops is simply closed.
        let read = tokio::select! {
            _ = stop.cancelled() => return None,
            read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buffer)) => read,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Err(_) => {
                metrics.connections_closed.with_label_values(&["header_timeout"]).inc();
                if !buffer.is_empty() {
                    refuse(
                        &stream,
                        &Problem::new(
                            StatusCode::REQUEST_TIMEOUT,
                            "/problems/request-timeout",
                            "Request head not received in time",
                        ),
                    );
                }
                return None;
            }
            Ok(Ok(_)) => {}
        }
        // HTTP/2 with prior knowledge: hyper's.
        let seen = buffer.len().min(H2_PREFACE_START.len());
        if H2_PREFACE_START.starts_with(&buffer[..seen]) {
            if seen == H2_PREFACE_START.len() {
                return Some((stream, buffer, WireProtocol::H2));
            }
            continue;
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buffer) {
            Ok(httparse::Status::Complete(_)) => {
                break Some(RequestHead {
                    method: request.method.unwrap_or("").to_owned(),
                    target: request.path.unwrap_or("").to_owned(),
                    version: request.version.unwrap_or(0),
                    headers: request
                        .headers
                        .iter()
                        .map(|h| (h.name.to_owned(), h.value.to_vec()))
                        .collect(),
                });
            }
            Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD_BYTES => continue,
            Ok(httparse::Status::Partial) => {
                metrics.connections_closed.with_label_values(&["head_too_large"]).inc();
                refuse(&stream, &guard::head_too_large());
                return None;
            }
            // More headers than parsed here: the guard takes up to 100.
            Err(httparse::Error::TooManyHeaders) => break None,
            Err(error) => {
                metrics.connections_closed.with_label_values(&["malformed_head"]).inc();
                refuse(
                    &stream,
                    &Problem::bad_request(format!("the request head is malformed: {error}")),
                );
                return None;
            }
        }
    };
    match (head, interceptor) {
        // A bad Host is answered by hyper's side (one 400 for every route).
        (Some(head), Some(interceptor)) if head.host_is_valid() && interceptor.wants(&head) => {
            interceptor.serve(stream, head).await;
            None
        }
        _ => Some((stream, buffer, WireProtocol::Http1)),
    }
}

/// Answers a connection about to be closed, without waiting: a client that does not read
/// cannot hold the server up.
fn refuse(stream: &TcpStream, problem: &Problem) {
    let _ = stream.try_write(&refusal(problem));
}

/// A whole response carrying `problem`, after which the connection closes.
fn refusal(problem: &Problem) -> Bytes {
    let body = serde_json::to_string(problem).unwrap_or_default();
    let reason = StatusCode::from_u16(problem.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        problem.status,
        crate::problem::CONTENT_TYPE,
        body.len()
    )
    .into()
}

/// A bound listener with what it serves: the seam every `Application` and test uses (bind on
/// port 0, read the address, run until the lifecycle stops).
pub struct Server {
    listener: TcpListener,
    connection: ConnectionArgs,
    router: Router,
    interceptor: Option<Arc<dyn Interceptor>>,
    lifecycle: Lifecycle,
    grace: Duration,
    metrics: Arc<Metrics>,
}

impl Server {
    pub fn bind(
        listen: &ListenArgs,
        connection: &ConnectionArgs,
        router: Router,
        interceptor: Option<Arc<dyn Interceptor>>,
        lifecycle: Lifecycle,
        grace: Duration,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let listener = bind(listen).map_err(|e| anyhow::anyhow!("cannot listen on --listen {}: {e}", listen.listen))?;
        Ok(Self {
            listener,
            connection: connection.clone(),
            router,
            interceptor,
            lifecycle,
            grace,
            metrics,
        })
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the lifecycle stops, drains, then marks the lifecycle finished.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let lifecycle = self.lifecycle.clone();
        let result = serve_with(
            self.listener,
            self.connection,
            self.router,
            self.interceptor,
            self.lifecycle,
            self.grace,
            self.metrics,
        )
        .await;
        lifecycle.finish();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_pauses_and_is_counted_once_per_failure() {
        let metrics = Metrics::new();
        let mut failures = AcceptFailures::default();
        for _ in 0..3 {
            assert!(failures.failed(&io::Error::from_raw_os_error(24), &metrics));
        }
        assert!(failures.failed(&io::Error::from_raw_os_error(23), &metrics));
        assert!(!failures.failed(&io::Error::from_raw_os_error(103), &metrics));
        assert_eq!(failures.in_burst, 5);
        failures.recovered();
        assert_eq!(failures.in_burst, 0);
        let count = |kind: &str| metrics.accept_errors.with_label_values(&[kind]).get();
        assert_eq!((count("fd_exhausted"), count("other")), (4, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_a_request_in_flight_never_expires() {
        let limits = ConnectionArgs::default();
        let activity = Arc::new(Activity::new(Instant::now()));
        let first = activity.begin();
        let expired =
            tokio::time::timeout(Duration::from_secs(3600), activity.expired(&limits, WireProtocol::H2)).await;
        assert!(expired.is_err(), "an open response is not idle");
        drop(first);
        let started = Instant::now();
        assert_eq!(activity.expired(&limits, WireProtocol::H2).await, "idle_timeout");
        assert_eq!(started.elapsed(), limits.idle_timeout);
        // Before any request, the head timeout applies.
        let fresh = Arc::new(Activity::new(Instant::now()));
        assert_eq!(fresh.expired(&limits, WireProtocol::Http1).await, "header_timeout");
    }
}
