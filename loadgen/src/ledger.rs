//! The publish ledger: when each sequence number was sent and whether the server took it,
//! shared by the publisher thread and the subscriber thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Sequence number states, packed into one word per sequence number.
const SENT_BIT: u64 = 1 << 63;

/// One clock for the whole run: nanoseconds since `base`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self { base: Instant::now() }
    }

    /// Nanoseconds since the run started (never 0, so 0 can mean "not yet").
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    pub fn base(&self) -> Instant {
        self.base
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// What happened to one published sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Accepted,
    Rejected,
}

pub struct Ledger {
    /// Send time in ns (0 = not sent).
    sent_ns: Vec<AtomicU64>,
    /// Response time in ns with `SENT_BIT` set when accepted (0 = no answer yet; a rejected
    /// or failed POST stores its time without the bit).
    answered: Vec<AtomicU64>,
}

impl Ledger {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            sent_ns: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            answered: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.sent_ns.len()
    }

    /// Records that `seq` is about to be written to the publish connection.
    pub fn mark_sent(&self, seq: u64, now_ns: u64) {
        if let Some(slot) = self.sent_ns.get(seq as usize) {
            slot.store(now_ns, Ordering::Release);
        }
    }

    pub fn mark_answered(&self, seq: u64, now_ns: u64, accepted: bool) {
        if let Some(slot) = self.answered.get(seq as usize) {
            let value = (now_ns & !SENT_BIT) | if accepted { SENT_BIT } else { 0 };
            slot.store(value, Ordering::Release);
        }
    }

    /// When `seq` was sent, if it was.
    pub fn sent_ns(&self, seq: u64) -> Option<u64> {
        let value = self.sent_ns.get(seq as usize)?.load(Ordering::Acquire);
        (value != 0).then_some(value)
    }

    /// When the POST of `seq` was answered, if it was (accepted or not).
    pub fn answered_ns(&self, seq: u64) -> Option<u64> {
        let value = self.answered.get(seq as usize)?.load(Ordering::Acquire);
        (value != 0).then_some(value & !SENT_BIT)
    }

    pub fn outcome(&self, seq: u64) -> Outcome {
        match self.answered.get(seq as usize).map(|slot| slot.load(Ordering::Acquire)) {
            None | Some(0) => Outcome::Pending,
            Some(value) if value & SENT_BIT != 0 => Outcome::Accepted,
            Some(_) => Outcome::Rejected,
        }
    }

    /// A bitmap of accepted sequence numbers below `count`.
    pub fn accepted_bitmap(&self, count: u64) -> Vec<u64> {
        let mut bits = vec![0u64; (count as usize).div_ceil(64)];
        for seq in 0..count {
            if self.outcome(seq) == Outcome::Accepted {
                bits[(seq / 64) as usize] |= 1 << (seq % 64);
            }
        }
        bits
    }
}
