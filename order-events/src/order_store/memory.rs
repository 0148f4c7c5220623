//! Orders kept in process memory beside the memory event log (the embedded default).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use uuid::Uuid;

use super::{CreateOutcome, NewOrder, OrderSnapshot, OrderStore, SnapshotQuery, StoreError};
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

    async fn snapshot(&self, query: &SnapshotQuery) -> Result<OrderSnapshot, StoreError> {
        // `create` appends and inserts under this lock: holding it, the orders and the log's end
        // are one moment.
        let state = self.state.lock();
        let ring = self.log.ring();
        let position = ring.newest();
        let floor = ring.floor();
        let mut orders = Vec::new();
        let mut next = None;
        let candidates = state
            .order_ids
            .iter()
            .rev()
            .filter_map(|id| state.orders.get(id))
            // Like the Redis store: what the log still retains.
            .filter(|order| order.event_id > floor)
            .filter(|order| query.before.is_none_or(|before| order.event_id < before))
            .filter(|order| {
                query
                    .customer_id
                    .as_deref()
                    .is_none_or(|customer| order.order.customer_id == customer)
            });
        let mut last_included = None;
        for order in candidates {
            if orders.len() == query.limit {
                next = last_included;
                break;
            }
            last_included = Some(order.event_id);
            orders.push(serde_json::to_value(order).map_err(|e| StoreError::Malformed(e.to_string()))?);
        }
        Ok(OrderSnapshot {
            orders,
            position,
            epoch: Some(self.log.epoch().clone()),
            next,
        })
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
