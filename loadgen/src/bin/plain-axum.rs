//! Bench-only reference: the SSE fan-out a Rust developer writes first, following the shape
//! of axum's own sse example. A `tokio::sync::broadcast` channel feeds `axum::response::sse::Sse`
//! with default settings on the default multi-thread runtime; `POST /publish` broadcasts the
//! raw body as one event with an incrementing id; `GET /sub` subscribes.
//!
//! Customer-scoped streams, the way it is written by hand: `POST /publish?customerId=X` tags
//! the broadcast message with its customer, and a `GET /sub?customerId=X` stream receives
//! every message like any other and drops, in its own task, those tagged for someone else.
//! Untagged messages reach every stream; an unscoped stream keeps everything. An empty
//! `customerId` counts as absent.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use clap::Parser;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

/// The plain axum SSE server (benchmark reference).
#[derive(Debug, Parser)]
#[command(name = "plain-axum", version, about)]
struct Config {
    /// Address to listen on.
    #[arg(long, env = "PLAIN_AXUM_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Listen backlog (tokio's `TcpListener::bind` uses 1024; the kernel caps it at somaxconn).
    #[arg(long, env = "PLAIN_AXUM_LISTEN_BACKLOG", default_value_t = 1024)]
    listen_backlog: u32,
    /// Capacity of the broadcast channel; a subscriber further behind skips events.
    #[arg(long, env = "PLAIN_AXUM_CHANNEL_CAPACITY", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    channel_capacity: u32,
}

#[derive(Debug, Clone)]
struct Published {
    id: u64,
    /// The customer the message is for; `None`: everyone's.
    customer: Option<String>,
    data: String,
}

/// `?customerId=X` of a stream or a publish.
#[derive(Debug, serde::Deserialize)]
struct CustomerScope {
    #[serde(rename = "customerId")]
    customer_id: Option<String>,
}

impl CustomerScope {
    /// The customer named, if any (`?customerId=` with nothing after it names none).
    fn customer(self) -> Option<String> {
        self.customer_id.filter(|customer| !customer.is_empty())
    }
}

#[derive(Clone)]
struct AppState {
    events: broadcast::Sender<Published>,
    next_id: Arc<AtomicU64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let (events, _) = broadcast::channel(config.channel_capacity as usize);
    let state = AppState {
        events,
        next_id: Arc::new(AtomicU64::new(1)),
    };
    let app = Router::new()
        .route("/sub", get(subscribe))
        .route("/publish", post(publish))
        .with_state(state);

    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(config.listen)?;
    let listener = socket.listen(config.listen_backlog)?;
    eprintln!("plain-axum listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn subscribe(
    State(state): State<AppState>,
    Query(scope): Query<CustomerScope>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let hello = stream::once(async { Ok(Event::default().retry(Duration::from_secs(2))) });
    let wanted = scope.customer();
    let events = BroadcastStream::new(state.events.subscribe()).filter_map(move |received| {
        // A lagging receiver gets `Lagged` and moves on: the events it missed are gone.
        let event = received.ok().filter(|event| match (&wanted, &event.customer) {
            (Some(wanted), Some(customer)) => wanted == customer,
            _ => true,
        });
        async move { event.map(|event| Ok(Event::default().id(event.id.to_string()).data(event.data))) }
    });
    Sse::new(hello.chain(events)).keep_alive(KeepAlive::default())
}

async fn publish(State(state): State<AppState>, Query(scope): Query<CustomerScope>, body: String) -> String {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    // No subscribers is not an error for a publisher.
    let _ = state.events.send(Published {
        id,
        customer: scope.customer(),
        data: body,
    });
    id.to_string()
}
