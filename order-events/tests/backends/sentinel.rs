//! The Redis backends through a `redis-sentinel://` URL: fred asks the sentinel for the primary.

use std::time::Duration;

use order_events::StreamPosition;
use order_events::event_log::EventLog;
use order_events::event_log::redis::RedisEventLog;
use order_events::order_store::redis::RedisOrderStore;
use order_events::order_store::{CreateOutcome, OrderStore};
use order_events::redis::RetentionSettings;

use crate::helpers::{RedisServer, Sentinel, new_order, settings};

#[tokio::test]
async fn orders_and_events_flow_through_a_sentinel_url() {
    assert!(
        Sentinel::available(),
        "redis-sentinel is not installed (scripts/test installs it)"
    );
    let primary = RedisServer::start();
    let sentinel = Sentinel::start(primary.port());
    let settings = settings(&sentinel.url());
    let store = RedisOrderStore::connect(&settings, RetentionSettings::default())
        .await
        .unwrap();
    let log = RedisEventLog::connect(&settings).await.unwrap();
    store.check_ready().await.unwrap();
    log.check_ready().await.unwrap();

    let start = log.last_position().await.unwrap();
    assert_eq!(start, StreamPosition::ZERO);
    let new = new_order("c-1", "SKU-1", Some("key-1"));
    let CreateOutcome::Created(created) = store.create(new.clone()).await.unwrap() else {
        panic!("created");
    };
    let page = log.follow(start, 10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [created.event_id]
    );
    assert_eq!(store.get(new.order.order_id).await.unwrap(), Some(created));
    // The data is on the primary the sentinel named.
    assert_eq!(primary.cli(&["XLEN", "{orders}:events"]), "1");
}
