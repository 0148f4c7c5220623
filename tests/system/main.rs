//! End-to-end tests of the embedded system (both services on one port, memory log), driven
//! over HTTP like any client.
#![allow(clippy::unwrap_used)]

/// One test per transport running `async fn NAME(transport: Transport)`: `NAME::over_http1`
/// (the HTTP/1.1 fast path) and `NAME::over_h2c` (HTTP/2 served by hyper). Arguments after the
/// name choose the runtime, as in `#[tokio::test(...)]`.
macro_rules! test_each_transport {
    ($name:ident $(, $($runtime:tt)*)?) => {
        mod $name {
            #[tokio::test $(($($runtime)*))?]
            async fn over_http1() {
                super::$name($crate::helpers::Transport::Http1).await
            }

            #[tokio::test $(($($runtime)*))?]
            async fn over_h2c() {
                super::$name($crate::helpers::Transport::H2c).await
            }
        }
    };
}

mod auth;
mod catalogue;
mod delivery;
mod descriptors;
mod helpers;
mod invocation;
mod jwks_tls;
mod protocol;
mod slow_clients;
mod snapshot;
mod validation;
