//! The `OrderStore` suite: creating, reading back and replaying orders, idempotency keys scoped
//! to their customer, and an order and its event written together or not at all.

use std::sync::Arc;

use order_events::StreamPosition;
use order_events::domain::CreatedOrder;
use order_events::event_log::EventLog;
use order_events::frame::EncodedEvent;
use order_events::order_store::{CreateOutcome, NewOrder, OrderSnapshot, OrderStore, SnapshotQuery, StoreError};

use super::Backend;
use crate::helpers::new_order;

async fn created(store: &dyn OrderStore, new: NewOrder) -> CreatedOrder {
    match store.create(new).await.unwrap() {
        CreateOutcome::Created(created) => created,
        replayed => panic!("expected a new order, got {replayed:?}"),
    }
}

/// Every event the log holds, oldest first.
async fn all_events(log: &dyn EventLog) -> Vec<EncodedEvent> {
    log.read_after(StreamPosition::ZERO, 1000).await.unwrap().events
}

pub async fn create_writes_the_order_and_get_reads_it_back(backend: &dyn Backend) {
    let store = backend.open(None).await.store;
    let new = new_order("c-1", "SKU-1", None);
    let created = created(&*store, new.clone()).await;
    assert_eq!(created.order, new.order);
    assert!(created.event_id > StreamPosition::ZERO);
    assert_eq!(store.get(new.order.order_id).await.unwrap(), Some(created));
    assert_eq!(store.get(uuid::Uuid::now_v7()).await.unwrap(), None);
}

pub async fn the_event_written_with_an_order_is_readable_from_the_log(backend: &dyn Backend) {
    let opened = backend.open(None).await;
    let new = new_order("c-1", "SKU-1", None);
    let created = created(&*opened.store, new.clone()).await;
    let events = all_events(&*opened.log).await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.position, created.event_id);
    assert_eq!(&*event.customer_id, "c-1");
    let frame = String::from_utf8(event.frame.to_vec()).unwrap();
    assert!(frame.contains(&format!("data: {}\n", new.order.to_json())), "{frame}");
    assert_eq!(event.traceparent.as_deref(), new.event.traceparent.as_deref());
}

pub async fn every_order_and_its_event_are_written_together(backend: &dyn Backend) {
    let opened = backend.open(None).await;
    let mut orders = Vec::new();
    for n in 0..5 {
        orders.push(created(&*opened.store, new_order(&format!("c-{n}"), "SKU-1", None)).await);
    }
    let events = all_events(&*opened.log).await;
    assert_eq!(events.len(), orders.len());
    for (event, order) in events.iter().zip(&orders) {
        assert_eq!(event.position, order.event_id);
        assert_eq!(*event.customer_id, order.order.customer_id);
        let expected = EncodedEvent::new(order.event_id, &order.order.customer_id, &order.order.to_json());
        assert_eq!(event.frame, expected.frame);
        let stored = opened.store.get(order.order.order_id).await.unwrap();
        assert_eq!(stored.as_ref(), Some(order));
    }
}

pub async fn a_retry_with_the_same_key_and_request_replays_the_order_without_a_second_event(backend: &dyn Backend) {
    let opened = backend.open(None).await;
    let original = created(&*opened.store, new_order("c-1", "SKU-1", Some("key-1"))).await;
    // A retried POST builds its order anew (another id, another time): the original comes back.
    let retry = new_order("c-1", "SKU-1", Some("key-1"));
    let replayed = opened.store.create(retry.clone()).await.unwrap();
    assert_eq!(replayed, CreateOutcome::Replayed(original.clone()));
    assert_eq!(opened.store.get(retry.order.order_id).await.unwrap(), None);
    let events = all_events(&*opened.log).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].position, original.event_id);
}

pub async fn concurrent_creates_with_one_key_make_one_order_and_one_event(backend: &dyn Backend) {
    let opened = backend.open(None).await;
    let retries: Vec<_> = (0..20).map(|_| new_order("c-1", "SKU-1", Some("key-1"))).collect();
    let tasks: Vec<_> = retries
        .iter()
        .map(|new| {
            let store = Arc::clone(&opened.store);
            let new = new.clone();
            tokio::spawn(async move { store.create(new).await })
        })
        .collect();
    let (mut created, mut replayed) = (Vec::new(), Vec::new());
    for task in tasks {
        match task.await.unwrap().unwrap() {
            CreateOutcome::Created(order) => created.push(order),
            CreateOutcome::Replayed(order) => replayed.push(order),
        }
    }
    assert_eq!(created.len(), 1);
    assert_eq!(replayed.len(), 19);
    assert!(replayed.iter().all(|order| *order == created[0]));
    // Only the order that was created is stored; the replayed requests' orders never were.
    for new in &retries {
        let stored = opened.store.get(new.order.order_id).await.unwrap();
        assert_eq!(stored.is_some(), new.order.order_id == created[0].order.order_id);
    }
    assert_eq!(all_events(&*opened.log).await.len(), 1);
}

pub async fn the_same_key_with_another_request_is_a_conflict_that_writes_nothing(backend: &dyn Backend) {
    let opened = backend.open(None).await;
    created(&*opened.store, new_order("c-1", "SKU-1", Some("key-1"))).await;
    let other = new_order("c-1", "SKU-2", Some("key-1"));
    let outcome = opened.store.create(other.clone()).await;
    assert!(matches!(outcome, Err(StoreError::IdempotencyConflict)), "{outcome:?}");
    assert_eq!(opened.store.get(other.order.order_id).await.unwrap(), None);
    assert_eq!(all_events(&*opened.log).await.len(), 1);
    // Another key is another request.
    created(&*opened.store, new_order("c-1", "SKU-2", Some("key-2"))).await;
    assert_eq!(all_events(&*opened.log).await.len(), 2);
}

pub async fn an_idempotency_key_belongs_to_the_orders_customer(backend: &dyn Backend) {
    let opened = backend.open(None).await;
    let store = &*opened.store;
    let mine = created(store, new_order("c-1", "SKU-1", Some("key-1"))).await;
    // Another customer with the same key and the same lines: its own new order, no replay.
    let theirs = created(store, new_order("c-2", "SKU-1", Some("key-1"))).await;
    assert_ne!(theirs.order.order_id, mine.order.order_id);
    // And with other lines: no conflict either (a conflict would tell that the key exists).
    let other = created(store, new_order("c-3", "SKU-9", Some("key-1"))).await;
    assert_ne!(other.order.order_id, mine.order.order_id);
    assert_eq!(all_events(&*opened.log).await.len(), 3);
    // Within its customer the key still replays and conflicts.
    let replay = store.create(new_order("c-1", "SKU-1", Some("key-1"))).await.unwrap();
    assert_eq!(replay, CreateOutcome::Replayed(mine));
    let conflict = store.create(new_order("c-1", "SKU-9", Some("key-1"))).await;
    assert!(matches!(conflict, Err(StoreError::IdempotencyConflict)), "{conflict:?}");
    assert_eq!(all_events(&*opened.log).await.len(), 3);
}

pub async fn retention_bounds_the_events_not_the_orders(backend: &dyn Backend) {
    let opened = backend.open(Some(3)).await;
    let mut orders = Vec::new();
    for n in 0..5 {
        let key = format!("key-{n}");
        orders.push(created(&*opened.store, new_order("c", &format!("SKU-{n}"), Some(&key))).await);
    }
    let page = opened.log.read_after(StreamPosition::ZERO, 10).await.unwrap();
    let lost = page.lost.expect("the two oldest events were trimmed");
    assert_eq!(
        (lost.through, lost.oldest),
        (orders[1].event_id, Some(orders[2].event_id))
    );
    for order in &orders {
        let stored = opened.store.get(order.order.order_id).await.unwrap();
        assert_eq!(stored.as_ref(), Some(order));
    }
    // A retry of an order whose event was trimmed still gets the original, and no new event.
    let retry = opened
        .store
        .create(new_order("c", "SKU-0", Some("key-0")))
        .await
        .unwrap();
    assert_eq!(retry, CreateOutcome::Replayed(orders[0].clone()));
    assert_eq!(opened.log.last_position().await.unwrap(), orders[4].event_id);
}

/// Event ids of a snapshot page, newest first.
fn page_ids(page: &OrderSnapshot) -> Vec<String> {
    page.orders
        .iter()
        .map(|order| order["eventId"].as_str().unwrap().to_owned())
        .collect()
}

pub async fn snapshot_pages_walk_back_once_and_the_last_one_says_there_is_no_more(backend: &dyn Backend) {
    let store = backend.open(None).await.store;
    let mut orders = Vec::new();
    for n in 0..9 {
        let customer = if n % 3 == 0 { "ada" } else { "bob" };
        orders.push(created(&*store, new_order(customer, &format!("SKU-{n}"), None)).await);
    }
    let newest_first = |customer: Option<&str>| -> Vec<String> {
        orders
            .iter()
            .rev()
            .filter(|o| customer.is_none_or(|c| o.order.customer_id == c))
            .map(|o| o.event_id.to_string())
            .collect()
    };
    // Page sizes that divide the history exactly and that do not, with and without a customer.
    for (customer, limit) in [
        (None, 3),
        (None, 4),
        (None, 9),
        (None, 10),
        (Some("ada"), 3),
        (Some("ada"), 1),
        (Some("bob"), 4),
    ] {
        let mut walked = Vec::new();
        let mut pages = 0;
        let mut before = None;
        loop {
            let query = SnapshotQuery {
                limit,
                customer_id: customer.map(str::to_owned),
                before,
            };
            let page = store.snapshot(&query).await.unwrap();
            pages += 1;
            assert!(
                !page.orders.is_empty(),
                "{customer:?} limit {limit}: page {pages} is empty"
            );
            assert_eq!(page.position, orders[8].event_id);
            walked.extend(page_ids(&page));
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        let expected = newest_first(customer);
        assert_eq!(walked, expected, "{customer:?} limit {limit}");
        assert_eq!(
            pages,
            expected.len().div_ceil(limit),
            "{customer:?} limit {limit}: no empty last page"
        );
    }
}

/// Every case against each backend. Multi-threaded, so that concurrent creates really overlap.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        conformance!(@backend memory, crate::conformance::MemoryBackend, $($case),*);
        conformance!(@backend redis, crate::conformance::RedisBackend::start(), $($case),*);
    };
    (@backend $name:ident, $backend:expr, $($case:ident),*) => {
        mod $name {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = $backend;
                    crate::conformance::order_store::$case(&backend).await;
                }
            )*
        }
    };
}

conformance!(
    create_writes_the_order_and_get_reads_it_back,
    the_event_written_with_an_order_is_readable_from_the_log,
    every_order_and_its_event_are_written_together,
    a_retry_with_the_same_key_and_request_replays_the_order_without_a_second_event,
    concurrent_creates_with_one_key_make_one_order_and_one_event,
    the_same_key_with_another_request_is_a_conflict_that_writes_nothing,
    an_idempotency_key_belongs_to_the_orders_customer,
    retention_bounds_the_events_not_the_orders,
    snapshot_pages_walk_back_once_and_the_last_one_says_there_is_no_more,
);
