//! Binding with a configurable backlog and serving a router over HTTP/1.1 and h2c until the
//! lifecycle stops, then draining open connections with a deadline.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

use crate::config::ListenArgs;
use crate::shutdown::Lifecycle;

/// Binds the listen address with `SO_REUSEADDR` and the configured accept backlog (the default
/// of 128 drops connections when thousands of clients reconnect at once).
pub fn bind(args: &ListenArgs) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(args.listen),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&args.listen.into())?;
    socket.listen(args.listen_backlog as i32)?;
    TcpListener::from_std(socket.into())
}

/// Serves `router` until `lifecycle` stops, then waits at most `grace` for open connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    lifecycle: Lifecycle,
    grace: Duration,
) -> io::Result<()> {
    let stop = lifecycle.stop_token();
    // Small SSE frames must leave at once rather than wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await });
    let stopped = lifecycle.stop_token();
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => return result,
        _ = stopped.cancelled() => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                ?grace,
                "connections still open after the shutdown grace; exiting anyway"
            );
            Ok(())
        }
    }
}
