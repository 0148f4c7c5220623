//! What only the Redis order store has to prove: one script makes a create atomic and
//! idempotent, a write past its deadline never happens, and an outage fails fast and leaves
//! nothing behind.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use order_events::StreamPosition;
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
async fn create_writes_the_order_and_its_event_and_get_reads_it_back() {
    let server = RedisServer::start();
    let store = store(&server, RetentionSettings::default()).await;
    let new = new_order("c-1", "SKU-1", None);
    let CreateOutcome::Created(created) = store.create(new.clone()).await.unwrap() else {
        panic!("a new order is created");
    };
    assert_eq!(created.order, new.order);
    assert_eq!(store.get(new.order.order_id).await.unwrap(), Some(created.clone()));
    assert_eq!(store.get(uuid::Uuid::now_v7()).await.unwrap(), None);

    let page = log(&server).await.read_after(StreamPosition::ZERO, 10).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].position, created.event_id);
    assert_eq!(&*page.events[0].customer_id, "c-1");
    let frame = String::from_utf8(page.events[0].frame.to_vec()).unwrap();
    assert!(frame.contains(&format!("data: {}\n", new.order.to_json())), "{frame}");
    let entry = server.cli(&["XRANGE", "{orders}:events", "-", "+"]);
    assert!(entry.contains(new.event.traceparent.as_deref().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_creates_with_one_key_make_one_order_and_one_event() {
    let server = RedisServer::start();
    let store = store(&server, RetentionSettings::default()).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            // Each retry builds its own order (a new id), as a retried POST would.
            tokio::spawn(async move { store.create(new_order("c-1", "SKU-1", Some("key-1"))).await })
        })
        .collect();
    let mut created = Vec::new();
    let mut replayed = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            CreateOutcome::Created(order) => created.push(order),
            CreateOutcome::Replayed(order) => replayed.push(order),
        }
    }
    assert_eq!(created.len(), 1);
    assert_eq!(replayed.len(), 19);
    assert!(replayed.iter().all(|order| *order == created[0]));
    assert_eq!(server.cli(&["XLEN", "{orders}:events"]), "1");
    assert_eq!(order_keys(&server).len(), 1);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_a_conflict() {
    let server = RedisServer::start();
    let store = store(&server, RetentionSettings::default()).await;
    store.create(new_order("c-1", "SKU-1", Some("key-1"))).await.unwrap();
    let other = store.create(new_order("c-1", "SKU-2", Some("key-1"))).await;
    assert!(matches!(other, Err(StoreError::IdempotencyConflict)), "{other:?}");
    assert_eq!(server.cli(&["XLEN", "{orders}:events"]), "1");
    // Another key is another request.
    let third = store.create(new_order("c-1", "SKU-2", Some("key-2"))).await.unwrap();
    assert!(matches!(third, CreateOutcome::Created(_)));
}

#[tokio::test]
async fn an_idempotency_key_belongs_to_the_orders_customer() {
    let server = RedisServer::start();
    let store = store(&server, RetentionSettings::default()).await;
    let CreateOutcome::Created(mine) = store.create(new_order("c-1", "SKU-1", Some("key-1"))).await.unwrap() else {
        panic!("created");
    };
    // Another customer with the same key and the same lines: its own new order, no conflict.
    let CreateOutcome::Created(theirs) = store.create(new_order("c-2", "SKU-1", Some("key-1"))).await.unwrap() else {
        panic!("another customer's key is another key");
    };
    assert_ne!(theirs.order.order_id, mine.order.order_id);
    // And with other lines: no conflict either (a conflict would tell that the key exists).
    let other = store.create(new_order("c-3", "SKU-9", Some("key-1"))).await.unwrap();
    assert!(matches!(other, CreateOutcome::Created(_)), "{other:?}");
    assert_eq!(server.cli(&["XLEN", "{orders}:events"]), "3");
    let replay = store.create(new_order("c-1", "SKU-1", Some("key-1"))).await.unwrap();
    assert_eq!(replay, CreateOutcome::Replayed(mine));
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
async fn orders_apply_the_same_retention_as_appends() {
    let server = RedisServer::start();
    let store = store(&server, keep_last(3)).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let CreateOutcome::Created(created) = store.create(new_order("c", &format!("SKU-{n}"), None)).await.unwrap()
        else {
            panic!("created");
        };
        ids.push(created.event_id);
    }
    let page = log(&server).await.read_after(StreamPosition::ZERO, 10).await.unwrap();
    let lost = page.lost.expect("the two oldest events were trimmed");
    assert_eq!((lost.through, lost.oldest), (ids[1], Some(ids[2])));
    // Orders outlive their events: retention bounds the stream, not the order store.
    assert_eq!(order_keys(&server).len(), 5);
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
