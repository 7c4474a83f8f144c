//! What the admin surface shows: serializable snapshots of sessions, limits and memory.

use serde::Serialize;

/// One row of the session list (SPEC section 2). Times are Unix seconds.
#[derive(Debug, Serialize)]
pub struct SessionRecord {
    /// Session id.
    pub id: String,
    /// The user that created it.
    pub owner: String,
    /// Child pid.
    pub pid: i32,
    /// `running` or `exited`.
    pub state: String,
    /// Exit code once exited normally.
    pub exit_code: Option<i32>,
    /// Creation time.
    pub created_at: u64,
    /// Last client activity.
    pub last_seen: u64,
    /// Seconds since `last_seen`.
    pub idle_secs: u64,
    /// Seconds until the TTL reaps it (0 when due).
    pub expires_in_secs: u64,
    /// Output held in the ring.
    pub bytes_buffered: u64,
    /// Output ever produced.
    pub bytes_total: u64,
    /// Attached clients.
    pub clients: usize,
    /// Peer address of the client whose input reaches the PTY, if any.
    pub active_client: Option<String>,
    /// Terminal columns.
    pub cols: u16,
    /// Terminal rows.
    pub rows: u16,
}

/// The configured caps, as shown to operators.
#[derive(Debug, Serialize)]
pub struct Limits {
    /// `--max-sessions`.
    pub max_sessions: usize,
    /// `--max-clients`.
    pub max_clients: usize,
    /// `--max-memory`, bytes.
    pub max_memory: usize,
    /// `--scrollback`, bytes.
    pub scrollback: usize,
    /// `--ttl`, seconds.
    pub ttl_secs: u64,
    /// `--attach-policy`.
    pub attach_policy: &'static str,
    /// `--detached-output`.
    pub detached_output: &'static str,
}

/// Memory reserved against the cap.
#[derive(Debug, Serialize)]
pub struct Memory {
    /// Bytes reserved now.
    pub reserved: usize,
    /// `--max-memory`.
    pub cap: usize,
}

/// The `/admin/sessions` answer.
#[derive(Debug, Serialize)]
pub struct SessionList {
    /// Unix seconds.
    pub now: u64,
    /// Every session.
    pub sessions: Vec<SessionRecord>,
    /// Configured caps.
    pub limits: Limits,
    /// Memory against the cap.
    pub memory: Memory,
}
