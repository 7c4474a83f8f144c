//! The SPEC's WebSocket protocol: the `/ws` query, the JSON messages both ways, every close
//! code in one table, and the map from an error code to its close code.

use serde::{Deserialize, Serialize};

use crate::limits::MAX_ID_LEN;

/// Defines the close codes as constants and lists them all in [`CLOSE_CODES`], so the list
/// cannot miss one.
macro_rules! close_codes {
    ($($(#[doc = $doc:literal])+ $name:ident = $code:literal;)+) => {
        $($(#[doc = $doc])+ pub const $name: u16 = $code;)+

        /// Every close code the server may send, with its constant's name.
        pub const CLOSE_CODES: &[(u16, &str)] = &[$(($code, stringify!($name))),+];
    };
}

// The one table of WebSocket close codes: RFC 6455's (1000-1015) and ours (4000-4999, the
// range for applications; 44xx/45xx echo the HTTP status of the same refusal).
close_codes! {
    /// After `exited`, and a close without a code.
    CLOSE_NORMAL = 1000;
    /// After `shutdown`, and for a client that stopped answering pings or taking output.
    CLOSE_GOING_AWAY = 1001;
    /// A frame that breaks the WebSocket protocol.
    CLOSE_PROTOCOL = 1002;
    /// A text frame that is not UTF-8.
    CLOSE_INVALID_PAYLOAD = 1007;
    /// The echo socket of a test build gave up on a peer that does not read.
    CLOSE_POLICY = 1008;
    /// A message over the size limit.
    CLOSE_TOO_BIG = 1009;
    /// A server-side failure (the command could not start, too many queued messages).
    CLOSE_INTERNAL = 1011;
    /// The server is restarting in place (an upgrade) and its sessions survive: reconnect
    /// with `since` after a short delay.
    CLOSE_RESTART = 1012;
    /// After `dropped`: an admin ended the session while the client was attached.
    CLOSE_DROPPED = 4000;
    /// Error `bad_request`: a malformed query or message.
    CLOSE_BAD_REQUEST = 4400;
    /// Error `forbidden`: a refused origin (another user's session answers `not_found`).
    CLOSE_FORBIDDEN = 4403;
    /// The session is gone: after `expired` while attached, and the errors `not_found`,
    /// `expired` and `dropped` on attach.
    CLOSE_EXPIRED = 4404;
    /// Error `attached_elsewhere`: the `reject` policy and the session has a client.
    CLOSE_ATTACHED_ELSEWHERE = 4409;
    /// After `taken_over`: another client took the session.
    CLOSE_TAKEN_OVER = 4410;
    /// Error `limit`: a session or connection limit.
    CLOSE_LIMIT = 4429;
    /// Error `memory`: the memory cap.
    CLOSE_MEMORY = 4503;
}

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
            ErrorCode::NotFound | ErrorCode::Expired | ErrorCode::Dropped => CLOSE_EXPIRED,
            ErrorCode::Forbidden => CLOSE_FORBIDDEN,
            ErrorCode::AttachedElsewhere => CLOSE_ATTACHED_ELSEWHERE,
            ErrorCode::Limit => CLOSE_LIMIT,
            ErrorCode::Memory => CLOSE_MEMORY,
            ErrorCode::BadRequest => CLOSE_BAD_REQUEST,
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
    crate::base64::url(bytes)
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
    /// The server is upgrading in place: reconnect with `since` (close 1012).
    Restarting,
    /// The session's TTL passed.
    Expired,
    /// Extension (issue 19): a program in the session ran `keepty send`; the page offers the
    /// file for download (through the file routes, which check everything again).
    Offer {
        /// Absolute path on the box.
        path: &'a str,
        /// Its size when offered, bytes.
        size: u64,
    },
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
            crate::api::text::escape_control(&e.to_string())
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
        assert_eq!(ErrorCode::Memory.close_code(), 4503);
    }

    #[test]
    fn close_code_table() {
        for (i, (code, name)) in CLOSE_CODES.iter().enumerate() {
            assert!(
                (1000..=1015).contains(code) || (4000..=4999).contains(code),
                "{name} {code} is neither RFC 6455's nor an application's"
            );
            for (other, other_name) in &CLOSE_CODES[i + 1..] {
                assert_ne!(code, other, "{name} and {other_name}");
            }
        }
        assert!(CLOSE_CODES.contains(&(1012, "CLOSE_RESTART")));
    }
}
