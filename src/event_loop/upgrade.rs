//! Upgrade in place, as the loop conducts it. The request checks the binary on disk, closes
//! every client with 1012 and stops polling the listener (new connections wait in its
//! backlog); once the clients are gone, or [`UPGRADE_DRAIN`] has passed, the state goes into
//! a memfd and the process executes the new binary (`crate::upgrade`). The new process finds
//! `--restore-fd` on its command line and [`Server::restore`] puts everything back.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Instant;

use mio::Interest;

use super::{Server, unix_now};
use crate::agenda::Timer;
use crate::api::admin::{Clock, Counters};
use crate::api::protocol::{self, ServerMsg};
use crate::limits::{KILL_AFTER, UPGRADE_DRAIN, UPGRADE_HOLD};
use crate::net::conn::Kind;
use crate::net::http::Response;
use crate::net::listener::Acceptor;
use crate::net::ws::Phase;
use crate::sessions::pty;
use crate::token;
use crate::upgrade::handoff;
use crate::upgrade::state::{self, Parts};

impl Server {
    /// SIGUSR2 or `/admin/upgrade` (from connection `asking`, which is left to get its
    /// answer). Refused, with the reason, if the binary on disk does not read our state.
    pub(super) fn request_upgrade(
        &mut self,
        asking: Option<usize>,
        now: Instant,
    ) -> Result<String, String> {
        if self.shutting_down {
            return Err("the server is shutting down".into());
        }
        if self.upgrading.is_some() {
            return Err("an upgrade is already under way".into());
        }
        let exe = self
            .exe
            .clone()
            .ok_or("the path of the running binary is unknown")?;
        handoff::check(&exe)?;
        let exe = exe.display().to_string();
        eprintln!("keepty: upgrade: {exe} reads this state; closing clients with 1012");
        self.upgrading = Some(now + UPGRADE_DRAIN);
        self.wheel.insert(now + UPGRADE_DRAIN, Timer::UpgradeNow);
        if let Some(mut l) = self.acceptor.close() {
            let _ = self.poll.registry().deregister(&mut l);
            self.held_listener = Some(l);
        }
        // What each writer has not been sent stays in the ring until it is back.
        for k in self.sessions.keys() {
            if let Some(s) = self.sessions.get_mut(k)
                && let Some(w) = s.writer().and_then(|w| self.conns.ws(w))
            {
                s.hold_output(w.needs_from());
            }
        }
        for k in self.conns.keys() {
            // A head that came in this very turn is answered (and the connection then closes,
            // as `respond` sees the upgrade); only a connection with nothing asked is closed now.
            if Some(k) != asking && matches!(self.conns.kind_mut(k), Some(Kind::Http(_))) {
                self.drive_http(k, now);
            }
            match self.conns.kind_mut(k) {
                Some(Kind::Ws(w)) if w.phase() == Phase::Open => {
                    w.send(&ServerMsg::Restarting);
                    w.close_with(protocol::CLOSE_RESTART, "restarting");
                    self.relay().detach_ws(k);
                }
                // A file transfer in flight ends: the client sees the connection close and
                // the helper removes an unfinished upload when its socket closes.
                Some(Kind::Http(h)) if h.transfer().is_some() => self.relay().kill_conn(k),
                Some(Kind::Http(h)) if h.is_idle() && Some(k) != asking => {
                    self.relay().kill_conn(k)
                }
                _ => {}
            }
        }
        Ok(exe)
    }

    /// The answer to `/admin/upgrade` on connection `k`.
    pub(super) fn upgrade_answer(&mut self, k: usize, now: Instant) -> Response {
        match self.request_upgrade(Some(k), now) {
            Ok(exe) => Response::json(
                202,
                &serde_json::json!({ "upgrading": true, "binary": exe }),
            ),
            Err(why) => {
                eprintln!("keepty: upgrade refused: {why}; serving on");
                Response::error(409, "upgrade_refused", &why)
            }
        }
    }

    /// True once an upgrade's clients are gone or its drain time is over.
    /// A shutdown that came meanwhile wins: the upgrade is dropped.
    pub(super) fn upgrade_due(&self, now: Instant) -> bool {
        !self.shutting_down
            && self
                .upgrading
                .is_some_and(|deadline| self.conns.is_empty() || now >= deadline)
    }

    /// Writes the state and executes the new binary. Returns only if the exec failed, and
    /// then serves on as before.
    pub(super) fn execute_upgrade(&mut self, now: Instant) {
        self.upgrading = None;
        let (Some(listener), Some(exe)) = (self.held_listener.take(), self.exe.clone()) else {
            return;
        };
        let counters = Counters {
            upgrades: self.counters.upgrades + 1,
            ..self.counters.clone()
        };
        let parts = Parts {
            listener_fd: listener.as_raw_fd(),
            table: &self.sessions,
            counters: &counters,
            auth_failures: self.gate.auth_failures(),
            failures: self.gate.failures().snapshot(now),
            ttl: self.limits.ttl,
            uptime: self.clock.uptime(now),
        };
        let began = Instant::now();
        let bytes = state::encode(&parts, now);
        let mut keep: Vec<BorrowedFd<'_>> = vec![listener.as_fd()];
        keep.extend(self.sessions.pty_fds());
        eprintln!(
            "keepty: upgrade: executing {} ({} sessions, {} bytes of state written in {} us)",
            exe.display(),
            self.sessions.len(),
            bytes.len(),
            began.elapsed().as_micros()
        );
        let e = handoff::exec(&exe, &bytes, &keep);
        eprintln!(
            "keepty: upgrade failed: cannot execute {}: {e}; serving on",
            exe.display()
        );
        let mut listener = listener;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut listener, token::LISTENER, Interest::READABLE)
        {
            eprintln!("keepty: cannot watch the listener again: {e}");
        }
        self.acceptor = Acceptor::new(listener);
        self.accept_all(now);
        // The writers' held output is theirs for as long as after a real upgrade.
        for (k, s) in self.sessions.iter().filter(|(_, s)| s.held().is_some()) {
            self.wheel
                .insert(now + UPGRADE_HOLD, Timer::ReleaseHold(k, s.generation()));
        }
    }

    /// Puts back what the process before the exec left in `buf`: the table with its
    /// terminals, the counters, the failure limiter and every timer. A table that cannot be
    /// read at all is a loud error and the server goes on empty: its sessions' masters were
    /// never adopted, so they close and those shells are hung up.
    pub(super) fn restore(&mut self, buf: &[u8], now: Instant) {
        self.restored = true;
        let began = Instant::now();
        let d = match state::decode(buf, self.poll.registry(), now) {
            Ok(d) => d,
            Err(e) => {
                eprintln!(
                    "keepty: upgrade: ERROR: the sessions cannot be restored ({e}); starting empty"
                );
                return;
            }
        };
        self.sessions = d.table;
        self.counters = d.counters;
        let (limiter, count) = self.gate.failures_mut();
        *count = d.auth_failures;
        limiter.restore(&d.failures, now);
        let unix_ms = unix_now().as_millis();
        self.clock = Clock::new(
            now.checked_sub(d.uptime).unwrap_or(now),
            unix_ms.saturating_sub(d.uptime.as_millis()),
        );
        for r in &d.rearm {
            self.wheel
                .insert(now + r.ttl_left, Timer::Ttl(r.key, r.generation));
            if self.sessions.get(r.key).is_some_and(|s| s.held().is_some()) {
                self.wheel
                    .insert(now + UPGRADE_HOLD, Timer::ReleaseHold(r.key, r.generation));
            }
            // Output may have come while nobody read.
            self.touched.sessions.push(r.key);
        }
        for &pid in self.sessions.orphans() {
            self.wheel.insert(now + KILL_AFTER, Timer::Kill(pid));
        }
        if let Some(next) = self.sessions.expire_tombstones(now) {
            self.wheel.insert(next, Timer::Tombstones);
        }
        // A child that died while the old process had not read its SIGCHLD yet: that
        // notice went with the old handler's pipe.
        let mut exits = Vec::new();
        pty::reap_all(|pid, st| exits.push((pid, st)));
        for (pid, st) in exits {
            self.on_child_exit(pid, st);
        }
        eprintln!(
            "keepty: upgrade: restored {} sessions ({} tombstones) in {} us, upgrade {}",
            self.sessions.len(),
            self.sessions.tombstone_count(),
            began.elapsed().as_micros(),
            self.counters.upgrades
        );
    }

    /// A writer did not come back within [`UPGRADE_HOLD`]: its session reads on as usual.
    pub(super) fn release_hold(&mut self, key: (usize, u64)) {
        if self.sessions.bound(key).is_some()
            && let Some(s) = self.sessions.get_mut(key.0)
        {
            s.release_hold();
            self.touched.sessions.push(key.0);
        }
    }
}
