//! `Lifecycle`: the one place shutdown comes from. A signal first marks the process draining
//! (not ready), then, after the drain delay, cancels the token every server and stream ends on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    draining: Arc<AtomicBool>,
    stop: CancellationToken,
    finished: CancellationToken,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when servers stop accepting and streams must end.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Cancelled once the server has closed its last connection (or given up on them after the
    /// grace period): what feeds open streams runs until then, so a draining process keeps
    /// delivering to every stream until the moment that stream is closed.
    pub fn finished_token(&self) -> CancellationToken {
        self.finished.clone()
    }

    /// Marks every connection closed: the server calls this after its drain.
    pub fn finish(&self) {
        self.stop();
        self.finished.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed) || self.stop.is_cancelled()
    }

    /// Marks the process not ready without stopping anything yet.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Ends every stream and stops accepting.
    pub fn stop(&self) {
        self.start_draining();
        self.stop.cancel();
    }

    /// Waits for SIGTERM or Ctrl-C, reports not ready for `drain_delay`, then stops.
    pub async fn stop_on_signal(self, drain_delay: Duration) {
        wait_for_signal().await;
        tracing::info!(drain_delay = ?drain_delay, "shutdown signal received; draining");
        self.start_draining();
        tokio::select! {
            _ = tokio::time::sleep(drain_delay) => {}
            _ = wait_for_signal() => tracing::warn!("second signal; stopping now"),
        }
        self.stop();
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
