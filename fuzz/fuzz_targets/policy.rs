//! The attach policy (src/policy.rs) against a model written from SPEC section 4 alone: a
//! list of (client, role) in arrival order. Any sequence of attaches, leaves and
//! take_control requests must give the same answers and the same clients and writer.
#![no_main]
use keepty::config::AttachPolicy;
use keepty::sessions::policy::{Admission, Seats};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Model {
    /// Arrival order; true for the writer.
    seats: Vec<(usize, bool)>,
}

impl Model {
    fn writer(&self) -> Option<usize> {
        self.seats.iter().find(|s| s.1).map(|s| s.0)
    }
    fn holds(&self, k: usize) -> bool {
        self.seats.iter().any(|s| s.0 == k)
    }
    fn admit(&mut self, p: AttachPolicy, k: usize) -> Admission {
        if self.writer().is_none() {
            self.seats.push((k, true));
            return Admission::Writer { evicted: vec![] };
        }
        match p {
            AttachPolicy::Reject => Admission::Refused,
            AttachPolicy::Multi => {
                self.seats.push((k, false));
                Admission::Viewer
            }
            AttachPolicy::Handoff => {
                let evicted = self.seats.drain(..).map(|s| s.0).collect();
                self.seats.push((k, true));
                Admission::Writer { evicted }
            }
        }
    }
    fn leave(&mut self, p: AttachPolicy, k: usize) -> Option<usize> {
        let was_writer = self.seats.iter().any(|s| s.0 == k && s.1);
        self.seats.retain(|s| s.0 != k);
        if was_writer && p == AttachPolicy::Multi && !self.seats.is_empty() {
            self.seats[0].1 = true;
            return Some(self.seats[0].0);
        }
        None
    }
    fn take(&mut self, p: AttachPolicy, k: usize) -> Option<Option<usize>> {
        if p != AttachPolicy::Multi || !self.holds(k) || self.writer() == Some(k) {
            return None;
        }
        let old = self.writer();
        for s in &mut self.seats {
            s.1 = s.0 == k;
        }
        Some(old)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&p, ops)) = data.split_first() else {
        return;
    };
    let p = [
        AttachPolicy::Reject,
        AttachPolicy::Handoff,
        AttachPolicy::Multi,
    ][usize::from(p % 3)];
    let mut seats = Seats::new();
    let mut model = Model::default();
    for &op in ops {
        let k = usize::from(op & 0x0f);
        match op >> 4 & 3 {
            // Attaching twice is not something the event loop does (a connection attaches
            // once), so the model skips it.
            0 | 3 if !model.holds(k) => assert_eq!(seats.admit(p, k), model.admit(p, k)),
            1 => assert_eq!(seats.leave(p, k), model.leave(p, k)),
            2 => assert_eq!(seats.take_control(p, k), model.take(p, k)),
            _ => {}
        }
        let clients: Vec<usize> = model.seats.iter().map(|s| s.0).collect();
        assert_eq!(seats.clients(), &clients[..]);
        assert_eq!(seats.writer(), model.writer());
    }
});
