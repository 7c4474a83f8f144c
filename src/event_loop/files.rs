//! The loop's part in a file transfer: what needs both tables at once. It checks the session
//! (the caller's, running, no transfer in flight, the memory cap), forks the helper with the
//! session user's rights, registers the helper's socket under the connection's token and
//! hands the connection its [`Transfer`]; the connection does the rest
//! ([`crate::files::transfer`]). A ticket is issued here, since the table is the loop's.

use std::time::Instant;

use mio::Interest;
use mio::unix::SourceFd;

use super::Server;
use crate::agenda::Timer;
use crate::api::routes::{FileAsk, FileWhat};
use crate::files::helper::{Ask, Helper, Identity};
use crate::files::tickets::Grant;
use crate::files::transfer::{Job, Transfer};
use crate::files::wire::{self, FileError};
use crate::limits::Charge;
use crate::net::conn::After;
use crate::net::http::{Request, Response};
use crate::sessions::session::State;
use crate::token;

impl Server {
    /// A file route's request on connection `k`: starts its transfer, or answers why not.
    pub(super) fn start_files(&mut self, k: usize, req: &Request, ask: FileAsk, now: Instant) {
        if let Err(e) = self.begin_files(k, req, ask, now) {
            self.respond(k, req, e.response(), After::KeepAlive, now);
        }
    }

    fn begin_files(
        &mut self,
        k: usize,
        req: &Request,
        ask: FileAsk,
        now: Instant,
    ) -> Result<(), FileError> {
        let (skey, what) = match ask {
            FileAsk::Session { id, caller, what } => {
                let Some(skey) = self.sessions.find(&id) else {
                    // The caller's own ended session is "not running"; anything else,
                    // another user's tombstone included, is unknown.
                    return Err(match self.sessions.ended(&id) {
                        Some(t) if t.owner == caller.name => FileError::NotRunning,
                        _ => FileError::UnknownSession,
                    });
                };
                if self
                    .sessions
                    .get(skey)
                    .is_some_and(|s| s.owner() != caller.name)
                {
                    return Err(FileError::Forbidden);
                }
                (skey, what)
            }
            FileAsk::Ticket { ticket, head_only } => {
                let g = self
                    .tickets
                    .redeem(&ticket, now)
                    .ok_or(FileError::UnknownTicket)?;
                // A later session in the slot, or another owner's, is not what was granted.
                if self
                    .sessions
                    .bound(g.session)
                    .is_none_or(|s| s.owner() != g.owner)
                {
                    return Err(FileError::NotRunning);
                }
                (
                    g.session.0,
                    FileWhat::Download {
                        path: g.path,
                        head_only,
                    },
                )
            }
        };
        let Some(s) = self.sessions.get(skey) else {
            return Err(FileError::UnknownSession);
        };
        if s.state() != State::Running {
            return Err(FileError::NotRunning);
        }
        if self.shutting_down || self.upgrading.is_some() {
            return Err(FileError::Io(
                "the server is restarting or shutting down".into(),
            ));
        }
        let session = (skey, s.generation());
        let streams = matches!(what, FileWhat::Upload { .. } | FileWhat::Download { .. });
        if streams && self.conns.transfers().any(|t| t == (session, true)) {
            return Err(FileError::Busy);
        }
        if self.limits.admit(self.usage(), Charge::Transfer).is_err() {
            return Err(FileError::Memory);
        }
        let who = Identity::of_process(s.pid())
            .map_err(|e| FileError::Io(format!("cannot tell whose session it is: {e}")))?;
        let mut ask = Ask {
            pgid: s.foreground_group().unwrap_or(0),
            leader: s.pid(),
            home: who.home.clone(),
            ..Ask::default()
        };
        let job = match what {
            FileWhat::Cwd => {
                ask.op = "cwd".into();
                Job::Cwd
            }
            FileWhat::Download { path, head_only } => {
                ask.op = "open".into();
                ask.path = path;
                Job::Download(head_only)
            }
            FileWhat::Ticket { path } => {
                ask.op = "open".into();
                ask.path = path;
                Job::Ticket
            }
            FileWhat::Upload {
                path,
                overwrite,
                length,
            } => {
                ask.op = "create".into();
                ask.path = path;
                ask.overwrite = overwrite;
                ask.length = length;
                Job::Upload(length)
            }
        };
        let helper = Helper::spawn(&who).map_err(|e| {
            eprintln!("keepty: cannot start a file helper: {e}");
            FileError::Io("cannot start the file helper".into())
        })?;
        helper
            .ask(&ask)
            .map_err(|e| FileError::Io(format!("file helper: {e}")))?;
        // Under the connection's token: the helper's answer drives the connection. The
        // socket is closed with the transfer, which takes it out of the poll (only this
        // process holds it: the helper closed its inherited copies at start).
        let fd = helper.raw_fd();
        let pid = helper.pid();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), token::conn(k), Interest::READABLE)
            .map_err(|e| FileError::Io(format!("cannot poll the file helper: {e}")))?;
        let keep = req.keep_alive() && !req.has_body();
        let mut template = Response::new(200, "application/octet-stream", Vec::new());
        self.layer.decorate(&mut template);
        let what = match job {
            Job::Cwd => "cwd",
            Job::Ticket => "ticket",
            Job::Upload(_) => "upload",
            Job::Download(_) => "download",
        };
        let t = Transfer::new(
            helper,
            job,
            session,
            self.limits.transfer_timeout,
            keep,
            template,
        )
        .expect_continue(req.header_has_token("expect", "100-continue"));
        let Some(generation) = self.conns.generation(k) else {
            return Ok(());
        };
        if let Some(h) = self.conns.http_mut(k) {
            eprintln!(
                "keepty: session {} file {what} for {} (helper pid {pid})",
                s.id(),
                h.peer()
            );
            h.begin_transfer(t, now);
            if let Some(at) = h.rearm(now) {
                self.wheel.insert(at, Timer::Conn(k, generation));
            }
        }
        self.touched.conns.push(k);
        Ok(())
    }

    /// A transfer on connection `k` ended with `resp`.
    pub(super) fn answer_transfer(
        &mut self,
        k: usize,
        mut resp: Response,
        keep: bool,
        now: Instant,
    ) {
        self.layer.decorate(&mut resp);
        let closing = self.shutting_down || self.upgrading.is_some();
        let after = if keep { After::KeepAlive } else { After::Close };
        if let Some(h) = self.conns.http_mut(k) {
            h.answer(resp, after, closing, now);
        }
    }

    /// A ticket's file checked out on connection `k`: issue it and answer with its link.
    pub(super) fn issue_ticket(
        &mut self,
        k: usize,
        session: (usize, u64),
        path: String,
        size: u64,
        now: Instant,
    ) {
        let resp = match (self.sessions.bound(session), crate::random::bytes::<32>()) {
            (Some(s), Ok(raw)) => {
                let key = crate::base64::url(&raw);
                let url = format!("/api/files/{key}");
                let name = wire::basename(&path).to_string();
                self.tickets.issue(
                    key,
                    Grant {
                        session,
                        owner: s.owner().to_string(),
                        path,
                        expires: now,
                    },
                    now,
                );
                Response::json(
                    200,
                    &serde_json::json!({ "url": url, "name": name, "size": size }),
                )
            }
            (None, _) => FileError::NotRunning.response(),
            (_, Err(e)) => FileError::Io(format!("no random source: {e}")).response(),
        };
        self.answer_transfer(k, resp, true, now);
    }
}
