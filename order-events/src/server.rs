//! Binding with a configurable backlog and serving a router over HTTP/1.1 and h2c until the
//! lifecycle stops, then draining open connections with a deadline.
//!
//! Before a connection reaches hyper, its first request head is read here so that an
//! [`Interceptor`] can take connections it serves more cheaply itself (the SSE stream: one
//! shared frame written per event, with no per-connection HTTP machinery). Everything else,
//! including HTTP/2, goes to hyper with the bytes already read put back in front.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::config::ListenArgs;
use crate::shutdown::Lifecycle;

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
const HEAD_READ_TIMEOUT: Duration = Duration::from_secs(30);
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// Serves `router` until `lifecycle` stops, offering each connection's first request to
/// `interceptor` first, then waits at most `grace` for open connections.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    interceptor: Option<Arc<dyn Interceptor>>,
    lifecycle: Lifecycle,
    grace: Duration,
) -> io::Result<()> {
    let stop = lifecycle.stop_token();
    let graceful = GracefulShutdown::new();
    let tracker = TaskTracker::new();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Running out of file descriptors must not spin or stop the server.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // Small SSE frames must leave at once rather than wait for Nagle's algorithm.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let router = router.clone();
        let builder = builder.clone();
        let interceptor = interceptor.clone();
        let watcher = graceful.watcher();
        let stop_reading = stop.clone();
        tracker.spawn(async move {
            let io = match interceptor {
                None => Prefixed {
                    prefix: Bytes::new(),
                    inner: stream,
                },
                Some(interceptor) => match offer(stream, interceptor, &stop_reading).await {
                    Some(io) => io,
                    None => return,
                },
            };
            let service = TowerToHyperService::new(router);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracker.close();
    let drained = async {
        graceful.shutdown().await;
        tracker.wait().await;
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            ?grace,
            "connections still open after the shutdown grace; exiting anyway"
        );
    }
    Ok(())
}

/// Reads the first request head; hands the connection to the interceptor when it wants it,
/// else returns it (with the bytes read) for hyper.
async fn offer(
    mut stream: TcpStream,
    interceptor: Arc<dyn Interceptor>,
    stop: &tokio_util::sync::CancellationToken,
) -> Option<Prefixed> {
    let mut buffer = BytesMut::with_capacity(1024);
    let head = loop {
        // A connection that has not sent its request when the server stops is simply closed.
        let read = tokio::select! {
            _ = stop.cancelled() => return None,
            read = tokio::time::timeout(HEAD_READ_TIMEOUT, stream.read_buf(&mut buffer)) => read,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) if buffer.is_empty() => return None,
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break None,
            Ok(Ok(_)) => {}
        }
        // HTTP/2 with prior knowledge: hyper's.
        let seen = buffer.len().min(H2_PREFACE_START.len());
        if H2_PREFACE_START.starts_with(&buffer[..seen]) {
            if seen == H2_PREFACE_START.len() {
                break None;
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
            // Too large or malformed: hyper answers it properly.
            _ => break None,
        }
    };
    match head {
        // A bad Host is answered by hyper's side (one 400 for every route).
        Some(head) if head.host_is_valid() && interceptor.wants(&head) => {
            interceptor.serve(stream, head).await;
            None
        }
        _ => Some(Prefixed {
            prefix: buffer.freeze(),
            inner: stream,
        }),
    }
}

/// A stream whose first bytes were already read: they are returned again before the rest.
struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A bound listener with what it serves: the seam every `Application` and test uses (bind on
/// port 0, read the address, run until the lifecycle stops).
pub struct Server {
    listener: TcpListener,
    router: Router,
    interceptor: Option<Arc<dyn Interceptor>>,
    lifecycle: Lifecycle,
    grace: Duration,
}

impl Server {
    pub fn bind(
        listen: &ListenArgs,
        router: Router,
        interceptor: Option<Arc<dyn Interceptor>>,
        lifecycle: Lifecycle,
        grace: Duration,
    ) -> anyhow::Result<Self> {
        let listener = bind(listen).map_err(|e| anyhow::anyhow!("cannot listen on --listen {}: {e}", listen.listen))?;
        Ok(Self {
            listener,
            router,
            interceptor,
            lifecycle,
            grace,
        })
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run_until_stopped(self) -> io::Result<()> {
        serve_with(self.listener, self.router, self.interceptor, self.lifecycle, self.grace).await
    }
}
