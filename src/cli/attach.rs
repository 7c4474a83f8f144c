//! `keepty attach` and `keepty new`: this terminal on a session, over the same WebSocket a
//! browser uses. A pure core (what the detach key cuts, where a reconnect resumes, what a
//! server message means here) and, below it, the loop that polls stdin, the socket and the
//! signal pipes.

use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_json::{Value, json};
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use super::Fail;
use super::http::Server;
use super::term::{self, RawMode, SignalPipes};

// ---- the pure core -------------------------------------------------------------------

/// Which session to attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An existing session, by id.
    Existing(String),
    /// A new session, named or not (`new=1`).
    New(Option<String>),
}

/// How many bytes of `input` go to the session before the detach key, and whether the key
/// was pressed. Bytes after the key are not sent: the user asked to leave.
pub fn split_at_detach(input: &[u8], key: Option<u8>) -> (usize, bool) {
    match key.and_then(|k| input.iter().position(|&b| b == k)) {
        Some(i) => (i, true),
        None => (input.len(), false),
    }
}

/// Where this client is in the session's output, across reconnects: the offset of the next
/// byte it will write, once the first `attached` told it.
#[derive(Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The session; for `new` without a name, known from the first `attached`.
    pub session: Option<String>,
    /// The first connection creates the session.
    create: bool,
    /// The next output offset, once attached.
    pub offset: Option<u64>,
    /// Bytes the server said this client will never see, in total.
    pub lost: u64,
    /// Connections that reached `attached`.
    pub attaches: u32,
}

impl Cursor {
    /// A cursor before the first connection.
    pub fn new(target: &Target) -> Cursor {
        let (session, create) = match target {
            Target::Existing(id) => (Some(id.clone()), false),
            Target::New(name) => (name.clone(), true),
        };
        Cursor {
            session,
            create,
            offset: None,
            lost: 0,
            attaches: 0,
        }
    }

    /// The `/ws` query for the next connection: `new=1` only until the session exists, so a
    /// reconnect never starts a fresh shell; `since` once output was seen, so nothing is
    /// written twice or skipped.
    pub fn query(&self, size: Option<(u16, u16)>) -> String {
        let mut q = Vec::new();
        if let Some(id) = &self.session {
            q.push(format!("session={id}"));
        }
        if self.create && self.attaches == 0 {
            q.push("new=1".to_string());
        }
        if let Some(o) = self.offset {
            q.push(format!("since={o}"));
        }
        if let Some((c, r)) = size {
            q.push(format!("cols={c}&rows={r}"));
        }
        q.join("&")
    }

    /// An `attached` message: output now starts at `offset`, `lost` bytes were skipped.
    pub fn on_attached(&mut self, session: &str, offset: u64, lost: u64) {
        self.session = Some(session.to_string());
        self.offset = Some(offset);
        self.lost += lost;
        self.attaches += 1;
    }

    /// `n` output bytes were written.
    pub fn on_output(&mut self, n: usize) {
        if let Some(o) = &mut self.offset {
            *o += n as u64;
        }
    }

    /// A `gap`: the server skipped ahead to `offset`.
    pub fn on_gap(&mut self, offset: u64, lost: u64) {
        self.offset = Some(offset);
        self.lost += lost;
    }
}

/// What a server text message means for this client.
#[derive(Debug, PartialEq, Eq)]
pub enum Said {
    /// Attached at `offset`: write `restore` (if any) before the output, say `banner`.
    Attached {
        /// The session id.
        session: String,
        /// Where the following output starts.
        offset: u64,
        /// Bytes skipped.
        lost: u64,
        /// Escape sequences that put the terminal into the session's modes.
        restore: Option<String>,
        /// The line for stderr.
        banner: String,
    },
    /// A lagging client skipped ahead.
    Gap {
        /// The new offset.
        offset: u64,
        /// Bytes skipped.
        lost: u64,
    },
    /// Tell the user, keep going.
    Note(String),
    /// The program ended: exit with this status once the socket closes.
    Exited(u8, String),
    /// The server restarts in place: reconnect.
    Restarting,
    /// The session is over for this client: say why, exit 1.
    End(String),
}

/// The exit status of a program that exited with `code` or was killed by `signal`, as a
/// shell reports it.
pub fn exit_status(code: Option<i64>, signal: Option<i64>) -> u8 {
    match (code, signal) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(s)) => (128 + (s & 0x7f)) as u8,
        (None, None) => 1,
    }
}

/// Interprets one text message; `None` for a type this client does not know (ignored, as
/// the protocol allows the server to grow).
pub fn interpret(v: &Value, reconnect: bool) -> Option<Said> {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    Some(match v["type"].as_str()? {
        "attached" => {
            let session = s("session");
            let (offset, lost) = (n("offset"), n("lost"));
            let mut banner = if reconnect {
                format!("reconnected to {session} at offset {offset}")
            } else if v["created"].as_bool() == Some(true) {
                format!("created {session}")
            } else {
                format!("attached to {session}")
            };
            if v["role"].as_str() == Some("viewer") {
                banner.push_str(" as a viewer (input is ignored)");
            }
            if lost > 0 {
                banner.push_str(&format!(", {lost} bytes lost"));
            }
            Said::Attached {
                session,
                offset,
                lost,
                restore: v["restore"].as_str().map(str::to_string),
                banner,
            }
        }
        "gap" => Said::Gap {
            offset: n("offset"),
            lost: n("lost"),
        },
        "role" => Said::Note(format!("you are now the {}", s("role"))),
        "exited" => {
            let status = exit_status(v["code"].as_i64(), v["signal"].as_i64());
            let how = match (v["code"].as_i64(), v["signal"].as_i64()) {
                (Some(c), _) => format!("the program exited with code {c}"),
                (None, Some(sig)) => format!("the program was killed by signal {sig}"),
                _ => "the program exited".to_string(),
            };
            Said::Exited(status, how)
        }
        "restarting" => Said::Restarting,
        "taken_over" => Said::End("another client took the session over".into()),
        "dropped" => Said::End("the session was dropped".into()),
        "expired" => Said::End("the session expired".into()),
        "shutdown" => Said::End("the server is shutting down".into()),
        "error" => Said::End(format!("{}: {}", s("code"), s("message"))),
        _ => return None,
    })
}

/// One line on stderr. In raw mode a bare `\n` would not return the carriage.
pub fn banner_line(text: &str, raw: bool) -> String {
    let text = crate::api::text::escape_control(text);
    if raw {
        format!("\r\nkeepty: {text}\r\n")
    } else {
        format!("keepty: {text}\n")
    }
}

// ---- the loop ------------------------------------------------------------------------

/// The first reconnect waits this long; each next one twice as long, up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Reconnecting gives up after this long without a connection.
const RECONNECT_FOR: Duration = Duration::from_secs(600);
/// The server pings every 20 s (SPEC section 3); three silent intervals mean it is gone.
const SILENCE: Duration = Duration::from_secs(60);

/// How a connection ended.
enum Ended {
    /// Exit with this status (after a detach, an exit, a refusal).
    Exit(u8),
    /// The network went away: reconnect.
    Lost(String),
}

struct Client<'a> {
    server: &'a Server,
    token: Option<&'a str>,
    detach: Option<u8>,
    tty: OwnedFd,
    raw: bool,
    signals: SignalPipes,
    cursor: Cursor,
    out: io::Stdout,
}

/// Runs the terminal on `target` until the program exits, the user detaches, or the session
/// ends; returns the exit status.
pub fn run(
    server: &Server,
    token: Option<&str>,
    target: Target,
    detach: Option<u8>,
) -> Result<u8, Fail> {
    let tty = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Fail::Usage(format!("stdin: {e}")))?;
    let cursor = Cursor::new(&target);
    // The first connection is made before raw mode and before the signal handlers, so a
    // refusal prints as a normal line and Ctrl-C still ends a slow connect.
    let ws = connect(server, token, &cursor, tty.as_fd())?;
    let signals = SignalPipes::install().map_err(|e| Fail::Usage(format!("signals: {e}")))?;
    let mut c = Client {
        server,
        token,
        detach,
        raw: false,
        tty,
        signals,
        cursor,
        out: io::stdout(),
    };
    let _raw = if term::is_tty(c.tty.as_fd()) {
        let r = RawMode::enter(c.tty.as_fd()).map_err(|e| Fail::Usage(format!("stdin: {e}")))?;
        c.raw = true;
        Some(r)
    } else {
        None
    };
    c.serve(ws)
}

impl Client<'_> {
    fn say(&self, text: &str) {
        let _ = io::stderr().write_all(banner_line(text, self.raw).as_bytes());
    }

    fn connect(&self) -> Result<WebSocket<TcpStream>, Fail> {
        connect(self.server, self.token, &self.cursor, self.tty.as_fd())
    }

    /// Serves connections until one ends for good, reconnecting when the network drops.
    fn serve(&mut self, mut ws: WebSocket<TcpStream>) -> Result<u8, Fail> {
        loop {
            match self.pump(&mut ws) {
                Ended::Exit(code) => return Ok(code),
                Ended::Lost(why) => {
                    self.say(&format!("{why}; reconnecting"));
                    ws = match self.reconnect()? {
                        Some(ws) => ws,
                        None => return Ok(0),
                    };
                }
            }
        }
    }

    /// Tries again with backoff, watching stdin for the detach key meanwhile (`None`: the
    /// user detached).
    fn reconnect(&mut self) -> Result<Option<WebSocket<TcpStream>>, Fail> {
        let start = Instant::now();
        let mut wait = BACKOFF_MIN;
        loop {
            if self.wait_or_detach(wait)? {
                self.say("detached");
                return Ok(None);
            }
            match self.connect() {
                Ok(ws) => return Ok(Some(ws)),
                Err(Fail::Unreachable(_)) if start.elapsed() < RECONNECT_FOR => {
                    wait = (wait * 2).min(BACKOFF_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sleeps `d` unless the detach key (true) or a stopping signal comes first.
    fn wait_or_detach(&mut self, d: Duration) -> Result<bool, Fail> {
        let end = Instant::now() + d;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let ms = PollTimeout::from(left.as_millis().min(10_000) as u16);
            let mut fds = [
                PollFd::new(self.tty.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.stop.as_fd(), PollFlags::POLLIN),
            ];
            let _ = poll(&mut fds, ms);
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let (input, stop) = (ready(&fds[0]), ready(&fds[1]));
            if stop {
                return Err(Fail::Refused("stopped by a signal".into()));
            }
            if input {
                let mut buf = [0u8; 1024];
                match read_fd(self.tty.as_fd(), &mut buf) {
                    // Typing while the network is down goes nowhere, except the detach key.
                    Ok(n) if n > 0 => {
                        if split_at_detach(&buf[..n], self.detach).1 {
                            return Ok(true);
                        }
                    }
                    _ => return Ok(true),
                }
            }
        }
    }

    /// One connection: until it ends.
    fn pump(&mut self, ws: &mut WebSocket<TcpStream>) -> Ended {
        let reconnect = self.cursor.attaches > 0;
        let mut exit: Option<u8> = None;
        let mut end: Option<String> = None;
        let mut heard = Instant::now();
        let mut buf = vec![0u8; 16 << 10];
        loop {
            // Read everything the socket has (tungstenite may hold whole frames already).
            loop {
                match ws.read() {
                    Ok(Message::Binary(b)) => {
                        heard = Instant::now();
                        if self
                            .out
                            .write_all(&b)
                            .and_then(|()| self.out.flush())
                            .is_err()
                        {
                            return Ended::Exit(1);
                        }
                        self.cursor.on_output(b.len());
                    }
                    Ok(Message::Text(t)) => {
                        heard = Instant::now();
                        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                            continue;
                        };
                        match interpret(&v, reconnect) {
                            Some(Said::Attached {
                                session,
                                offset,
                                lost,
                                restore,
                                banner,
                            }) => {
                                if let Some(r) = restore {
                                    let _ = self.out.write_all(r.as_bytes());
                                }
                                self.cursor.on_attached(&session, offset, lost);
                                self.say(&banner);
                            }
                            Some(Said::Gap { offset, lost }) => {
                                self.cursor.on_gap(offset, lost);
                                self.say(&format!(
                                    "{lost} bytes skipped (this terminal fell behind)"
                                ));
                            }
                            Some(Said::Note(n)) => self.say(&n),
                            Some(Said::Exited(code, how)) => {
                                self.say(&how);
                                exit = Some(code);
                            }
                            Some(Said::Restarting) => {
                                return Ended::Lost("the server restarts".into());
                            }
                            Some(Said::End(why)) => end = Some(why),
                            None => {}
                        }
                    }
                    Ok(Message::Close(_)) => {}
                    Ok(_) => heard = Instant::now(),
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        break;
                    }
                    Err(e) => {
                        if let Some(code) = exit {
                            return Ended::Exit(code);
                        }
                        if let Some(why) = end.take() {
                            self.say(&why);
                            return Ended::Exit(1);
                        }
                        let closed = matches!(
                            e,
                            tungstenite::Error::ConnectionClosed
                                | tungstenite::Error::AlreadyClosed
                        );
                        if closed && self.cursor.attaches == 0 {
                            self.say("the server closed the connection");
                            return Ended::Exit(1);
                        }
                        return Ended::Lost(format!("connection lost ({e})"));
                    }
                }
            }
            let _ = ws.flush();
            if heard.elapsed() > SILENCE {
                return Ended::Lost("the server went silent".into());
            }
            let sock = ws.get_ref().as_fd();
            let mut fds = [
                PollFd::new(self.tty.as_fd(), PollFlags::POLLIN),
                PollFd::new(sock, PollFlags::POLLIN),
                PollFd::new(self.signals.winch.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.stop.as_fd(), PollFlags::POLLIN),
            ];
            if poll(&mut fds, PollTimeout::from(1000u16)).is_err() {
                continue; // EINTR from a signal: its pipe is readable now
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let (input, winch, stop) = (ready(&fds[0]), ready(&fds[2]), ready(&fds[3]));
            if stop {
                self.say("stopped by a signal; the session keeps running");
                return Ended::Exit(1);
            }
            if winch {
                term::drain(&mut self.signals.winch);
                if let Some((cols, rows)) = term::size(self.tty.as_fd()) {
                    let msg = json!({"type": "resize", "cols": cols, "rows": rows});
                    let _ = ws.send(Message::text(msg.to_string()));
                }
            }
            if input {
                match read_fd(self.tty.as_fd(), &mut buf) {
                    Ok(n) if n > 0 => {
                        let (send, detach) = split_at_detach(&buf[..n], self.detach);
                        if send > 0 {
                            let _ = ws.send(Message::binary(buf[..send].to_vec()));
                        }
                        if detach {
                            let _ = ws.close(None);
                            let _ = ws.flush();
                            self.say("detached; the session keeps running");
                            return Ended::Exit(0);
                        }
                    }
                    // Stdin ended (not a terminal, or it hung up): leave the session running.
                    Ok(_) | Err(_) => {
                        let _ = ws.close(None);
                        let _ = ws.flush();
                        return Ended::Exit(0);
                    }
                }
            }
        }
    }
}

/// Connects and completes the WebSocket handshake (blocking, with timeouts), at the place
/// `cursor` says, with the terminal's size now.
fn connect(
    server: &Server,
    token: Option<&str>,
    cursor: &Cursor,
    tty: BorrowedFd<'_>,
) -> Result<WebSocket<TcpStream>, Fail> {
    let query = cursor.query(term::size(tty));
    let (stream, first_frames) = server.upgrade(&format!("/ws?{query}"), token)?;
    stream
        .set_nonblocking(true)
        .map_err(|e| Fail::Unreachable(format!("{}: {e}", server.authority())))?;
    Ok(WebSocket::from_partially_read(
        stream,
        first_frames,
        Role::Client,
        None,
    ))
}

fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn detach_key() {
        assert_eq!(split_at_detach(b"ls\r", Some(0x1c)), (3, false));
        assert_eq!(split_at_detach(b"ab\x1ccd", Some(0x1c)), (2, true));
        assert_eq!(split_at_detach(b"\x1c", Some(0x1c)), (0, true));
        assert_eq!(split_at_detach(b"ab\x1c", None), (3, false));
        assert_eq!(split_at_detach(b"", Some(1)), (0, false));
    }

    #[test]
    fn cursor_across_reconnects() {
        let mut c = Cursor::new(&Target::New(None));
        assert_eq!(c.query(Some((80, 24))), "new=1&cols=80&rows=24");
        c.on_attached("Abc", 0, 0);
        c.on_output(100);
        c.on_output(23);
        // The reconnect names the session the server picked, never `new=1`, and resumes.
        assert_eq!(c.query(None), "session=Abc&since=123");
        c.on_gap(500, 377);
        c.on_attached("Abc", 500, 0);
        c.on_output(1);
        assert_eq!(
            c.query(Some((100, 30))),
            "session=Abc&since=501&cols=100&rows=30"
        );
        assert_eq!(c.lost, 377);
        assert_eq!(c.attaches, 2);

        let c = Cursor::new(&Target::Existing("w".into()));
        assert_eq!(c.query(None), "session=w");
        let c = Cursor::new(&Target::New(Some("n".into())));
        assert_eq!(c.query(None), "session=n&new=1");
    }

    #[test]
    fn messages() {
        let a = json!({"type":"attached","session":"s1","created":true,"offset":7,"lost":3,
            "role":"writer","restore":"\u{1b}[?1049h"});
        match interpret(&a, false).unwrap() {
            Said::Attached {
                session,
                offset,
                lost,
                restore,
                banner,
            } => {
                assert_eq!((session.as_str(), offset, lost), ("s1", 7, 3));
                assert_eq!(restore.as_deref(), Some("\u{1b}[?1049h"));
                assert_eq!(banner, "created s1, 3 bytes lost");
            }
            other => panic!("{other:?}"),
        }
        let a = json!({"type":"attached","session":"s1","offset":9,"lost":0,"role":"viewer"});
        match interpret(&a, true).unwrap() {
            Said::Attached { banner, .. } => {
                assert_eq!(
                    banner,
                    "reconnected to s1 at offset 9 as a viewer (input is ignored)"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            interpret(&json!({"type":"exited","code":3,"signal":null}), false),
            Some(Said::Exited(3, "the program exited with code 3".into()))
        );
        assert_eq!(
            interpret(&json!({"type":"exited","code":null,"signal":9}), false),
            Some(Said::Exited(
                137,
                "the program was killed by signal 9".into()
            ))
        );
        assert_eq!(
            interpret(
                &json!({"type":"error","code":"not_found","message":"no such session"}),
                false
            ),
            Some(Said::End("not_found: no such session".into()))
        );
        assert_eq!(
            interpret(&json!({"type":"restarting"}), true),
            Some(Said::Restarting)
        );
        assert_eq!(interpret(&json!({"type":"future"}), true), None);
        assert_eq!(interpret(&json!({"no":"type"}), true), None);
    }

    #[test]
    fn banners() {
        assert_eq!(banner_line("detached", false), "keepty: detached\n");
        assert_eq!(banner_line("detached", true), "\r\nkeepty: detached\r\n");
        // A session id or server message cannot smuggle escapes onto the terminal.
        assert!(!banner_line("x\u{1b}[2Jy", false).contains('\u{1b}'));
        assert_eq!(exit_status(Some(256 + 7), None), 7);
        assert_eq!(exit_status(None, None), 1);
    }
}
