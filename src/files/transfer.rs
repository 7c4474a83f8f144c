//! One file transfer on an HTTP connection: waiting for the helper, receiving a body into
//! a file, or sending a file, without blocking. [`Transfer::advance`] is called by the
//! connection ([`crate::net::conn::HttpConn`]) in its transfer phase and says what happened
//! ([`Outcome`]); it moves at most [`TRANSFER_PASS`] bytes a call so other connections and
//! sessions keep their turns, and reads the socket until `WouldBlock` otherwise.
//!
//! Memory: one buffer of [`TRANSFER_BUF`] per transfer (charged as
//! [`crate::limits::Charge::Transfer`]); never the file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::files::helper::{Ask, Helper};
use crate::files::wire::{self, FileError};
use crate::limits::{TRANSFER_BUF, TRANSFER_PASS};
use crate::net::http::Response;
use crate::net::stream::Transport;

/// True when `fd` is a regular file. The helper checks, but it runs as the session's user:
/// whatever it hands back is verified here, since a pipe or socket would block the loop on
/// its first read or write, where a regular file never does.
fn is_file(fd: &std::os::fd::OwnedFd) -> bool {
    use nix::sys::stat::SFlag;
    nix::sys::stat::fstat(fd)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG)
}

/// The interim answer to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What a transfer does once its helper answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// Answer the session's directory.
    Cwd,
    /// Check a file for a download ticket.
    Ticket,
    /// Receive a body of this many bytes into the file.
    Upload(u64),
    /// Send the file (`true`: the head only, for HEAD).
    Download(bool),
}

enum Phase {
    /// The helper has the first request.
    Asking,
    /// The body goes into `file`; `left` bytes are still to come. `interim`: bytes of the
    /// `100 Continue` a client that asked for one is still to get before its body.
    Receiving {
        file: File,
        left: u64,
        interim: usize,
    },
    /// The body is complete; the helper renames it into place.
    Committing,
    /// The head, then the file.
    Sending {
        head: Vec<u8>,
        pos: usize,
        file: File,
        left: u64,
        start: usize,
        end: usize,
    },
}

/// What [`Transfer::advance`] got to.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing more until the socket or the helper is ready again.
    Blocked,
    /// The turn's byte budget is spent with work left: come back after the others.
    Yield,
    /// The transfer is over: send this (and keep the connection alive if `true`).
    Respond(Response, bool),
    /// A ticket's file checks out: the loop issues the ticket and answers.
    Ticket {
        /// The absolute path.
        path: String,
        /// Its size.
        size: u64,
    },
    /// The whole file is sent: the connection reads its next request.
    Sent,
    /// The peer went away or broke off: close (an unfinished upload leaves nothing).
    Closed,
}

/// One transfer in flight.
pub struct Transfer {
    helper: Helper,
    job: Job,
    phase: Phase,
    /// The session's slot and generation: one transfer per session at a time.
    session: (usize, u64),
    /// `--transfer-timeout`: the deadline moves this far on every byte.
    timeout: Duration,
    /// Whether the connection may stay open after the answer.
    keep: bool,
    /// The download's response, headers decorated by the loop, body empty.
    template: Option<Response>,
    /// The upload's request said `Expect: 100-continue` (curl does for bodies over 1 MiB,
    /// and waits a second for it otherwise).
    expect_continue: bool,
    buf: Vec<u8>,
}

impl Transfer {
    /// A transfer whose first request is already with `helper`.
    pub fn new(
        helper: Helper,
        job: Job,
        session: (usize, u64),
        timeout: Duration,
        keep: bool,
        template: Response,
    ) -> Transfer {
        Transfer {
            helper,
            job,
            phase: Phase::Asking,
            session,
            timeout,
            keep,
            template: Some(template),
            expect_continue: false,
            buf: Vec::new(),
        }
    }

    /// Answers `100 Continue` once the upload's file is open (a refusal goes out instead).
    pub fn expect_continue(mut self, yes: bool) -> Transfer {
        self.expect_continue = yes;
        self
    }

    /// The session it belongs to.
    pub fn session(&self) -> (usize, u64) {
        self.session
    }

    /// True for an upload or a download (one per session at a time); false for the short
    /// asks (cwd, a ticket's check), which may run beside one.
    pub fn streams(&self) -> bool {
        matches!(self.job, Job::Upload(_) | Job::Download(_))
    }

    /// `--transfer-timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Goes as far as it can: `early` holds body bytes that arrived with the head;
    /// `deadline` moves on with every byte moved.
    pub fn advance<S: Transport>(
        &mut self,
        stream: &mut S,
        early: &mut Vec<u8>,
        deadline: &mut Instant,
        now: Instant,
    ) -> Outcome {
        let mut moved = 0usize;
        loop {
            let next = match &mut self.phase {
                Phase::Asking | Phase::Committing => self.answered(),
                Phase::Receiving { .. } => self.receive(stream, early, &mut moved),
                Phase::Sending { .. } => self.send(stream, &mut moved),
            };
            match next {
                Some(Outcome::Blocked) if moved > 0 => {
                    *deadline = now + self.timeout;
                    return Outcome::Blocked;
                }
                Some(o) => return o,
                None => {
                    *deadline = now + self.timeout;
                    if moved >= TRANSFER_PASS {
                        return Outcome::Yield;
                    }
                }
            }
        }
    }

    /// The helper's answer, if it came: `None` to go on.
    fn answered(&mut self) -> Option<Outcome> {
        let (answer, fd) = match self.helper.answer() {
            Ok(Some(a)) => a,
            Ok(None) => return Some(Outcome::Blocked),
            Err(e) => {
                eprintln!("keepty: file helper failed: {e}");
                return Some(self.refuse(&FileError::Io("the file helper failed".into())));
            }
        };
        if matches!(self.phase, Phase::Committing) {
            return Some(match answer.result() {
                Ok(a) => Outcome::Respond(
                    Response::json(201, &serde_json::json!({"path": a.path, "size": a.size})),
                    false,
                ),
                Err(e) => self.refuse(&e),
            });
        }
        let answer = match answer.result() {
            Ok(a) => a,
            Err(e) => return Some(self.refuse(&e)),
        };
        match self.job {
            Job::Cwd => Some(Outcome::Respond(
                Response::json(200, &serde_json::json!({ "cwd": answer.path })),
                self.keep,
            )),
            Job::Ticket => Some(Outcome::Ticket {
                path: answer.path,
                size: answer.size,
            }),
            Job::Upload(length) => {
                let Some(fd) = fd.filter(is_file) else {
                    return Some(self.refuse(&FileError::Io("no file from the helper".into())));
                };
                self.buf = vec![0; TRANSFER_BUF];
                self.phase = Phase::Receiving {
                    file: File::from(fd),
                    left: length,
                    interim: if self.expect_continue {
                        CONTINUE.len()
                    } else {
                        0
                    },
                };
                None
            }
            Job::Download(head_only) => {
                let Some(fd) = fd.filter(is_file) else {
                    return Some(self.refuse(&FileError::Io("no file from the helper".into())));
                };
                let mut resp = self
                    .template
                    .take()
                    .unwrap_or_else(|| Response::new(200, "", Vec::new()));
                resp.headers.push((
                    "Content-Disposition",
                    wire::content_disposition(wire::basename(&answer.path)).into(),
                ));
                let head = resp.encode_head_sized(self.keep, answer.size);
                if !head_only {
                    self.buf = vec![0; TRANSFER_BUF];
                }
                self.phase = Phase::Sending {
                    head,
                    pos: 0,
                    file: File::from(fd),
                    left: if head_only { 0 } else { answer.size },
                    start: 0,
                    end: 0,
                };
                None
            }
        }
    }

    /// A refusal ends the transfer; after a body was announced the connection closes.
    fn refuse(&self, e: &FileError) -> Outcome {
        Outcome::Respond(e.response(), self.keep)
    }

    /// One step of receiving the body: `None` to go on.
    fn receive<S: Transport>(
        &mut self,
        stream: &mut S,
        early: &mut Vec<u8>,
        moved: &mut usize,
    ) -> Option<Outcome> {
        let Phase::Receiving {
            file,
            left,
            interim,
        } = &mut self.phase
        else {
            return None;
        };
        if *interim > 0 {
            return match stream.write(&CONTINUE[CONTINUE.len() - *interim..]) {
                Ok(0) => Some(Outcome::Closed),
                Ok(n) => {
                    *interim -= n;
                    if *interim == 0
                        && let Err(e) = stream.flush()
                        && e.kind() != io::ErrorKind::WouldBlock
                    {
                        return Some(Outcome::Closed);
                    }
                    None
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(Outcome::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                Err(_) => Some(Outcome::Closed),
            };
        }
        if *left == 0 {
            if let Err(e) = self.helper.ask(&Ask {
                op: "commit".into(),
                ..Ask::default()
            }) {
                eprintln!("keepty: file helper failed: {e}");
                return Some(Outcome::Closed);
            }
            self.buf = Vec::new();
            self.phase = Phase::Committing;
            return None;
        }
        let room = usize::try_from(*left)
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        let n = if !early.is_empty() {
            let n = room.min(early.len());
            self.buf[..n].copy_from_slice(&early[..n]);
            early.drain(..n);
            n
        } else {
            match stream.read(&mut self.buf[..room]) {
                // The peer ended before the last byte: nothing is kept.
                Ok(0) => return Some(Outcome::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Some(Outcome::Blocked);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return None,
                Err(_) => return Some(Outcome::Closed),
            }
        };
        if let Err(e) = file.write_all(&self.buf[..n]) {
            let err = match e.raw_os_error().map(nix::errno::Errno::from_raw) {
                Some(errno) => wire::errno_error(errno),
                None => FileError::Io(e.to_string()),
            };
            return Some(Outcome::Respond(err.response(), false));
        }
        *left -= n as u64;
        *moved += n;
        None
    }

    /// One step of sending the head or the file: `None` to go on.
    fn send<S: Transport>(&mut self, stream: &mut S, moved: &mut usize) -> Option<Outcome> {
        let Phase::Sending {
            head,
            pos,
            file,
            left,
            start,
            end,
        } = &mut self.phase
        else {
            return None;
        };
        let blocked = |e: &io::Error| e.kind() == io::ErrorKind::WouldBlock;
        if *pos < head.len() {
            return match wrote(stream.write(&head[*pos..])) {
                Ok(n) => {
                    *pos += n;
                    None
                }
                Err(o) => Some(o),
            };
        }
        if start == end {
            if *left == 0 {
                // With TLS the last records may still be in rustls.
                return match stream.flush() {
                    Ok(()) => Some(Outcome::Sent),
                    Err(e) if blocked(&e) => Some(Outcome::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                    Err(_) => Some(Outcome::Closed),
                };
            }
            let room = usize::try_from(*left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            match file.read(&mut self.buf[..room]) {
                // The file shrank under us: the length sent cannot be kept, so the client
                // must see a cut connection rather than a short file it takes for whole.
                Ok(0) => return Some(Outcome::Closed),
                Ok(n) => {
                    *start = 0;
                    *end = n;
                    *left -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return None,
                Err(_) => return Some(Outcome::Closed),
            }
        }
        match wrote(stream.write(&self.buf[*start..*end])) {
            Ok(n) => {
                *start += n;
                *moved += n;
                None
            }
            Err(o) => Some(o),
        }
    }
}

/// What one socket write of a download did: bytes taken (0 when interrupted, to try again),
/// or how the pass ends.
fn wrote(r: io::Result<usize>) -> Result<usize, Outcome> {
    match r {
        Ok(0) => Err(Outcome::Closed),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(Outcome::Blocked),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(_) => Err(Outcome::Closed),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::files::helper::Identity;
    use crate::net::script::Script;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("keepty-transfer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn start(job: Job, op: &str, path: &std::path::Path, length: u64) -> Transfer {
        let h = Helper::spawn(&Identity {
            account: None,
            home: String::new(),
        })
        .unwrap();
        h.ask(&Ask {
            op: op.into(),
            path: path.to_string_lossy().into_owned(),
            length,
            leader: std::process::id() as i32,
            ..Ask::default()
        })
        .unwrap();
        Transfer::new(
            h,
            job,
            (0, 1),
            Duration::from_secs(30),
            true,
            Response::new(200, "application/octet-stream", Vec::new()),
        )
    }

    /// Advances until something other than waiting for the helper happens (bounded).
    fn drive(t: &mut Transfer, sock: &mut Script, early: &mut Vec<u8>) -> Outcome {
        let mut deadline = Instant::now();
        for _ in 0..5000 {
            match t.advance(sock, early, &mut deadline, Instant::now()) {
                Outcome::Blocked if matches!(t.phase, Phase::Asking | Phase::Committing) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                o => return o,
            }
        }
        panic!("the helper never answered");
    }

    #[test]
    fn an_upload_in_pieces_with_would_block_is_written_then_committed() {
        let d = scratch("up");
        let target = d.join("out.bin");
        let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let mut t = start(
            Job::Upload(body.len() as u64),
            "create",
            &target,
            body.len() as u64,
        );
        let mut sock = Script::new();
        // Part arrived with the head; the rest in pieces with would-blocks between.
        let mut early = body[..1000].to_vec();
        sock.feed(&body[1000..5000]).read_block();
        assert!(matches!(
            drive(&mut t, &mut sock, &mut early),
            Outcome::Blocked
        ));
        assert!(early.is_empty());
        sock.feed(&body[5000..]);
        // The byte budget makes it yield before the end.
        assert!(matches!(
            drive(&mut t, &mut sock, &mut early),
            Outcome::Yield
        ));
        let done = loop {
            match drive(&mut t, &mut sock, &mut early) {
                Outcome::Yield => continue,
                o => break o,
            }
        };
        match done {
            Outcome::Respond(r, false) => {
                assert_eq!(r.status, 201);
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(v["size"], body.len());
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(std::fs::read(&target).unwrap(), body);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_expected_continue_goes_out_before_the_body_is_read() {
        let d = scratch("continue");
        let target = d.join("c.bin");
        let mut t = start(Job::Upload(3), "create", &target, 3).expect_continue(true);
        let mut sock = Script::new();
        assert!(matches!(
            drive(&mut t, &mut sock, &mut Vec::new()),
            Outcome::Blocked
        ));
        assert_eq!(sock.take_written(), CONTINUE);
        sock.feed(b"abc");
        let done = loop {
            match drive(&mut t, &mut sock, &mut Vec::new()) {
                Outcome::Blocked => continue,
                o => break o,
            }
        };
        assert!(
            matches!(done, Outcome::Respond(ref r, false) if r.status == 201),
            "{done:?}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"abc");
        assert!(sock.written().is_empty(), "one interim answer");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_upload_cut_short_is_closed() {
        let d = scratch("cut");
        let target = d.join("out.bin");
        let mut t = start(Job::Upload(10), "create", &target, 10);
        let mut sock = Script::new();
        sock.feed(b"12345").eof();
        assert!(matches!(
            drive(&mut t, &mut sock, &mut Vec::new()),
            Outcome::Closed
        ));
        drop(t);
        assert!(!target.exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_download_sends_head_and_file_through_short_writes() {
        let d = scratch("down");
        let src = d.join("in.bin");
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &body).unwrap();
        let mut t = start(Job::Download(false), "open", &src, 0);
        let mut sock = Script::new();
        sock.accept(10).block();
        assert!(matches!(
            drive(&mut t, &mut sock, &mut Vec::new()),
            Outcome::Blocked
        ));
        let out = loop {
            match drive(&mut t, &mut sock, &mut Vec::new()) {
                Outcome::Yield | Outcome::Blocked => continue,
                Outcome::Sent => break sock.written(),
                o => panic!("{o:?}"),
            }
        };
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8(out[..split].to_vec()).unwrap();
        assert!(head.contains("Content-Length: 200000\r\n"), "{head}");
        assert!(head.contains("Content-Disposition: attachment; filename=\"in.bin\""));
        assert_eq!(&out[split..], &body[..]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn refusals_come_back_as_answers() {
        let d = scratch("refuse");
        let mut t = start(Job::Download(false), "open", &d.join("missing"), 0);
        match drive(&mut t, &mut Script::new(), &mut Vec::new()) {
            Outcome::Respond(r, true) => assert_eq!(r.status, 404),
            o => panic!("{o:?}"),
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
