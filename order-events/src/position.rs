//! `StreamPosition`: the totally ordered id of an event, shared by Redis Streams and the memory log.

use std::fmt;
use std::str::FromStr;

/// An event id of the form `<ms>-<seq>`, exactly as Redis Streams generates them.
///
/// Positions are compared as `(ms, seq)` pairs, so "everything after X" is well defined on
/// every backend. The SSE `id:` field and `Last-Event-ID` carry this value verbatim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamPosition {
    pub ms: u64,
    pub seq: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a stream position of the form <milliseconds>-<sequence>")]
pub struct InvalidPosition(pub String);

impl StreamPosition {
    /// Before every event that can exist.
    pub const ZERO: StreamPosition = StreamPosition { ms: 0, seq: 0 };
    /// After every event that can exist.
    pub const MAX: StreamPosition = StreamPosition {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The last position strictly before every event stamped at `ms` or later: reading after
    /// it yields exactly the events created at or after `ms`.
    pub fn before_millis(ms: u64) -> Self {
        match ms.checked_sub(1) {
            Some(prev) => Self {
                ms: prev,
                seq: u64::MAX,
            },
            None => Self::ZERO,
        }
    }

    /// The smallest position greater than this one (Redis' exclusive range start `(id`).
    pub fn successor(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self { ms: self.ms, seq },
            None => Self {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }

    /// Parses a position. Accepts exactly `<ms>-<seq>` with ASCII digits and no surrounding
    /// whitespace, so every accepted value prints back identically.
    pub fn parse(text: &str) -> Result<Self, InvalidPosition> {
        let invalid = || InvalidPosition(text.chars().take(64).collect());
        let (ms, seq) = text.split_once('-').ok_or_else(invalid)?;
        // No leading zeros: `0-00` would read as `0-0` and not print back as sent.
        let digits = |s: &str| {
            !s.is_empty()
                && s.len() <= 20
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s.len() == 1 || !s.starts_with('0'))
        };
        if !digits(ms) || !digits(seq) {
            return Err(invalid());
        }
        Ok(Self {
            ms: ms.parse().map_err(|_| invalid())?,
            seq: seq.parse().map_err(|_| invalid())?,
        })
    }
}

impl FromStr for StreamPosition {
    type Err = InvalidPosition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl serde::Serialize for StreamPosition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StreamPosition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Names one history of the stream. Positions are only comparable within one history: when the
/// history is lost (Redis restarted without persistence, a failover to a replica that missed
/// writes) the epoch is replaced, and a reader that sees a new epoch re-checks every cursor it
/// holds against the log. Stored beside the stream; the memory log draws one per process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Epoch(String);

impl Epoch {
    /// A fresh random epoch: 16 lowercase hex digits.
    pub fn random() -> Self {
        Self(format!("{:016x}", rand::random::<u64>()))
    }

    /// An epoch as stored; any non-empty text without whitespace (written by another version).
    pub fn from_stored(text: &str) -> Option<Self> {
        (!text.is_empty() && text.len() <= 64 && !text.contains(char::is_whitespace)).then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Epoch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Produces increasing positions from a wall clock that may step backwards: the memory log's
/// equivalent of Redis' `XADD *`.
#[derive(Debug, Default)]
pub struct PositionClock {
    last: StreamPosition,
}

impl PositionClock {
    pub fn next(&mut self, now_ms: u64) -> StreamPosition {
        let next = if now_ms > self.last.ms {
            StreamPosition::new(now_ms, 0)
        } else {
            self.last.successor()
        };
        self.last = next;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_redis_ids() {
        let p = StreamPosition::parse("1732841234567-12").unwrap();
        assert_eq!(p, StreamPosition::new(1_732_841_234_567, 12));
        assert_eq!(p.to_string(), "1732841234567-12");
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            "",
            "-",
            "1",
            "1-",
            "-1",
            "1-2-3",
            " 1-2",
            "1-2 ",
            "a-1",
            "1-+2",
            "+1-2",
            "99999999999999999999999-0",
            "1-99999999999999999999",
            "1.5-0",
            "１-2",
        ] {
            assert!(StreamPosition::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn orders_by_millis_then_sequence() {
        assert!(StreamPosition::new(5, 9) < StreamPosition::new(6, 0));
        assert!(StreamPosition::new(6, 0) < StreamPosition::new(6, 1));
        assert_eq!(StreamPosition::new(1, u64::MAX).successor(), StreamPosition::new(2, 0));
    }

    #[test]
    fn before_millis_excludes_nothing_at_that_millisecond() {
        let p = StreamPosition::before_millis(100);
        assert!(p < StreamPosition::new(100, 0));
        assert!(p >= StreamPosition::new(99, 7));
        assert_eq!(StreamPosition::before_millis(0), StreamPosition::ZERO);
    }

    #[test]
    fn clock_stays_monotonic_when_wall_clock_steps_back() {
        let mut clock = PositionClock::default();
        let a = clock.next(1000);
        let b = clock.next(1000);
        let c = clock.next(900);
        let d = clock.next(1001);
        assert!(a < b && b < c && c < d);
        assert_eq!(c, StreamPosition::new(1000, 2));
        assert_eq!(d, StreamPosition::new(1001, 0));
    }
}
