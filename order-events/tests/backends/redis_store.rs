//! What only the Redis order store has to prove (the conformance suite covers what every store
//! does): idempotency keys expire, a write past its deadline never happens, and an outage fails
//! fast and leaves nothing behind.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use order_events::event_log::EventLog;
use order_events::event_log::redis::RedisEventLog;
use order_events::order_store::redis::RedisOrderStore;
use order_events::order_store::{CreateOutcome, OrderStore, StoreError};
use order_events::redis::RetentionSettings;

use crate::helpers::{RedisServer, eventually, keep_last, new_order, settings};

async fn store(server: &RedisServer, retention: RetentionSettings) -> Arc<RedisOrderStore> {
    Arc::new(
        RedisOrderStore::connect(&settings(&server.url()), retention)
            .await
            .unwrap(),
    )
}

async fn log(server: &RedisServer) -> RedisEventLog {
    RedisEventLog::connect(&settings(&server.url())).await.unwrap()
}

fn order_keys(server: &RedisServer) -> Vec<String> {
    let keys = server.cli(&["--scan", "--pattern", "{orders}:events:order:*"]);
    keys.lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn an_idempotency_key_is_forgotten_after_its_ttl() {
    let server = RedisServer::start();
    let retention = RetentionSettings {
        idempotency_ttl: Duration::from_millis(200),
        ..RetentionSettings::default()
    };
    let store = store(&server, retention).await;
    store.create(new_order("c-1", "SKU-1", Some("key-1"))).await.unwrap();
    let ttl: i64 = server
        .cli(&["PTTL", "{orders}:events:idem:3:c-1:key-1"])
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 200, "{ttl}");
    eventually(Duration::from_secs(5), "the key expires", || async {
        server.cli(&["EXISTS", "{orders}:events:idem:3:c-1:key-1"]) == "0"
    })
    .await;
    let again = store.create(new_order("c-1", "SKU-1", Some("key-1"))).await.unwrap();
    assert!(matches!(again, CreateOutcome::Created(_)));
}

#[tokio::test]
async fn a_create_whose_deadline_has_passed_writes_nothing() {
    let server = RedisServer::start();
    let store = store(&server, keep_last(10)).await;
    let new = new_order("c-1", "SKU-1", Some("key-1"));
    let late = store
        .create_before(new.clone(), SystemTime::now() - Duration::from_secs(1))
        .await;
    assert!(matches!(late, Err(StoreError::Timeout)), "{late:?}");
    assert_eq!(server.cli(&["EXISTS", "{orders}:events"]), "0");
    assert_eq!(server.cli(&["EXISTS", "{orders}:events:idem:3:c-1:key-1"]), "0");
    assert!(order_keys(&server).is_empty());
    assert_eq!(store.get(new.order.order_id).await.unwrap(), None);
}

#[tokio::test]
async fn while_redis_is_down_creates_fail_fast_and_never_appear_later() {
    let mut server = RedisServer::start_persistent();
    let store = store(&server, RetentionSettings::default()).await;
    let log = log(&server).await;
    store.create(new_order("c-1", "SKU-1", None)).await.unwrap();

    server.stop();
    let failed = new_order("c-1", "SKU-2", Some("key-down"));
    let started = Instant::now();
    let outcome = store.create(failed.clone()).await;
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(outcome, Err(StoreError::Unavailable(_) | StoreError::Timeout)),
        "{outcome:?}"
    );
    assert!(store.check_ready().await.is_err());
    assert!(log.check_ready().await.is_err());

    server.restart();
    eventually(Duration::from_secs(10), "the store becomes ready", || async {
        store.check_ready().await.is_ok()
    })
    .await;
    eventually(Duration::from_secs(10), "the log becomes ready", || async {
        log.check_ready().await.is_ok()
    })
    .await;
    assert_eq!(store.get(failed.order.order_id).await.unwrap(), None);
    assert_eq!(server.cli(&["XLEN", "{orders}:events"]), "1");
    assert_eq!(server.cli(&["EXISTS", "{orders}:events:idem:3:c-1:key-down"]), "0");
    // And the store works again, the restart having flushed its scripts.
    let after = store.create(new_order("c-1", "SKU-3", None)).await.unwrap();
    assert!(matches!(after, CreateOutcome::Created(_)));
}
