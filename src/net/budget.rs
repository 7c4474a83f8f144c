//! The three connection budgets: connections still sending their first head
//! (`--max-pending`), serving a request or a WebSocket (`--max-clients` and a per-address
//! share of it), and kept alive between requests (a budget of its own, evicted first).
//!
//! [`Budgets`] owns the tallies; each connection carries the [`Budget`] it counts in, and the
//! table ([`crate::net::conn::Conns`]) lends the live ones when a victim is to be chosen.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::net::addr;

/// Which budget a connection counts in, with the address key it counts under
/// ([`addr::key`]) and, where the oldest may be evicted, when it entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// Still sending its first request head: `--max-pending`. Keyed by the socket's peer.
    Pending(IpAddr, u64),
    /// Serving a request, or a WebSocket: `--max-clients` and the per-address share. Keyed by
    /// the client (behind a `--trusted-proxy`, the one its headers name).
    Busy(IpAddr),
    /// Kept alive between requests: a budget of its own, the oldest of the heaviest address
    /// evicted first.
    Idle(IpAddr, u64),
    /// Refused or closing: counted nowhere (the linger timer bounds it).
    Uncounted,
}

/// `--max-clients`, or the address's share of it, is reached.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyClients;

/// How many connections one budget holds, in all and per address key.
#[derive(Default)]
struct Tally {
    total: usize,
    by_key: HashMap<IpAddr, usize>,
}

impl Tally {
    fn of(&self, key: IpAddr) -> usize {
        self.by_key.get(&key).copied().unwrap_or(0)
    }

    fn add(&mut self, key: IpAddr) {
        self.total += 1;
        *self.by_key.entry(key).or_insert(0) += 1;
    }

    fn remove(&mut self, key: IpAddr) {
        self.total -= 1;
        if let Some(n) = self.by_key.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.by_key.remove(&key);
            }
        }
    }

    /// The most any one key holds (0 when empty). Among the keys holding that many, the
    /// caller takes the oldest connection, so ties go by age.
    fn most(&self) -> usize {
        self.by_key.values().copied().max().unwrap_or(0)
    }
}

/// The tallies of the three budgets.
#[derive(Default)]
pub struct Budgets {
    pending: Tally,
    busy: Tally,
    idle: Tally,
    /// Orders entries into the pending and idle budgets, oldest first.
    seq: u64,
}

/// The slot, among `live` (slot, budget) pairs, whose budget `pick` gives the smallest
/// sequence number.
fn oldest(
    live: impl Iterator<Item = (usize, Budget)>,
    pick: impl Fn(Budget) -> Option<u64>,
) -> Option<usize> {
    live.filter_map(|(k, b)| pick(b).map(|seq| (seq, k)))
        .min()
        .map(|(_, k)| k)
}

impl Budgets {
    /// A new connection from `peer`: it counts as pending under its address.
    pub fn enter_pending(&mut self, peer: IpAddr) -> Budget {
        let ip = addr::key(peer);
        self.seq += 1;
        self.pending.add(ip);
        Budget::Pending(ip, self.seq)
    }

    /// Takes a connection out of whichever budget `b` says it counts in.
    pub fn uncount(&mut self, b: &mut Budget) {
        match std::mem::replace(b, Budget::Uncounted) {
            Budget::Pending(ip, _) => self.pending.remove(ip),
            Budget::Busy(ip) => self.busy.remove(ip),
            Budget::Idle(ip, _) => self.idle.remove(ip),
            Budget::Uncounted => {}
        }
    }

    /// Makes room for one more unfinished request: when `--max-pending` are pending, the
    /// slot of the one to close among `live`, the oldest of the address with the most. A
    /// peer holding many unfinished requests so loses its own first, and never keeps out
    /// another address.
    pub fn pending_victim(
        &self,
        max_pending: usize,
        live: impl Iterator<Item = (usize, Budget)>,
    ) -> Option<usize> {
        if self.pending.total < max_pending {
            return None;
        }
        let most = self.pending.most();
        oldest(live, |b| match b {
            Budget::Pending(k, seq) if self.pending.of(k) == most => Some(seq),
            _ => None,
        })
    }

    /// A request head arrived from `client` on a connection counting in `b`: it now serves
    /// a request and counts against `--max-clients` and `client`'s `share` of it. Refused
    /// (and counted nowhere, to be answered and closed) past either.
    pub fn begin_request(
        &mut self,
        b: &mut Budget,
        client: IpAddr,
        max_clients: usize,
        share: usize,
    ) -> Result<(), TooManyClients> {
        if matches!(b, Budget::Busy(_)) {
            return Ok(());
        }
        self.uncount(b);
        let key = addr::key(client);
        if self.busy.total >= max_clients || self.busy.of(key) >= share {
            return Err(TooManyClients);
        }
        self.busy.add(key);
        *b = Budget::Busy(key);
        Ok(())
    }

    /// A serving connection went idle between requests: it moves into the idle budget.
    /// False when `b` was not serving (nothing changes).
    pub fn go_idle(&mut self, b: &mut Budget) -> bool {
        let Budget::Busy(key) = *b else {
            return false;
        };
        self.busy.remove(key);
        self.idle.add(key);
        self.seq += 1;
        *b = Budget::Idle(key, self.seq);
        true
    }

    /// When the idle budget holds more than `max_idle`, the slot among `live` of the one to
    /// close: the oldest idle connection of the address with the most.
    pub fn idle_victim(
        &self,
        max_idle: usize,
        live: impl Iterator<Item = (usize, Budget)>,
    ) -> Option<usize> {
        if self.idle.total <= max_idle {
            return None;
        }
        let most = self.idle.most();
        oldest(live, |b| match b {
            Budget::Idle(k, seq) if self.idle.of(k) == most => Some(seq),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Connections by slot (`None`: closed), as the table lends them.
    #[derive(Default)]
    struct Slots {
        budgets: Budgets,
        slots: Vec<Option<Budget>>,
    }

    impl Slots {
        fn add(&mut self, peer: &str) -> usize {
            let b = self.budgets.enter_pending(ip(peer));
            self.slots.push(Some(b));
            self.slots.len() - 1
        }

        fn live(&self) -> impl Iterator<Item = (usize, Budget)> + '_ {
            self.slots
                .iter()
                .enumerate()
                .filter_map(|(k, b)| b.map(|b| (k, b)))
        }

        fn kill(&mut self, k: usize) {
            if let Some(mut b) = self.slots[k].take() {
                self.budgets.uncount(&mut b);
            }
        }

        fn begin(
            &mut self,
            k: usize,
            client: &str,
            max: usize,
            share: usize,
        ) -> Result<(), TooManyClients> {
            let mut b = self.slots[k].unwrap();
            let r = self.budgets.begin_request(&mut b, ip(client), max, share);
            self.slots[k] = Some(b);
            r
        }

        /// Connection `k` answered its request and waits for the next; the victim, if any.
        fn idle(&mut self, k: usize, max_idle: usize) -> Option<usize> {
            let mut b = self.slots[k].unwrap();
            self.budgets.go_idle(&mut b);
            self.slots[k] = Some(b);
            self.budgets.idle_victim(max_idle, self.live())
        }
    }

    #[test]
    fn tallies_count_per_key_and_in_all() {
        let mut t = Tally::default();
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
        assert_eq!(t.most(), 0);
        for _ in 0..3 {
            t.add(a);
        }
        t.add(b);
        assert_eq!((t.total, t.of(a), t.of(b)), (4, 3, 1));
        assert_eq!(t.most(), 3);
        for _ in 0..3 {
            t.remove(a);
        }
        t.remove(b);
        assert_eq!(t.total, 0);
        assert!(t.by_key.is_empty(), "no entry left behind for a gone peer");
    }

    #[test]
    fn full_pending_gives_up_the_oldest_of_the_heaviest_address() {
        let mut t = Slots::default();
        let a: Vec<usize> = (0..3).map(|_| t.add("10.0.0.1")).collect();
        let b = t.add("10.0.0.2");
        assert_eq!(t.budgets.pending_victim(5, t.live()), None, "room left");
        assert_eq!(t.budgets.pending_victim(4, t.live()), Some(a[0]));
        t.kill(a[0]);
        assert_eq!(t.budgets.pending_victim(4, t.live()), None);
        // Even at one each, the oldest goes first.
        t.kill(a[1]);
        t.kill(a[2]);
        t.add("10.0.0.3");
        assert_eq!(t.budgets.pending_victim(2, t.live()), Some(b));
        assert_eq!(t.budgets.pending.total, 2);
    }

    #[test]
    fn requests_count_against_the_cap_and_the_address_share() {
        let mut t = Slots::default();
        let ks: Vec<usize> = (0..4).map(|_| t.add("10.0.0.1")).collect();
        // Behind a proxy the client is another address than the socket's peer.
        let (max, share) = (3, 2);
        assert_eq!(t.begin(ks[0], "10.0.0.1", max, share), Ok(()));
        assert_eq!(t.begin(ks[1], "10.0.0.1", max, share), Ok(()));
        assert_eq!(
            t.begin(ks[2], "10.0.0.1", max, share),
            Err(TooManyClients),
            "past the address's share"
        );
        assert_eq!(t.slots[ks[2]], Some(Budget::Uncounted));
        assert_eq!(t.begin(ks[3], "2001:db8::1", max, share), Ok(()));
        assert_eq!(
            t.slots[ks[3]],
            Some(Budget::Busy(ip("2001:db8::"))),
            "keyed by /64"
        );
        let more = t.add("10.0.0.9");
        assert_eq!(
            t.begin(more, "10.0.0.9", max, share),
            Err(TooManyClients),
            "past --max-clients"
        );
        // A second request on a serving connection is not counted again.
        assert_eq!(t.begin(ks[0], "10.0.0.1", max, share), Ok(()));
        assert_eq!((t.budgets.pending.total, t.budgets.busy.total), (0, 3));
        t.kill(ks[0]);
        assert_eq!(t.budgets.busy.of(ip("10.0.0.1")), 1);
    }

    #[test]
    fn kept_alive_connections_go_idle_and_the_heaviest_address_gives_one_up() {
        let mut t = Slots::default();
        let a: Vec<usize> = (0..2).map(|_| t.add("10.0.0.1")).collect();
        let b = t.add("10.0.0.2");
        for (k, peer) in [(a[0], "10.0.0.1"), (a[1], "10.0.0.1"), (b, "10.0.0.2")] {
            t.begin(k, peer, 10, 10).unwrap();
        }
        assert_eq!(t.idle(a[0], 2), None);
        assert!(matches!(t.slots[a[0]], Some(Budget::Idle(..))));
        assert_eq!(t.idle(b, 2), None);
        assert_eq!(
            t.idle(a[1], 2),
            Some(a[0]),
            "the oldest idle connection of the address with the most"
        );
        assert_eq!((t.budgets.busy.total, t.budgets.idle.total), (0, 3));
        // Its next request takes it out of the idle budget.
        assert_eq!(t.begin(b, "10.0.0.2", 10, 10), Ok(()));
        assert_eq!((t.budgets.busy.total, t.budgets.idle.total), (1, 2));
        // Going idle again is a no-op for a connection that is not serving.
        let mut u = Budget::Uncounted;
        assert!(!t.budgets.go_idle(&mut u));
    }
}
