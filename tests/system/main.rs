//! End-to-end tests of the embedded system (both services on one port, memory log), driven
//! over HTTP like any client.
#![allow(clippy::unwrap_used)]

mod auth;
mod catalogue;
mod delivery;
mod descriptors;
mod helpers;
mod protocol;
mod slow_clients;
mod snapshot;
mod validation;
