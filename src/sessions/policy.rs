//! The attach policy of SPEC section 4 as a pure state machine over one session's clients:
//! who has the keyboard, who only watches, who is turned away and who is handed off. The event
//! loop does the talking (messages, close codes, SIGWINCH) after asking this what happens, so
//! the rules can be checked against a model without sockets (see the tests and
//! `fuzz/fuzz_targets/policy.rs`).

use crate::config::AttachPolicy;

/// The clients attached to one session, oldest first, and which of them is the writer.
///
/// Invariants, whatever the sequence of calls: every client appears once; the writer is one
/// of the clients; under `reject` and `handoff` there is at most one client; under `multi` a
/// session with clients always has a writer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seats {
    clients: Vec<usize>,
    writer: Option<usize>,
}

/// What a newcomer gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The keyboard. `evicted` are the clients it was handed off from (`handoff`), which must
    /// be told `taken_over` and closed.
    Writer {
        /// Clients that lost the session to the newcomer, oldest first.
        evicted: Vec<usize>,
    },
    /// A view of the output (`multi`).
    Viewer,
    /// Nothing: the session is attached elsewhere (`reject`).
    Refused,
}

impl Seats {
    /// No clients.
    pub fn new() -> Seats {
        Seats::default()
    }

    /// Attached clients, oldest first.
    pub fn clients(&self) -> &[usize] {
        &self.clients
    }

    /// The client whose input and resizes reach the PTY.
    pub fn writer(&self) -> Option<usize> {
        self.writer
    }

    /// True when nobody is attached.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Whether `k` is attached.
    pub fn holds(&self, k: usize) -> bool {
        self.clients.contains(&k)
    }

    /// A newcomer `k` (not attached yet) arrives under `policy`.
    pub fn admit(&mut self, policy: AttachPolicy, k: usize) -> Admission {
        debug_assert!(!self.holds(k), "client {k} admitted twice");
        if self.holds(k) {
            return Admission::Refused;
        }
        let admission = if self.writer.is_none() {
            Admission::Writer {
                evicted: Vec::new(),
            }
        } else {
            match policy {
                AttachPolicy::Reject => return Admission::Refused,
                AttachPolicy::Multi => Admission::Viewer,
                AttachPolicy::Handoff => {
                    self.writer = None;
                    Admission::Writer {
                        evicted: std::mem::take(&mut self.clients),
                    }
                }
            }
        };
        self.clients.push(k);
        if matches!(admission, Admission::Writer { .. }) {
            self.writer = Some(k);
        }
        admission
    }

    /// Client `k` leaves (detach, close, taken over). Returns the client that becomes the
    /// writer in its place: under `multi`, when the writer leaves, the oldest viewer.
    pub fn leave(&mut self, policy: AttachPolicy, k: usize) -> Option<usize> {
        let before = self.clients.len();
        self.clients.retain(|&c| c != k);
        if self.clients.len() == before || self.writer != Some(k) {
            return None;
        }
        self.writer = None;
        if policy == AttachPolicy::Multi {
            self.writer = self.clients.first().copied();
        }
        self.writer
    }

    /// Viewer `k` asks for the keyboard (`take_control`). Granted only under `multi`, to an
    /// attached client that is not the writer already; returns `Some(old writer)` when
    /// granted (the old writer stays, as a viewer).
    pub fn take_control(&mut self, policy: AttachPolicy, k: usize) -> Option<Option<usize>> {
        if policy != AttachPolicy::Multi || !self.holds(k) || self.writer == Some(k) {
            return None;
        }
        Some(self.writer.replace(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICIES: [AttachPolicy; 3] = [
        AttachPolicy::Reject,
        AttachPolicy::Handoff,
        AttachPolicy::Multi,
    ];

    #[test]
    fn reject_turns_the_second_client_away() {
        let mut s = Seats::new();
        let p = AttachPolicy::Reject;
        assert_eq!(s.admit(p, 1), Admission::Writer { evicted: vec![] });
        assert_eq!(s.admit(p, 2), Admission::Refused);
        assert_eq!(s.clients(), &[1]);
        assert_eq!(s.leave(p, 1), None);
        assert_eq!(s.admit(p, 2), Admission::Writer { evicted: vec![] });
        assert_eq!(s.take_control(p, 2), None);
    }

    #[test]
    fn handoff_evicts_the_old_client() {
        let mut s = Seats::new();
        let p = AttachPolicy::Handoff;
        s.admit(p, 1);
        assert_eq!(s.admit(p, 2), Admission::Writer { evicted: vec![1] });
        assert_eq!((s.clients(), s.writer()), (&[2][..], Some(2)));
        // The evicted client's own leave afterwards changes nothing.
        assert_eq!(s.leave(p, 1), None);
        assert_eq!(s.writer(), Some(2));
    }

    #[test]
    fn multi_views_takes_control_and_promotes_the_oldest_viewer() {
        let mut s = Seats::new();
        let p = AttachPolicy::Multi;
        s.admit(p, 1);
        assert_eq!(s.admit(p, 2), Admission::Viewer);
        assert_eq!(s.admit(p, 3), Admission::Viewer);
        assert_eq!(s.take_control(p, 3), Some(Some(1)));
        assert_eq!(s.take_control(p, 3), None, "already the writer");
        assert_eq!(s.take_control(p, 9), None, "not attached");
        // The writer leaves: the oldest remaining client (1, now a viewer) takes over.
        assert_eq!(s.leave(p, 3), Some(1));
        assert_eq!(s.leave(p, 2), None, "a viewer leaving changes no roles");
        assert_eq!(s.leave(p, 1), None);
        assert!(s.is_empty() && s.writer().is_none());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Admit(usize),
        Leave(usize),
        Take(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..8).prop_map(Op::Admit),
            (0usize..8).prop_map(Op::Leave),
            (0usize..8).prop_map(Op::Take),
        ]
    }

    fn check_invariants(p: AttachPolicy, s: &Seats) {
        let mut sorted = s.clients().to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), s.clients().len(), "a client twice: {s:?}");
        if let Some(w) = s.writer() {
            assert!(s.holds(w), "writer not attached: {s:?}");
        }
        match p {
            AttachPolicy::Multi => assert_eq!(s.writer().is_some(), !s.is_empty(), "{s:?}"),
            _ => assert!(s.clients().len() <= 1, "{p:?} with two clients: {s:?}"),
        }
    }

    proptest! {
        #[test]
        fn invariants_hold(policy in 0usize..3, ops in proptest::collection::vec(op(), 0..60)) {
            let p = POLICIES[policy];
            let mut s = Seats::new();
            for op in ops {
                let before = s.clone();
                match op {
                    Op::Admit(k) if s.holds(k) => continue,
                    Op::Admit(k) => match s.admit(p, k) {
                        Admission::Refused => {
                            prop_assert_eq!(p, AttachPolicy::Reject);
                            prop_assert_eq!(&s, &before);
                        }
                        Admission::Viewer => prop_assert_eq!(p, AttachPolicy::Multi),
                        Admission::Writer { evicted } => {
                            prop_assert_eq!(s.writer(), Some(k));
                            let expect = if before.writer().is_some() { before.clients().to_vec() } else { vec![] };
                            prop_assert_eq!(evicted, expect);
                        }
                    },
                    Op::Leave(k) => {
                        let promoted = s.leave(p, k);
                        prop_assert!(!s.holds(k));
                        if let Some(n) = promoted {
                            prop_assert_eq!(before.writer(), Some(k));
                            prop_assert_eq!(Some(&n), s.clients().first());
                        }
                    }
                    Op::Take(k) => {
                        let granted = s.take_control(p, k);
                        prop_assert_eq!(granted.is_some(),
                            p == AttachPolicy::Multi && before.holds(k) && before.writer() != Some(k));
                        if granted.is_some() {
                            prop_assert_eq!(s.writer(), Some(k));
                            prop_assert_eq!(s.clients(), before.clients());
                        } else {
                            prop_assert_eq!(&s, &before);
                        }
                    }
                }
                check_invariants(p, &s);
            }
        }
    }
}
