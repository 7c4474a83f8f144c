//! The SPEC's WebSocket protocol: the `/ws` query, the JSON messages both ways, and the one
//! table that maps an error code to its close code.

use serde::{Deserialize, Serialize};

/// Close code after `exited`.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code after `shutdown`.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a frame that breaks the WebSocket protocol.
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Close code for a message over the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code for a server-side failure (e.g. the command could not start).
pub const CLOSE_INTERNAL: u16 = 1011;
/// Close code after `dropped`.
pub const CLOSE_DROPPED: u16 = 4000;
/// Close code after `taken_over`.
pub const CLOSE_TAKEN_OVER: u16 = 4410;
/// Close code after `expired` (the session was reaped while attached... or on reconnect).
pub const CLOSE_EXPIRED: u16 = 4404;

/// Bytes of output a `flow=1` client may have unacknowledged.
pub const FLOW_WINDOW: u64 = 256 << 10;
/// Largest input message, and the cap on any incoming message.
pub const MAX_MESSAGE: usize = 64 << 10;

/// An error a client is told about in an `error` message before the socket closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// No such session and `new=1` not given.
    NotFound,
    /// The session was reaped on its TTL.
    Expired,
    /// The session was dropped by an admin.
    Dropped,
    /// Another user's session, or a refused origin.
    Forbidden,
    /// `reject` policy and the session already has a client.
    AttachedElsewhere,
    /// A session or connection limit.
    Limit,
    /// The memory cap.
    Memory,
    /// A malformed query or message.
    BadRequest,
    /// The server could not do what was asked (e.g. the command failed to start).
    Internal,
}

impl ErrorCode {
    /// The `code` string in the message.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::Expired => "expired",
            ErrorCode::Dropped => "dropped",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::AttachedElsewhere => "attached_elsewhere",
            ErrorCode::Limit => "limit",
            ErrorCode::Memory => "memory",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Internal => "internal",
        }
    }

    /// The WebSocket close code that follows the message.
    pub fn close_code(self) -> u16 {
        match self {
            ErrorCode::NotFound | ErrorCode::Expired | ErrorCode::Dropped => 4404,
            ErrorCode::Forbidden => 4403,
            ErrorCode::AttachedElsewhere => 4409,
            ErrorCode::Limit => 4429,
            ErrorCode::Memory => 4503,
            ErrorCode::BadRequest => 4400,
            ErrorCode::Internal => CLOSE_INTERNAL,
        }
    }
}

/// An error with its human text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtoError {
    /// What went wrong, as a code.
    pub code: ErrorCode,
    /// For humans.
    pub message: String,
}

impl ProtoError {
    /// Shorthand.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ProtoError {
        ProtoError {
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> ProtoError {
        ProtoError::new(ErrorCode::BadRequest, message)
    }
}

/// The `/ws` query, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WsParams {
    /// Session id; `None` with `new` means the server picks one.
    pub session: Option<String>,
    /// Create the session if it does not exist.
    pub new: bool,
    /// The output offset the client already has.
    pub since: Option<u64>,
    /// Initial columns.
    pub cols: Option<u16>,
    /// Initial rows.
    pub rows: Option<u16>,
    /// The client acknowledges output.
    pub flow: bool,
}

/// Longest session id.
pub const MAX_ID_LEN: usize = 64;

/// True if `id` is a valid session id: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A server-made session id: 16 random bytes as 22 characters of unpadded base64url.
pub fn encode_id(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Terminal sizes accepted from clients.
pub fn valid_dim(n: u16) -> bool {
    (1..=1000).contains(&n)
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ProtoError> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(ProtoError::bad(format!("{key} must be 1 or 0"))),
    }
}

fn parse_dim(key: &str, v: &str) -> Result<u16, ProtoError> {
    v.parse::<u16>()
        .ok()
        .filter(|n| valid_dim(*n))
        .ok_or_else(|| ProtoError::bad(format!("{key} must be 1..=1000")))
}

/// Parses the query string of a `/ws` request (without the `?`).
pub fn parse_ws_query(query: &str) -> Result<WsParams, ProtoError> {
    let mut p = WsParams::default();
    let mut seen = [false; 6];
    for pair in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match k {
            "session" => 0,
            "new" => 1,
            "since" => 2,
            "cols" => 3,
            "rows" => 4,
            "flow" => 5,
            _ => continue, // unknown parameters are ignored, for forward compatibility
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(ProtoError::bad(format!("parameter {k} given twice")));
        }
        match slot {
            0 => {
                if !valid_id(v) {
                    return Err(ProtoError::bad(
                        "session id must be 1-64 characters of A-Z a-z 0-9 _ -",
                    ));
                }
                p.session = Some(v.to_string());
            }
            1 => p.new = parse_bool(k, v)?,
            2 => {
                p.since =
                    Some(v.parse::<u64>().map_err(|_| {
                        ProtoError::bad("since must be a non-negative integer offset")
                    })?)
            }
            3 => p.cols = Some(parse_dim(k, v)?),
            4 => p.rows = Some(parse_dim(k, v)?),
            _ => p.flow = parse_bool(k, v)?,
        }
    }
    if p.session.is_none() && !p.new {
        return Err(ProtoError::bad("session is required unless new=1"));
    }
    Ok(p)
}

/// A role in a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Input and resizes reach the PTY.
    Writer,
    /// Read-only.
    Viewer,
}

/// Server-to-client text messages.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    /// The client is attached; binary frames from `offset` follow.
    Attached {
        /// Session id.
        session: &'a str,
        /// True if this attach created the session.
        created: bool,
        /// Where the following output starts.
        offset: u64,
        /// Bytes the client will never see.
        lost: u64,
        /// The client's role.
        role: Role,
        /// The server's attach policy.
        policy: &'a str,
        /// PTY columns.
        cols: u16,
        /// PTY rows.
        rows: u16,
        /// Extension: the output end at attach time; bytes before it are replay, which the
        /// page must not let turn into input.
        end: u64,
        /// Escapes that put a blank terminal into the session's modes.
        #[serde(skip_serializing_if = "Option::is_none")]
        restore: Option<&'a str>,
    },
    /// A lagging viewer skipped ahead.
    Gap {
        /// New position.
        offset: u64,
        /// Bytes skipped.
        lost: u64,
    },
    /// The client's role changed.
    Role {
        /// The new role.
        role: Role,
    },
    /// The process ended; all output has been sent.
    Exited {
        /// Exit code, if it exited normally.
        code: Option<i32>,
        /// Signal number, if it was killed.
        signal: Option<i32>,
    },
    /// Another client took the session.
    TakenOver,
    /// An admin dropped the session.
    Dropped,
    /// The server is shutting down.
    Shutdown,
    /// The session's TTL passed.
    Expired,
    /// A request failed; the socket closes with the code's close code.
    Error {
        /// Error code.
        code: &'a str,
        /// Human text.
        message: &'a str,
    },
}

impl ServerMsg<'_> {
    /// The message as a JSON text frame payload.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs to a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Client-to-server text messages.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Resize the PTY.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// The client has received everything before `offset`.
    Ack {
        /// Output offset.
        offset: u64,
    },
    /// Become the writer (multi policy).
    TakeControl,
    /// A message type this server does not know: ignored, for forward compatibility.
    #[serde(other)]
    Unknown,
}

/// Parses a client text frame.
pub fn parse_client_msg(text: &str) -> Result<ClientMsg, ProtoError> {
    let msg: ClientMsg = serde_json::from_str(text).map_err(|e| {
        // serde quotes the peer's own text (an unknown field, say): never reflect raw
        // control bytes.
        ProtoError::bad(format!(
            "bad message: {}",
            crate::api::admin::escape_control(&e.to_string())
        ))
    })?;
    if let ClientMsg::Resize { cols, rows } = msg
        && !(valid_dim(cols) && valid_dim(rows))
    {
        return Err(ProtoError::bad("cols and rows must be 1..=1000"));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_id("abc-DEF_123"));
        assert!(valid_id(&"a".repeat(64)));
        assert!(!valid_id(&"a".repeat(65)));
        assert!(!valid_id(""));
        assert!(!valid_id("a b"));
        assert!(!valid_id("a%20"));
        assert!(!valid_id("é"));
    }

    #[test]
    fn server_ids() {
        let id = encode_id(&[0xff; 16]);
        assert_eq!(id.len(), 22);
        assert!(valid_id(&id));
        assert_eq!(encode_id(&[0; 16]), "A".repeat(22));
        // RFC 4648 test vector "foobar" padded to 16 bytes with zeros, checked by prefix.
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(b"foobar");
        assert!(encode_id(&b).starts_with("Zm9vYmFy"));
    }

    #[test]
    fn query() {
        let p = parse_ws_query("session=abc&since=10&cols=80&rows=24&flow=1&x=y").unwrap();
        assert_eq!(p.session.as_deref(), Some("abc"));
        assert_eq!(p.since, Some(10));
        assert_eq!((p.cols, p.rows), (Some(80), Some(24)));
        assert!(p.flow && !p.new);
        let p = parse_ws_query("new=1").unwrap();
        assert!(p.new && p.session.is_none());
    }

    #[test]
    fn query_errors() {
        for q in [
            "",
            "new=0",
            "session=a&session=b",
            "session=a&new=1&new=1",
            "session=a b",
            "session=a&since=-1",
            "session=a&since=x",
            "session=a&cols=0",
            "session=a&rows=1001",
            "session=a&flow=yes",
            "session=",
        ] {
            let e = parse_ws_query(q).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{q}");
        }
    }

    #[test]
    fn messages_out() {
        let m = ServerMsg::Attached {
            session: "s",
            created: true,
            offset: 0,
            lost: 0,
            role: Role::Writer,
            policy: "handoff",
            cols: 80,
            rows: 24,
            end: 0,
            restore: None,
        };
        let j = m.to_json();
        assert!(j.starts_with(r#"{"type":"attached","session":"s""#), "{j}");
        assert!(!j.contains("restore"));
        assert_eq!(ServerMsg::TakenOver.to_json(), r#"{"type":"taken_over"}"#);
        assert_eq!(
            ServerMsg::Exited {
                code: Some(7),
                signal: None
            }
            .to_json(),
            r#"{"type":"exited","code":7,"signal":null}"#
        );
    }

    #[test]
    fn messages_in() {
        assert_eq!(
            parse_client_msg(r#"{"type":"resize","cols":100,"rows":30}"#),
            Ok(ClientMsg::Resize {
                cols: 100,
                rows: 30
            })
        );
        assert_eq!(
            parse_client_msg(r#"{"type":"ack","offset":5}"#),
            Ok(ClientMsg::Ack { offset: 5 })
        );
        assert_eq!(
            parse_client_msg(r#"{"type":"whatever","x":1}"#),
            Ok(ClientMsg::Unknown)
        );
        assert!(parse_client_msg(r#"{"type":"resize","cols":0,"rows":30}"#).is_err());
        assert!(parse_client_msg("not json").is_err());
        assert!(parse_client_msg(r#"{"type":"ack"}"#).is_err());
    }

    #[test]
    fn close_codes() {
        assert_eq!(ErrorCode::NotFound.close_code(), 4404);
        assert_eq!(ErrorCode::BadRequest.close_code(), 4400);
        assert_eq!(ErrorCode::AttachedElsewhere.close_code(), 4409);
    }
}
