//! Download tickets: a single-use, short-lived credential that lets a browser navigation
//! (which cannot send `Authorization`) download one file of one session. Keyed by 256
//! random bits, so a lookup needs no constant-time compare; never logged.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::limits::{MAX_TICKETS, TICKET_TTL};

/// What a ticket lets its bearer download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The session's slot and generation: a later session in the slot does not match.
    pub session: (usize, u64),
    /// Whose session it is.
    pub owner: String,
    /// The absolute path checked when the ticket was issued.
    pub path: String,
    /// When it stops being valid.
    pub expires: Instant,
}

/// The tickets issued and not yet used or expired.
#[derive(Default)]
pub struct Tickets {
    by_key: HashMap<String, Grant>,
    /// Keys in the order issued, for the bound: the oldest goes first.
    order: VecDeque<String>,
}

impl Tickets {
    /// Files `grant` under `key` (issued by the caller from random bytes), valid from `now`
    /// for [`TICKET_TTL`].
    pub fn issue(&mut self, key: String, mut grant: Grant, now: Instant) {
        self.expire(now);
        while self.by_key.len() >= MAX_TICKETS {
            match self.order.pop_front() {
                Some(old) => {
                    self.by_key.remove(&old);
                }
                None => break,
            }
        }
        grant.expires = now + TICKET_TTL;
        self.order.push_back(key.clone());
        self.by_key.insert(key, grant);
    }

    /// Uses ticket `key`: its grant if it is known and not expired. Either way it is gone.
    pub fn redeem(&mut self, key: &str, now: Instant) -> Option<Grant> {
        self.expire(now);
        let grant = self.by_key.remove(key)?;
        (grant.expires > now).then_some(grant)
    }

    /// Forgets expired tickets (they are issued in order, so they are at the front).
    fn expire(&mut self, now: Instant) {
        while let Some(k) = self.order.front() {
            match self.by_key.get(k) {
                Some(g) if g.expires > now => break,
                _ => {
                    if let Some(k) = self.order.pop_front() {
                        self.by_key.remove(&k);
                    }
                }
            }
        }
    }

    /// How many are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn grant() -> Grant {
        Grant {
            session: (1, 7),
            owner: "alice".into(),
            path: "/tmp/f".into(),
            expires: Instant::now(),
        }
    }

    #[test]
    fn a_ticket_is_used_once() {
        let now = Instant::now();
        let mut t = Tickets::default();
        t.issue("k".into(), grant(), now);
        assert_eq!(t.redeem("k", now).map(|g| g.path), Some("/tmp/f".into()));
        assert_eq!(t.redeem("k", now), None);
        assert_eq!(t.redeem("unknown", now), None);
    }

    #[test]
    fn a_ticket_expires_and_is_forgotten() {
        let now = Instant::now();
        let mut t = Tickets::default();
        t.issue("a".into(), grant(), now);
        t.issue("b".into(), grant(), now + Duration::from_secs(30));
        let late = now + TICKET_TTL;
        assert_eq!(t.redeem("a", late), None, "valid for less than the TTL");
        assert_eq!(t.len(), 1, "the expired one is gone");
        assert!(t.redeem("b", late).is_some());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_table_is_bounded_oldest_first() {
        let now = Instant::now();
        let mut t = Tickets::default();
        for i in 0..MAX_TICKETS + 3 {
            t.issue(format!("k{i}"), grant(), now);
        }
        assert_eq!(t.len(), MAX_TICKETS);
        assert_eq!(t.redeem("k0", now), None);
        assert!(t.redeem(&format!("k{}", MAX_TICKETS + 2), now).is_some());
    }
}
