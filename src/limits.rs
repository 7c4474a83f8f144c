//! Every cap keepty has, in one file: the operator's (from [`crate::config::Config`]) in [`Limits`], the
//! fixed ones as constants below, each with the reason for its number; and the one budget for
//! `--max-memory`, [`Limits::admit`], which every site that creates something asks first.
//!
//! Memory is reserved up front, at the most each thing can hold (a ring in full, a connection
//! at its buffer caps), so the cap holds whatever the peers do afterwards.

use std::time::Duration;

// ---- the operator's caps: defaults (SPEC 1) -----------------------------------------------

/// `--ttl`: half a day, so a shell left at night is there in the morning.
pub const DEFAULT_TTL: Duration = Duration::from_secs(12 * 3600);
/// `--scrollback`: a few screens of a busy build log.
pub const DEFAULT_SCROLLBACK: usize = 256 << 10;
/// `--max-sessions`.
pub const DEFAULT_MAX_SESSIONS: usize = 32;
/// `--max-clients`: a browser holds about six connections per page.
pub const DEFAULT_MAX_CLIENTS: usize = 128;
/// `--max-memory` at most, by default: the cap on any machine with 256 MiB of RAM or more,
/// and on one whose RAM is unknown. It holds the default 32 sessions with full rings and a
/// client each (32 x 0.6 MiB) several times over.
pub const DEFAULT_MAX_MEMORY: usize = 64 << 20;
/// `--max-memory` at least, by default: room for six sessions at the default scrollback,
/// each with its client, whatever the machine says.
pub const MIN_DEFAULT_MAX_MEMORY: usize = 4 << 20;

/// The default `--max-memory` for a machine with `mem_total` bytes of RAM: a quarter of it,
/// within [`MIN_DEFAULT_MAX_MEMORY`]..=[`DEFAULT_MAX_MEMORY`]. A quarter, because the cap is a
/// worst case (every ring full, every buffer at its limit) that keepty reserves, and the
/// kernel, the box's own services (a router's dnsmasq, firewall and web UI) and the shells
/// keepty starts need the rest: on a 32 MiB router (about 27 MiB MemTotal) that is 6.8 MiB,
/// ten sessions with a client each, where the old fixed 64M was more than the whole RAM.
pub fn default_max_memory(mem_total: Option<u64>) -> usize {
    mem_total.map_or(DEFAULT_MAX_MEMORY, |t| {
        // Clamped to at most 64M first, so it fits any usize.
        (t / 4).clamp(MIN_DEFAULT_MAX_MEMORY as u64, DEFAULT_MAX_MEMORY as u64) as usize
    })
}

/// `--max-upload` at least, by default.
pub const MIN_DEFAULT_MAX_UPLOAD: u64 = 1 << 20;
/// `--max-upload` at most, by default: a firmware image or a log, not a disk image.
pub const MAX_DEFAULT_MAX_UPLOAD: u64 = 1 << 30;

/// The default `--max-upload` for a machine with `mem_total` bytes of RAM: a quarter of it,
/// within [`MIN_DEFAULT_MAX_UPLOAD`]..=[`MAX_DEFAULT_MAX_UPLOAD`], because a router's /tmp
/// is RAM and an upload that fills it starves the box (the file system's own free space is
/// checked as well, per upload). Unknown RAM: 64 MiB.
pub fn default_max_upload(mem_total: Option<u64>) -> u64 {
    mem_total.map_or(64 << 20, |t| {
        (t / 4).clamp(MIN_DEFAULT_MAX_UPLOAD, MAX_DEFAULT_MAX_UPLOAD)
    })
}
/// `--transfer-timeout`: long enough for a phone that pauses, short enough that a stalled
/// upload's temporary file and slot are freed soon.
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);
/// `--header-timeout`: a phone on a poor link still sends a head within a second or two.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `--max-pending`.
pub const DEFAULT_MAX_PENDING: usize = 32;
/// `--keepalive-timeout`: how long a kept-alive HTTP connection may wait for its next request
/// (Apache's default): an idle connection holds a slot for nothing, and a browser simply
/// opens a new one.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// `--ping-interval`: under the idle timeouts of common proxies and NAT tables.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);

// ---- wire --------------------------------------------------------------------------------

/// Largest request head, bytes: far past any browser's or curl's, small enough that 32
/// unfinished requests hold a quarter of a megabyte.
pub const MAX_HEAD: usize = 8 << 10;
/// Most header fields in a request: a browser sends about 15.
pub const MAX_HEADERS: usize = 32;
/// Largest input message, and the cap on any incoming message or frame: a paste of a page
/// or two of text; tungstenite's own default (64 MiB) would be a whole router's memory.
pub const MAX_MESSAGE: usize = 64 << 10;
/// Bytes of output a `flow=1` client may have unacknowledged (SPEC 3).
pub const FLOW_WINDOW: u64 = 256 << 10;
/// Longest session id (SPEC 3).
pub const MAX_ID_LEN: usize = 64;
/// Largest output frame. A frame is written straight from the ring, so its size costs
/// nothing unless the socket takes only part of it (then the rest is copied aside); large
/// enough that a flood is a few thousand `writev`s a second, and a quarter of the flow window
/// so a `flow=1` client still has several frames in flight.
pub const CHUNK: usize = 64 << 10;
/// The longest header of a server-to-client frame (no mask): 2 bytes and a 64-bit length.
pub const MAX_HEADER: usize = 10;
/// tungstenite's read buffer, which it allocates eagerly per connection: 4 KiB holds many
/// keystroke frames, and bigger messages are assembled up to [`MAX_MESSAGE`] anyway.
pub const READ_BUFFER: usize = 4 << 10;
/// tungstenite's write buffer cap. It carries only text and control frames (output frames
/// bypass it), and a new one is handed over only once the last is on the socket.
pub const MAX_WRITE_BUFFER: usize = (32 << 10) + 4096;
/// Text messages a client may have queued (they are few: attached, role, exited, close);
/// past it a peer is hopelessly behind on control messages and is closed.
pub const OUTBOX_CAP: usize = 16;
/// Messages an echo socket (test builds) holds before it gives up on a peer that does not read.
#[cfg(feature = "echo")]
pub const ECHO_CAP: usize = 1024;
/// rustls's send buffer cap per connection: one full output frame and its record overhead,
/// so a frame goes into rustls in one piece.
#[cfg(feature = "tls")]
pub const TLS_SEND_LIMIT: usize = CHUNK + 4096;

// ---- fairness ----------------------------------------------------------------------------

/// Messages read from one WebSocket before the others get a turn: a client flooding pings or
/// control messages must not starve every other session.
pub const WS_READ_BUDGET: usize = 64;
/// Steps (a read, a parsed request, a write) taken for one HTTP connection before the others
/// get a turn: an endless pipeline must not starve every other session.
pub const HTTP_STEP_BUDGET: usize = 64;
/// Reads of 4 KiB dropped per call from a peer that broke the protocol (the linger timer
/// bounds the rest).
pub const DISCARD_READS: usize = 16;
/// Most output taken from one PTY in one pass, so a flood from one session cannot starve
/// the others; the session stays marked readable and the loop comes back at once.
pub const READ_PASS: usize = 1 << 20;
/// Output below this much in one read pass and the one before it is a trickle (keys, a
/// prompt, a line of a slow log) and goes out at once; more, in passes no more than
/// [`QUIET`] apart, is streaming and gathers (see `sessions::gather`).
pub const STREAMING: usize = 1 << 10;
/// While output streams, new output waits until this much gathered for one frame (or
/// [`GATHER_WINDOW`] passed): half a [`CHUNK`], so a flood goes out in a few dozen `writev`s
/// per MiB instead of one per PTY read (issue 20).
pub const GATHER: usize = 32 << 10;
/// The longest streaming output waits to gather a frame. mio's poll rounds a timeout up to
/// whole milliseconds, so this is the shortest wait the loop can keep.
pub const GATHER_WINDOW: Duration = Duration::from_millis(1);
/// Output more than this after the last is the first after a quiet moment, which never waits
/// (an echo, a prompt, a slow log's next line).
pub const QUIET: Duration = Duration::from_millis(2);
/// Passes (PTY -> ring -> clients) for one session in one turn before the others get theirs.
pub const SESSION_PASSES: usize = 64;
/// Rounds of servicing what a turn touched before the loop polls again (without sleeping).
pub const SETTLE_ROUNDS: usize = 8;

// ---- per-peer and per-session bounds -----------------------------------------------------

/// The default `--max-clients-per-address` is a quarter of `--max-clients`
/// ([`Limits::peer_share`]): one peer cannot hold more than that while others wait.
pub const PEER_SHARE_DIVISOR: usize = 4;
/// ... but at least this many (or all of `--max-clients` when it is smaller): a browser with
/// a dozen tabs reconnecting after a network change is one address.
pub const PEER_SHARE_MIN: usize = 32;
/// Connections accepted per loop turn. A backlog that filled while nobody accepted (during an
/// upgrade) holds many connections of one address; each batch reads its heads in this turn's
/// settle before the next is taken, so `--max-pending`'s eviction of the heaviest address
/// falls only on connections that really are slow. A browser opens about six at once.
pub const ACCEPT_BATCH: usize = 8;
/// Input waiting for the PTY, bytes. A client is not read while this much is queued, so a
/// program that stops reading its terminal pushes back on the client instead of growing memory.
pub const INPUT_CAP: usize = 64 << 10;
/// Failed logins allowed per address per [`FAILURE_WINDOW`] (SPEC 4).
pub const MAX_FAILURES: u32 = 10;
/// The failure window, and how long an address that used it up is refused (SPEC 4).
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses the failure limiter tracks at most; past it the stalest is forgotten first.
pub const MAX_TRACKED: usize = 4096;
/// Failed logins allowed from all addresses together per [`FAILURE_WINDOW`]: ten addresses'
/// worth, so a guesser with a thousand addresses still gets 100 guesses a minute, not
/// 10,000. Past it, only addresses that logged in within [`TRUST_KEEP`] are still heard.
pub const GLOBAL_FAILURES: u32 = 100;
/// How long an address that presented a right token keeps its own budget through a global
/// block: a day, so the operator's usual devices are known.
pub const TRUST_KEEP: Duration = Duration::from_secs(24 * 3600);
/// Addresses remembered as having logged in; past it the stalest is forgotten first.
pub const MAX_TRUSTED: usize = 64;
/// How long the id of a reaped or dropped session is remembered (SPEC 4: 24 h).
pub const TOMBSTONE_KEEP: Duration = Duration::from_secs(24 * 3600);
/// Most ids remembered; past it the oldest is forgotten first. 4096 drops a day is far past
/// any operator's; the list then holds about 0.9 MiB.
pub const MAX_TOMBSTONES: usize = 4096;
/// Clean replay points kept per session: enough that a replay starts near the ring's tail
/// whatever the output's shape.
pub const CHECKPOINTS: usize = 32;
/// Parameters kept per CSI sequence; xterm.js keeps 32 and ignores the rest the same way.
pub const MAX_CSI_PARAMS: usize = 32;
/// Stored window title, bytes. Longer titles are cut (at a UTF-8 boundary where possible).
pub const MAX_TITLE: usize = 256;
/// Longest path a `keepty send` offer may name, bytes (PATH_MAX); a longer one is ignored.
pub const MAX_OFFER_PATH: usize = 4096;

// ---- time --------------------------------------------------------------------------------

/// How long a closing connection may take to answer our close or finish its request.
pub const LINGER: Duration = Duration::from_secs(2);
/// How long a peer may take none of a response before it is dropped. A slow phone link still
/// makes progress and keeps extending this; a peer that stopped reading does not.
pub const WRITE_STALL: Duration = Duration::from_secs(60);
/// Ping ticks without a frame, or without output taken, after which a client is closed
/// (SPEC 3: 60 s at the default 20 s interval).
pub const TIMEOUT_TICKS: u8 = 3;
/// How long an upgrade waits for its clients to take the 1012 close before it executes
/// anyway: a close handshake on a live link takes a round trip; a dead link is not waited for.
pub const UPGRADE_DRAIN: Duration = Duration::from_millis(500);
/// How long after an upgrade a session keeps the output its writer had not been sent, as if
/// that writer were still attached: the page reconnects within a second or two; past this,
/// a writer that is not coming back must not stall its program forever.
pub const UPGRADE_HOLD: Duration = Duration::from_secs(15);
/// From SIGHUP to SIGKILL when a session is torn down (SPEC 1 and 4).
pub const KILL_AFTER: Duration = Duration::from_secs(3);
/// How long after SIGKILL the server waits for the last children before it exits anyway.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How long to wait before retrying `accept` after running out of file descriptors.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(500);

// ---- memory charges ----------------------------------------------------------------------

/// Memory charged per HTTP connection (one that has not upgraded): its request head and its
/// structs. Response bodies are the embedded files (static) or small JSON built and freed per
/// request. Charging the WebSocket's buffers only at the upgrade keeps unfinished requests (a
/// slowloris) from eating a small cap: 32 pending connections hold about 0.3 MiB, not 8 MiB.
pub const HTTP_RESERVE: usize = MAX_HEAD + 2048;
/// Memory charged per WebSocket connection, the most its buffers can hold: tungstenite's
/// read buffer, a partial frame and an assembled message, its write buffer cap, the tail of a
/// part-written output frame, a request head, and the connection's own structs.
pub const WS_RESERVE: usize =
    READ_BUFFER + 2 * MAX_MESSAGE + MAX_WRITE_BUFFER + MAX_HEADER + CHUNK + MAX_HEAD + 2048;
/// Memory a TLS connection holds beyond a plain one: the send buffer, rustls's
/// received-plaintext cap (16 KiB), its record buffer (a record is at most about 18 KiB; a
/// handshake message up to 64 KiB) and its own state.
#[cfg(feature = "tls")]
pub const TLS_RESERVE: usize = TLS_SEND_LIMIT + (16 << 10) + (64 << 10) + (8 << 10);
/// A file transfer's buffer, bytes: what one read from the socket (upload) or the file
/// (download) may hold before it is written on. 64 KiB is a TCP window's worth: larger buys
/// no speed on loopback and costs a router's memory per transfer.
pub const TRANSFER_BUF: usize = 64 << 10;
/// Bytes one transfer moves before the others get a turn: four buffers, so a 50 MB upload
/// takes a few hundred turns and another session's echo waits at most a millisecond or so.
pub const TRANSFER_PASS: usize = 4 * TRANSFER_BUF;
/// Memory charged per file transfer on top of its HTTP connection: the buffer and the
/// helper's messages.
pub const TRANSFER_RESERVE: usize = TRANSFER_BUF + 4096;
/// How long a download ticket is valid (the page follows it at once).
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// Tickets kept at most: past it the oldest is forgotten first.
pub const MAX_TICKETS: usize = 256;
/// Memory a session's input queue holds at most: the cap, plus the one message that may
/// arrive while the queue is just under it.
pub const INPUT_RESERVE: usize = INPUT_CAP + MAX_MESSAGE;
/// Bytes charged per tombstone: the id twice (map and queue), its owner's name (a user name
/// is at most as long as an id) and the entries around it.
pub const TOMBSTONE_RESERVE: usize = 3 * MAX_ID_LEN + 120;

/// What happens to output while nobody is attached and the ring is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetachedOutput {
    /// Overwrite the oldest output; a returning client learns how much was `lost`.
    DropOldest,
    /// Stop reading the PTY: the program blocks, nothing is lost.
    Block,
}

/// The operator's caps, from the command line ([`crate::config::Config::limits`]).
#[derive(Clone, Debug)]
pub struct Limits {
    /// `--max-sessions`: sessions alive at once, all users together.
    pub max_sessions: usize,
    /// `--max-clients`: WebSockets and connections serving a request (kept-alive idle ones
    /// and unfinished requests have budgets of their own).
    pub max_clients: usize,
    /// `--max-pending`: connections still sending their first request head.
    pub max_pending: usize,
    /// `--max-memory`: the cap every [`Charge`] is admitted against, bytes.
    pub max_memory: usize,
    /// `--scrollback`: each session's ring, bytes.
    pub scrollback: usize,
    /// `--ttl`: idle time after which a detached session is reaped.
    pub ttl: Duration,
    /// `--header-timeout`: total time for a request head.
    pub header_timeout: Duration,
    /// `--keepalive-timeout`: how long a kept-alive connection may wait for its next request.
    pub keepalive_timeout: Duration,
    /// `--max-clients-per-address`, if given; else [`Limits::peer_share`] derives it.
    pub max_per_address: Option<usize>,
    /// `--ping-interval`: the liveness tick of every WebSocket.
    pub ping_interval: Duration,
    /// `--detached-output`: whether a full ring with nobody attached blocks the program.
    pub detached_output: DetachedOutput,
    /// `--max-upload`: the largest file an upload may write, bytes.
    pub max_upload: u64,
    /// `--transfer-timeout`: how long a file transfer may make no progress.
    pub transfer_timeout: Duration,
    /// What each connection holds beyond its HTTP or WebSocket buffers (rustls's, with TLS).
    pub conn_overhead: usize,
}

/// What exists now, as far as memory is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sessions (each a ring and an input queue).
    pub sessions: usize,
    /// Connections that have not upgraded.
    pub http: usize,
    /// WebSocket connections.
    pub ws: usize,
    /// Remembered ids.
    pub tombstones: usize,
    /// File transfers in flight (each also an HTTP connection).
    pub transfers: usize,
}

/// Something about to be created, to be admitted against `--max-memory` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    /// A new connection (charged as HTTP until it upgrades).
    Connection,
    /// An HTTP connection becoming a WebSocket.
    Upgrade,
    /// A new session.
    Session,
    /// An HTTP connection starting a file transfer.
    Transfer,
}

/// `--max-memory` would be exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverBudget;

impl Limits {
    /// How many of `--max-clients` one address (an IPv6 /64) may hold at once:
    /// `--max-clients-per-address`, else a quarter of `--max-clients` but at least
    /// [`PEER_SHARE_MIN`], never more than `--max-clients`.
    pub fn peer_share(&self) -> usize {
        self.max_per_address
            .unwrap_or((self.max_clients / PEER_SHARE_DIVISOR).max(PEER_SHARE_MIN))
            .min(self.max_clients)
    }

    /// How long a kept-alive connection waits for its next request head: the keep-alive
    /// timeout, or the head timeout when that is shorter.
    pub fn next_head_timeout(&self) -> Duration {
        self.keepalive_timeout.min(self.header_timeout)
    }

    /// How many connections may be kept alive between requests: as many as `--max-clients`,
    /// in a budget of their own, so idle ones never keep out a request or a WebSocket.
    pub fn max_idle(&self) -> usize {
        self.max_clients
    }

    /// Memory charged per session: its ring in full and its input queue at the most it holds.
    pub fn session_reserve(&self) -> usize {
        self.scrollback + INPUT_RESERVE
    }

    /// Memory reserved by what `u` counts.
    pub fn reserved(&self, u: Usage) -> usize {
        u.sessions * self.session_reserve()
            + u.ws * WS_RESERVE
            + u.http * HTTP_RESERVE
            + (u.http + u.ws) * self.conn_overhead
            + u.tombstones * TOMBSTONE_RESERVE
            + u.transfers * TRANSFER_RESERVE
    }

    /// Whether `charge` fits under `--max-memory` on top of `u`.
    pub fn admit(&self, u: Usage, charge: Charge) -> Result<(), OverBudget> {
        let after = match charge {
            Charge::Connection => Usage {
                http: u.http + 1,
                ..u
            },
            Charge::Session => Usage {
                sessions: u.sessions + 1,
                ..u
            },
            Charge::Transfer => Usage {
                transfers: u.transfers + 1,
                ..u
            },
            Charge::Upgrade => Usage {
                http: u.http.saturating_sub(1),
                ws: u.ws + 1,
                ..u
            },
        };
        if self.reserved(after) <= self.max_memory {
            Ok(())
        } else {
            Err(OverBudget)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_memory: usize) -> Limits {
        let cfg = crate::config::Config {
            max_memory,
            scrollback: 256 << 10,
            ..Default::default()
        };
        cfg.limits(false)
    }

    #[test]
    fn charges_add_up() {
        let l = limits(64 << 20);
        let u = Usage {
            sessions: 2,
            http: 3,
            ws: 1,
            tombstones: 10,
            transfers: 2,
        };
        assert_eq!(
            l.reserved(u),
            2 * ((256 << 10) + INPUT_RESERVE)
                + 3 * HTTP_RESERVE
                + WS_RESERVE
                + 10 * TOMBSTONE_RESERVE
                + 2 * TRANSFER_RESERVE
        );
        // A transfer is charged its buffer on top of its connection, exactly at the cap.
        let room = l.reserved(u) + TRANSFER_RESERVE;
        assert_eq!(limits(room).admit(u, Charge::Transfer), Ok(()));
        assert_eq!(limits(room - 1).admit(u, Charge::Transfer), Err(OverBudget));
    }

    #[test]
    fn admit_is_exact_at_the_cap() {
        let session = (256 << 10) + INPUT_RESERVE;
        let l = limits(session + HTTP_RESERVE);
        let one_conn = Usage {
            http: 1,
            ..Usage::default()
        };
        assert_eq!(l.admit(one_conn, Charge::Session), Ok(()));
        let full = Usage {
            sessions: 1,
            ..one_conn
        };
        assert_eq!(l.admit(full, Charge::Session), Err(OverBudget));
        assert_eq!(l.admit(full, Charge::Connection), Err(OverBudget));
        // An upgrade replaces the HTTP charge with the larger WebSocket one.
        assert_eq!(l.admit(full, Charge::Upgrade), Err(OverBudget));
        let l = limits(WS_RESERVE);
        assert_eq!(l.admit(one_conn, Charge::Upgrade), Ok(()));
    }

    #[test]
    fn the_default_cap_follows_the_machine() {
        // A 32 MiB router, a 64 MiB one, a 512 MiB Pi, a 16 MiB box, and no /proc/meminfo.
        assert_eq!(default_max_memory(Some(27 << 20)), (27 << 20) / 4);
        assert_eq!(default_max_memory(Some(60 << 20)), 15 << 20);
        assert_eq!(default_max_memory(Some(512 << 20)), 64 << 20);
        assert_eq!(default_max_memory(Some(8 << 20)), 4 << 20);
        assert_eq!(default_max_memory(None), 64 << 20);
        // The floor holds six default sessions with a client each.
        let l = limits(MIN_DEFAULT_MAX_MEMORY);
        let six = Usage {
            sessions: 5,
            ws: 6,
            ..Usage::default()
        };
        assert_eq!(l.admit(six, Charge::Session), Ok(()));
    }

    #[test]
    fn the_default_upload_cap_follows_the_machine() {
        assert_eq!(default_max_upload(Some(27 << 20)), (27 << 20) / 4);
        assert_eq!(default_max_upload(Some(2 << 20)), 1 << 20, "at least 1M");
        assert_eq!(default_max_upload(Some(16 << 30)), 1 << 30, "at most 1G");
        assert_eq!(default_max_upload(None), 64 << 20);
    }

    #[test]
    fn peer_share_defaults_and_bounds() {
        let with = |max_clients, max_per_address| {
            crate::config::Config {
                max_clients,
                max_per_address,
                ..Default::default()
            }
            .limits(false)
            .peer_share()
        };
        assert_eq!(with(128, None), 32);
        assert_eq!(with(400, None), 100);
        assert_eq!(with(8, None), 8, "never more than --max-clients");
        assert_eq!(with(128, Some(5)), 5);
        assert_eq!(with(128, Some(500)), 128);
    }

    #[test]
    fn websocket_charge_covers_its_buffers() {
        // A slowloris costs the head buffer only; a WebSocket many times more.
        const { assert!(WS_RESERVE > 4 * HTTP_RESERVE) };
        const { assert!(CHUNK as u64 * 4 <= FLOW_WINDOW) };
    }
}
