//! Orders kept in process memory beside the memory event log (the embedded default).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use uuid::Uuid;

use super::{CreateOutcome, NewOrder, OrderStore, StoreError};
use crate::domain::CreatedOrder;
use crate::event_log::memory::MemoryLog;

pub struct MemoryOrderStore {
    log: Arc<MemoryLog>,
    state: Mutex<State>,
    capacity: usize,
}

/// An idempotency key within its customer's scope.
type ScopedKey = (String, String);

#[derive(Default)]
struct State {
    orders: HashMap<Uuid, CreatedOrder>,
    /// Insertion order, to forget the oldest orders past `capacity`.
    order_ids: VecDeque<Uuid>,
    /// (customer, idempotency key) → (request fingerprint, order id).
    keys: HashMap<ScopedKey, (String, Uuid)>,
    /// Order id → its idempotency key, to forget both together.
    key_of: HashMap<Uuid, ScopedKey>,
}

impl MemoryOrderStore {
    /// Keeps at most `capacity` orders (and their idempotency keys), forgetting the oldest.
    pub fn new(log: Arc<MemoryLog>, capacity: usize) -> Self {
        Self {
            log,
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
        }
    }
}

#[async_trait]
impl OrderStore for MemoryOrderStore {
    async fn create(&self, new: NewOrder) -> Result<CreateOutcome, StoreError> {
        // One lock around check, append and insert makes the three one atomic step.
        let mut state = self.state.lock();
        let scoped = new.idempotency.as_ref().map(|(key, fingerprint)| {
            (
                (new.order.customer_id.clone(), key.as_str().to_owned()),
                fingerprint.clone(),
            )
        });
        if let Some((key, fingerprint)) = &scoped {
            if let Some((seen, order_id)) = state.keys.get(key) {
                if seen != fingerprint {
                    return Err(StoreError::IdempotencyConflict);
                }
                if let Some(original) = state.orders.get(order_id) {
                    return Ok(CreateOutcome::Replayed(original.clone()));
                }
            }
        }
        let event = self.log.append_now(&new.event);
        let created = CreatedOrder {
            order: new.order,
            event_id: event.position,
        };
        let id = created.order.order_id;
        state.orders.insert(id, created.clone());
        state.order_ids.push_back(id);
        if let Some((key, fingerprint)) = scoped {
            state.keys.insert(key.clone(), (fingerprint, id));
            state.key_of.insert(id, key);
        }
        while state.order_ids.len() > self.capacity {
            if let Some(old) = state.order_ids.pop_front() {
                state.orders.remove(&old);
                if let Some(key) = state.key_of.remove(&old) {
                    state.keys.remove(&key);
                }
            }
        }
        Ok(CreateOutcome::Created(created))
    }

    async fn get(&self, id: Uuid) -> Result<Option<CreatedOrder>, StoreError> {
        Ok(self.state.lock().orders.get(&id).cloned())
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::{Order, OrderCreated, OrderRequest};
    use crate::order_store::{IdempotencyKey, request_fingerprint};

    fn new_order(customer: &str, sku: &str, key: &str) -> NewOrder {
        let request = OrderRequest::parse(&json!({
            "customerId": customer, "currency": "EUR", "items": [{"sku": sku, "quantity": 1, "unitPrice": 1}]
        }))
        .unwrap();
        let order = Order::create(&request, OffsetDateTime::now_utc());
        NewOrder {
            event: OrderCreated::of(&order, None),
            idempotency: Some((IdempotencyKey::parse(key).unwrap(), request_fingerprint(&request))),
            order,
        }
    }

    #[tokio::test]
    async fn another_customers_key_neither_conflicts_nor_replays() {
        let store = MemoryOrderStore::new(Arc::new(MemoryLog::new(100, None)), 100);
        let Ok(CreateOutcome::Created(mine)) = store.create(new_order("alice", "A", "k")).await else {
            panic!("created");
        };
        // Same key, other customer, other order: a new order of its own.
        let Ok(CreateOutcome::Created(theirs)) = store.create(new_order("bob", "B", "k")).await else {
            panic!("another customer's key is another key");
        };
        assert_ne!(mine.order.order_id, theirs.order.order_id);
        // Same key, other customer, same lines: still not the first customer's order.
        let Ok(CreateOutcome::Created(third)) = store.create(new_order("carol", "A", "k")).await else {
            panic!("another customer's key is another key");
        };
        assert_ne!(third.order.order_id, mine.order.order_id);
        // Within one customer the key still replays and conflicts.
        let Ok(CreateOutcome::Replayed(again)) = store.create(new_order("alice", "A", "k")).await else {
            panic!("replayed");
        };
        assert_eq!(again, mine);
        assert!(matches!(
            store.create(new_order("alice", "Z", "k")).await,
            Err(StoreError::IdempotencyConflict)
        ));
    }
}
