//! Ids of sessions that were reaped or dropped, remembered for a day with their owner, so a
//! reconnect hears `expired` or `dropped` instead of silently getting a fresh shell, and
//! another user cannot take the id over with `new=1` while its owner may still come back.
//!
//! Every tombstone lives the same time, so insertion order is expiry order: a queue gives
//! O(1) insert and expiry, and the list is capped so it cannot grow without bound.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::limits::{MAX_TOMBSTONES, TOMBSTONE_KEEP};
use crate::upgrade::format::{FormatError, Reader, Writer, bad};

/// Why a session is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Reaped on its TTL.
    Expired,
    /// Dropped by an admin.
    Dropped,
}

/// One remembered id: why it ended, whose it was, and until when it is remembered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// Why the session is gone.
    pub cause: Cause,
    /// The user that owned it.
    pub owner: String,
    /// When it is forgotten.
    pub until: Instant,
}

/// The remembered ids.
#[derive(Default)]
pub struct Tombstones {
    by_id: HashMap<String, Tombstone>,
    order: VecDeque<(String, Instant)>,
}

impl Tombstones {
    /// Remembers `owner`'s `id` until `now + TOMBSTONE_KEEP`, replacing an older tombstone
    /// for it.
    pub fn add(&mut self, id: &str, owner: &str, cause: Cause, now: Instant) {
        if self.order.len() >= MAX_TOMBSTONES
            && let Some((old, until)) = self.order.pop_front()
        {
            self.forget(&old, until);
        }
        let until = now + TOMBSTONE_KEEP;
        let owner = owner.to_string();
        self.by_id.insert(
            id.to_string(),
            Tombstone {
                cause,
                owner,
                until,
            },
        );
        self.order.push_back((id.to_string(), until));
    }

    /// Why `id` is gone and whose it was, if it is remembered.
    pub fn get(&self, id: &str) -> Option<&Tombstone> {
        self.by_id.get(id)
    }

    /// Forgets `id` (it is being created again with `new=1`).
    pub fn remove(&mut self, id: &str) {
        // Its queue entry stays and is skipped at expiry, since the map no longer matches it.
        self.by_id.remove(id);
    }

    fn forget(&mut self, id: &str, until: Instant) {
        // Only if the map still holds this very tombstone, not a newer one for the same id.
        if self.by_id.get(id).is_some_and(|t| t.until == until) {
            self.by_id.remove(id);
        }
    }

    /// Forgets every tombstone due by `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some((_, until)) = self.order.front() {
            if *until > now {
                break;
            }
            if let Some((id, until)) = self.order.pop_front() {
                self.forget(&id, until);
            }
        }
    }

    /// When the oldest tombstone is due.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.order.front().map(|(_, u)| *u)
    }

    /// Entries held (for the memory account: queue entries, which bound the map too).
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

impl Tombstones {
    /// Writes every tombstone for an upgrade: id, owner, cause, time left, in expiry order.
    pub fn to_record(&self, w: &mut Writer, now: Instant) {
        let live: Vec<_> = self
            .order
            .iter()
            .filter(|(id, until)| self.by_id.get(id).is_some_and(|t| t.until == *until))
            .collect();
        w.count(live.len());
        for (id, until) in live {
            let Some(t) = self.by_id.get(id) else {
                continue;
            };
            let cause = match t.cause {
                Cause::Expired => 0,
                Cause::Dropped => 1,
            };
            w.str(id);
            w.str(&t.owner);
            w.u8(cause);
            let left = until.saturating_duration_since(now).as_millis();
            w.u64(u64::try_from(left).unwrap_or(u64::MAX));
        }
    }

    /// Reads tombstones written by [`Tombstones::to_record`], each with the time it had left.
    pub fn from_record(r: &mut Reader<'_>, now: Instant) -> Result<Tombstones, FormatError> {
        let n = r.count(MAX_TOMBSTONES, "tombstones")?;
        let mut t = Tombstones::default();
        for _ in 0..n {
            let id = r.str(256, "tombstone id")?;
            let owner = r.str(256, "tombstone owner")?;
            let cause = match r.u8()? {
                0 => Cause::Expired,
                1 => Cause::Dropped,
                c => return bad(format!("unknown tombstone cause {c}")),
            };
            let left = Duration::from_millis(r.u64()?).min(TOMBSTONE_KEEP);
            let until = now + left;
            t.by_id.insert(
                id.clone(),
                Tombstone {
                    cause,
                    owner,
                    until,
                },
            );
            t.order.push_back((id, until));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cause(t: &Tombstones, id: &str) -> Option<Cause> {
        t.get(id).map(|t| t.cause)
    }

    #[test]
    fn remembers_then_forgets() {
        let t0 = Instant::now();
        let mut t = Tombstones::default();
        t.add("a", "ann", Cause::Expired, t0);
        t.add("b", "bob", Cause::Dropped, t0 + Duration::from_secs(1));
        assert_eq!(cause(&t, "a"), Some(Cause::Expired));
        assert_eq!(t.get("a").map(|t| t.owner.as_str()), Some("ann"));
        assert_eq!(cause(&t, "b"), Some(Cause::Dropped));
        assert_eq!(t.get("b").map(|t| t.owner.as_str()), Some("bob"));
        assert_eq!(t.next_expiry(), Some(t0 + TOMBSTONE_KEEP));
        t.expire(t0 + TOMBSTONE_KEEP);
        assert_eq!(cause(&t, "a"), None);
        assert_eq!(cause(&t, "b"), Some(Cause::Dropped));
        t.expire(t0 + TOMBSTONE_KEEP + Duration::from_secs(1));
        assert_eq!(t.len(), 0);
        assert_eq!(t.next_expiry(), None);
    }

    #[test]
    fn newer_tombstone_survives_older_expiry() {
        let t0 = Instant::now();
        let mut t = Tombstones::default();
        t.add("a", "ann", Cause::Expired, t0);
        t.remove("a");
        t.add("a", "ann", Cause::Dropped, t0 + Duration::from_secs(10));
        t.expire(t0 + TOMBSTONE_KEEP);
        assert_eq!(cause(&t, "a"), Some(Cause::Dropped));
    }

    #[test]
    fn a_record_keeps_the_time_left() {
        let t0 = Instant::now();
        let mut t = Tombstones::default();
        t.add("a", "ann", Cause::Expired, t0);
        t.add("b", "bob", Cause::Dropped, t0 + Duration::from_secs(5));
        t.remove("a");
        let mut w = Writer::default();
        t.to_record(&mut w, t0 + Duration::from_secs(10));
        let b = w.into_bytes();
        let t1 = t0 + Duration::from_secs(1000);
        let back = Tombstones::from_record(&mut Reader::new(&b), t1).unwrap();
        assert_eq!(cause(&back, "a"), None, "a forgotten id stays forgotten");
        assert_eq!(cause(&back, "b"), Some(Cause::Dropped));
        assert_eq!(back.get("b").map(|t| t.owner.as_str()), Some("bob"));
        assert_eq!(
            back.next_expiry(),
            Some(t1 + TOMBSTONE_KEEP - Duration::from_secs(5))
        );
    }

    #[test]
    fn capped() {
        let t0 = Instant::now();
        let mut t = Tombstones::default();
        for i in 0..MAX_TOMBSTONES + 10 {
            t.add(&format!("id{i}"), "ann", Cause::Expired, t0);
        }
        assert_eq!(t.len(), MAX_TOMBSTONES);
        assert_eq!(cause(&t, "id0"), None);
        assert_eq!(
            cause(&t, &format!("id{}", MAX_TOMBSTONES + 9)),
            Some(Cause::Expired)
        );
    }
}
