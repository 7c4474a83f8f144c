//! What a request gets, decided without touching the session table: either a finished
//! response, or an [`Action`] value that the event loop carries out (a drop goes through its
//! teardown, a list is built from its tables). Admission is asked of the [`Gate`] in the
//! order each route needs.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Instant;

use crate::access::gate::{Caller, Gate};
use crate::api::assets;
use crate::api::protocol::{self, ProtoError, WsParams};
use crate::files::wire::{self, FileError};
use crate::net::conn::After;
use crate::net::http::{self, FileRoute, Request, Response, Route};

/// What an upgraded connection becomes.
pub enum Upgrade {
    /// A client of a session, per its query.
    Session(Result<WsParams, ProtoError>, Caller),
    /// The conformance-test echo socket (test builds only).
    #[cfg(feature = "echo")]
    Echo,
}

/// Which view of the session list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// `/api/sessions`: the caller's own, without the operator's limits and memory.
    Own,
    /// `/admin/sessions`: JSON.
    Json,
    /// `/admin/sessions?format=text`: the aligned table.
    Text,
    /// `/admin/metrics`: Prometheus text.
    Metrics,
}

/// What the loop does for a request.
pub enum Action {
    /// Send this; then do what `After` says.
    Respond(Response, After<Upgrade>),
    /// A list of sessions: all, or `owner`'s only.
    List {
        /// Whose sessions; `None` for every session.
        owner: Option<String>,
        /// How it is shown.
        view: View,
    },
    /// Drop the session with this (valid) id.
    Drop(String),
    /// Drop every session, if `confirm` equals their count.
    DropAll(usize),
    /// Upgrade in place, if the binary on disk reads our state.
    Upgrade,
    /// A file route: the loop checks the session and starts the transfer.
    Files(FileAsk),
}

/// A file request, its caller admitted and its parameters checked.
#[derive(Debug)]
pub enum FileAsk {
    /// One of a session's file routes.
    Session {
        /// The session id as given (checked against the table by the loop).
        id: String,
        /// Who asks (the owner check is the loop's).
        caller: Caller,
        /// What is asked.
        what: FileWhat,
    },
    /// A download by ticket (the ticket is the credential).
    Ticket {
        /// The ticket, never logged.
        ticket: String,
        /// HEAD: the headers only.
        head_only: bool,
    },
}

/// What a session's file route asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum FileWhat {
    /// The session's directory.
    Cwd,
    /// A file's bytes (`head_only` for HEAD).
    Download {
        /// As given: relative to the session's directory, or absolute.
        path: String,
        /// HEAD: the headers only.
        head_only: bool,
    },
    /// A body to write to `path`.
    Upload {
        /// As given.
        path: String,
        /// Replace an existing file.
        overwrite: bool,
        /// The body's `Content-Length`.
        length: u64,
    },
    /// A single-use download link for `path`.
    Ticket {
        /// As given.
        path: String,
    },
}

/// A request refused by a route (admission refusals are the gate's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    /// No route for the path.
    NotFound,
    /// The path takes only these methods.
    MethodNotAllowed(&'static str),
    /// `/ws` without `Upgrade: websocket`.
    NotUpgrade,
    /// A WebSocket version other than 13.
    WsVersion,
    /// A missing, repeated or malformed `Sec-WebSocket-Key`.
    WsKey,
    /// The upgrade would pass `--max-memory`.
    Memory,
    /// `--max-clients` connections are past their first request.
    TooManyClients,
    /// `/admin/drop` without a valid id.
    BadId,
    /// The id names no session.
    NoSession,
    /// `/admin/drop-all` without `confirm=N`.
    ConfirmRequired,
    /// `confirm` is not the session count.
    ConfirmMismatch {
        /// What was sent.
        confirm: usize,
        /// The count now.
        count: usize,
    },
    /// The admin page is not in this build.
    NoAdminPage,
}

impl Reject {
    /// The one place each refusal's status, code and message are written.
    pub fn response(&self) -> Response {
        match self {
            Reject::NotFound => Response::error(404, "not_found", "no such page"),
            Reject::MethodNotAllowed(allow) => {
                let mut r = Response::error(405, "method_not_allowed", "method not allowed here");
                r.headers.push(("Allow", Cow::Borrowed(allow)));
                r
            }
            Reject::NotUpgrade => {
                Response::error(400, "bad_request", "expected a WebSocket upgrade")
            }
            Reject::WsVersion => {
                let mut r = Response::error(426, "bad_request", "WebSocket version 13 required");
                r.headers
                    .push(("Sec-WebSocket-Version", Cow::Borrowed("13")));
                r
            }
            Reject::WsKey => Response::error(
                400,
                "bad_request",
                "one Sec-WebSocket-Key of 16 bytes in base64 required",
            ),
            Reject::Memory => Response::error(503, "memory", "memory cap reached"),
            Reject::TooManyClients => Response::error(429, "limit", "too many connections"),
            Reject::BadId => Response::error(400, "bad_request", "id must be a valid session id"),
            Reject::NoSession => Response::error(404, "not_found", "no such session"),
            Reject::ConfirmRequired => Response::error(
                400,
                "bad_request",
                "confirm=N is required, N being the current session count",
            ),
            Reject::ConfirmMismatch { confirm, count } => Response::error(
                409,
                "confirm_mismatch",
                &format!("confirm={confirm} but the session count is {count}; nothing dropped"),
            ),
            Reject::NoAdminPage => {
                Response::error(404, "not_found", "the admin page is not built in")
            }
        }
    }
}

/// What the loop knows that routing needs, read-only.
pub struct Context {
    /// Whether a WebSocket's buffers fit under `--max-memory` now.
    pub upgrade_fits: bool,
    /// `--max-upload`.
    pub max_upload: u64,
}

/// Decides what `req` from `peer` gets. Host is judged before anything else.
pub fn route(
    req: &Request,
    peer: SocketAddr,
    now: Instant,
    gate: &mut Gate,
    cx: &Context,
) -> Action {
    if let Err(r) = gate.host(req) {
        eprintln!("keepty: refused request from {peer}: Host not allowed");
        return Action::Respond(r.response(), After::Close);
    }
    let keep = |r: Response| Action::Respond(r, After::KeepAlive);
    match http::route(req) {
        Route::Asset(a) => keep(Response::asset(req, a)),
        Route::Health => keep(Response::new(
            200,
            "text/plain; charset=utf-8",
            &b"ok\n"[..],
        )),
        Route::NotFound => keep(Reject::NotFound.response()),
        Route::MethodNotAllowed(allow) => keep(Reject::MethodNotAllowed(allow).response()),
        // The same handshake checks as /ws, but no token and no session: a test build's
        // Autobahn run exercises the frame path.
        #[cfg(feature = "echo")]
        Route::Echo => handshake(req, gate, cx, |_| Upgrade::Echo),
        Route::WebSocket => match gate.user(req, peer, now) {
            Ok(caller) => handshake(req, gate, cx, |req| {
                Upgrade::Session(protocol::parse_ws_query(&req.query), caller)
            }),
            Err(r) => Action::Respond(r.response(), After::Close),
        },
        // Which user a token is, so the page can say whose token a `#token=` link carries
        // before it replaces the stored one (extension).
        Route::ApiWhoami => match gate.user(req, peer, now) {
            Ok(caller) => keep(Response::json(
                200,
                &serde_json::json!({ "user": caller.name }),
            )),
            Err(r) => keep(r.response()),
        },
        Route::ApiSessions => match gate.user(req, peer, now) {
            Ok(caller) => Action::List {
                owner: Some(caller.name),
                view: View::Own,
            },
            Err(r) => keep(r.response()),
        },
        Route::SessionFiles(id, what) => {
            let side_effect =
                what == FileRoute::Ticket || req.method == "PUT" || req.method == "POST";
            match gate.user_acting(req, side_effect, peer, now) {
                Ok(caller) => match file_what(req, what, cx.max_upload) {
                    Ok(what) => Action::Files(FileAsk::Session { id, caller, what }),
                    Err(e) => keep(e.response()),
                },
                Err(r) => keep(r.response()),
            }
        }
        Route::TicketDownload(ticket) => match gate.origin(req) {
            Ok(()) => Action::Files(FileAsk::Ticket {
                ticket,
                head_only: req.method == "HEAD",
            }),
            Err(r) => keep(r.response()),
        },
        route => match gate.admin(req, route.has_side_effect(), peer, now) {
            Ok(()) => admin(req, &route),
            Err(r) => keep(r.response()),
        },
    }
}

/// A file route's parameters, checked before the loop looks at the session: the path, and
/// for an upload its framing and size against `--max-upload` (413 before a byte is read).
fn file_what(req: &Request, what: FileRoute, max_upload: u64) -> Result<FileWhat, FileError> {
    let path = || wire::path_param(&req.query);
    Ok(match what {
        FileRoute::Cwd => FileWhat::Cwd,
        FileRoute::Ticket => FileWhat::Ticket { path: path()? },
        FileRoute::Files if req.method == "PUT" || req.method == "POST" => {
            let length = wire::body_length(req)?;
            if length > max_upload {
                return Err(FileError::TooLarge(max_upload));
            }
            FileWhat::Upload {
                path: path()?,
                overwrite: http::query_param(&req.query, "overwrite").as_deref() == Some("1"),
                length,
            }
        }
        FileRoute::Files => FileWhat::Download {
            path: path()?,
            head_only: req.method == "HEAD",
        },
    })
}

/// The admin surface, once the caller is known to be an admin.
fn admin(req: &Request, route: &Route) -> Action {
    let keep = |r: Reject| Action::Respond(r.response(), After::KeepAlive);
    let list = |view| Action::List { owner: None, view };
    match route {
        Route::AdminSessions => {
            if http::query_param(&req.query, "format").as_deref() == Some("text") {
                list(View::Text)
            } else {
                list(View::Json)
            }
        }
        Route::AdminMetrics => list(View::Metrics),
        Route::AdminPage => match assets::get("/assets/admin.html") {
            Some(a) => Action::Respond(
                Response::new(200, a.content_type, a.body()),
                After::KeepAlive,
            ),
            None => keep(Reject::NoAdminPage),
        },
        Route::AdminDrop => match http::query_param(&req.query, "id") {
            Some(id) if protocol::valid_id(&id) => Action::Drop(id),
            _ => keep(Reject::BadId),
        },
        Route::AdminUpgrade => Action::Upgrade,
        Route::AdminDropAll => {
            match http::query_param(&req.query, "confirm").and_then(|c| c.parse().ok()) {
                Some(confirm) => Action::DropAll(confirm),
                None => keep(Reject::ConfirmRequired),
            }
        }
        _ => keep(Reject::NotFound),
    }
}

/// Checks a WebSocket upgrade and answers it with 101, or refuses it.
fn handshake(
    req: &Request,
    gate: &Gate,
    cx: &Context,
    upgrade: impl FnOnce(&Request) -> Upgrade,
) -> Action {
    if !req.is_upgrade() {
        return Action::Respond(Reject::NotUpgrade.response(), After::KeepAlive);
    }
    let close = |r: Response| Action::Respond(r, After::Close);
    if req.header("sec-websocket-version").map(str::trim) != Some("13") {
        return close(Reject::WsVersion.response());
    }
    let Some(key) = req.ws_key() else {
        return close(Reject::WsKey.response());
    };
    if let Err(r) = gate.origin(req) {
        return close(r.response());
    }
    // The connection was charged as HTTP; as a WebSocket it may hold far more.
    if !cx.upgrade_fits {
        return close(Reject::Memory.response());
    }
    let protocol = req
        .header_has_token("sec-websocket-protocol", "keepty.v1")
        .then_some("keepty.v1");
    let accept = crate::net::accept::accept_key(key.trim().as_bytes());
    let mut resp = Response::new(101, "", Vec::new());
    resp.body = Cow::Owned(http::upgrade_response(&accept, protocol));
    Action::Respond(resp, After::Upgrade(upgrade(req)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const LOOPBACK: &str = "127.0.0.1:40000";
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn gate() -> Gate {
        Gate::new(&Config::default(), 7700, false)
            .unwrap()
            .trusting_loopback()
    }

    fn req(raw: &str) -> Request {
        let raw = raw.replace('\n', "\r\n") + "\r\n";
        crate::net::http::parse_head(raw.as_bytes())
            .unwrap()
            .unwrap()
            .0
    }

    fn ask(raw: &str, peer: &str, upgrade_fits: bool) -> Action {
        let cx = Context {
            upgrade_fits,
            max_upload: 1 << 20,
        };
        route(
            &req(raw),
            peer.parse().unwrap(),
            Instant::now(),
            &mut gate(),
            &cx,
        )
    }

    /// The status of a response, and whether the connection closes after it.
    fn answer(a: Action) -> (u16, bool) {
        match a {
            Action::Respond(r, After::Close) => (r.status, true),
            Action::Respond(r, _) => (r.status, false),
            _ => panic!("expected a response"),
        }
    }

    fn ws(extra: &str) -> String {
        format!(
            "GET /ws?new=1 HTTP/1.1\nHost: localhost:7700\nUpgrade: websocket\nConnection: Upgrade\n{extra}"
        )
    }

    #[test]
    fn host_is_judged_first_and_closes() {
        let a = ask(
            "GET /healthz HTTP/1.1\nHost: evil.example\n",
            LOOPBACK,
            true,
        );
        assert_eq!(answer(a), (403, true));
        let a = ask("GET /healthz HTTP/1.1\nHost: localhost\n", LOOPBACK, true);
        assert_eq!(answer(a), (200, false));
        let a = ask("GET /nowhere HTTP/1.1\nHost: localhost\n", LOOPBACK, true);
        assert_eq!(answer(a), (404, false));
        let a = ask("DELETE /ws HTTP/1.1\nHost: localhost\n", LOOPBACK, true);
        assert_eq!(answer(a), (405, false));
    }

    #[test]
    fn websocket_handshake_checks_in_order() {
        let key = format!("Sec-WebSocket-Key: {KEY}\n");
        let v13 = format!("Sec-WebSocket-Version: 13\n{key}");
        let plain = "GET /ws HTTP/1.1\nHost: localhost\n";
        assert_eq!(answer(ask(plain, LOOPBACK, true)), (400, false));
        let v12 = ws(&format!("Sec-WebSocket-Version: 12\n{key}"));
        assert_eq!(answer(ask(&v12, LOOPBACK, true)), (426, true));
        let nokey = ws("Sec-WebSocket-Version: 13\n");
        assert_eq!(answer(ask(&nokey, LOOPBACK, true)), (400, true));
        let foreign = ws(&format!("{v13}Origin: http://evil.example\n"));
        assert_eq!(answer(ask(&foreign, LOOPBACK, true)), (403, true));
        assert_eq!(answer(ask(&ws(&v13), LOOPBACK, false)), (503, true));
        match ask(
            &ws(&format!("{v13}Origin: http://localhost:7700\n")),
            LOOPBACK,
            true,
        ) {
            Action::Respond(r, After::Upgrade(Upgrade::Session(Ok(p), caller))) => {
                assert_eq!(r.status, 101);
                assert!(p.new);
                assert_eq!(caller.name, "local");
            }
            _ => panic!("expected an upgrade"),
        }
    }

    #[test]
    fn lists_are_actions_for_the_loop() {
        let own = ask(
            "GET /api/sessions HTTP/1.1\nHost: localhost\n",
            LOOPBACK,
            true,
        );
        assert!(matches!(own, Action::List { owner: Some(o), view: View::Own } if o == "local"));
        let text = "GET /admin/sessions?format=text HTTP/1.1\nHost: localhost\n";
        assert!(matches!(
            ask(text, LOOPBACK, true),
            Action::List {
                owner: None,
                view: View::Text
            }
        ));
        let metrics = "GET /admin/metrics HTTP/1.1\nHost: localhost\n";
        assert!(matches!(
            ask(metrics, LOOPBACK, true),
            Action::List {
                view: View::Metrics,
                ..
            }
        ));
    }

    #[test]
    fn drops_are_validated_before_they_reach_the_loop() {
        let drop = |q: &str| {
            ask(
                &format!("POST /admin/{q} HTTP/1.1\nHost: localhost\n"),
                LOOPBACK,
                true,
            )
        };
        assert!(matches!(drop("drop?id=abc_DEF-1"), Action::Drop(id) if id == "abc_DEF-1"));
        assert_eq!(answer(drop("drop?id=a%2Fb")), (400, false));
        assert_eq!(answer(drop("drop")), (400, false));
        assert!(matches!(drop("drop-all?confirm=3"), Action::DropAll(3)));
        assert_eq!(answer(drop("drop-all?confirm=three")), (400, false));
        // No admin token file: a LAN peer gets nothing.
        let lan = ask(
            "GET /admin/drop?id=x HTTP/1.1\nHost: 10.0.0.5:7700\n",
            "10.0.0.9:5000",
            true,
        );
        assert_eq!(answer(lan), (403, false));
    }

    #[test]
    fn file_routes_check_their_parameters_before_the_loop() {
        let put = |extra: &str| {
            ask(
                &format!(
                    "PUT /api/sessions/s1/files?path=a%2Fb HTTP/1.1\nHost: localhost\n{extra}"
                ),
                LOOPBACK,
                true,
            )
        };
        match put("Content-Length: 5\n") {
            Action::Files(FileAsk::Session { id, what, caller }) => {
                assert_eq!(id, "s1");
                assert_eq!(caller.name, "local");
                assert_eq!(
                    what,
                    FileWhat::Upload {
                        path: "a/b".into(),
                        overwrite: false,
                        length: 5
                    }
                );
            }
            _ => panic!("expected an upload"),
        }
        // The cap in the test context is 1 MiB.
        assert_eq!(answer(put("Content-Length: 1048577\n")), (413, false));
        assert_eq!(answer(put("")), (411, false));
        assert_eq!(answer(put("Transfer-Encoding: chunked\n")), (411, false));
        assert_eq!(
            answer(put("Sec-Fetch-Site: cross-site\nContent-Length: 1\n")).0,
            403
        );
        let get = |path: &str| {
            ask(
                &format!("GET {path} HTTP/1.1\nHost: localhost\n"),
                LOOPBACK,
                true,
            )
        };
        assert!(matches!(
            get("/api/sessions/s1/cwd"),
            Action::Files(FileAsk::Session {
                what: FileWhat::Cwd,
                ..
            })
        ));
        assert!(matches!(
            get("/api/files/TICKET"),
            Action::Files(FileAsk::Ticket { ticket, head_only: false }) if ticket == "TICKET"
        ));
        assert_eq!(
            answer(get("/api/sessions/s1/files")),
            (400, false),
            "no path"
        );
        assert_eq!(
            answer(get("/api/sessions/s1/files/ticket?path=x")),
            (405, false)
        );
        assert_eq!(answer(get("/api/sessions/s1/other")), (404, false));
    }

    #[test]
    fn rejections_say_what_is_wrong() {
        let r = Reject::ConfirmMismatch {
            confirm: 2,
            count: 3,
        }
        .response();
        assert_eq!(r.status, 409);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "confirm_mismatch");
        assert!(body["message"].as_str().unwrap().contains("count is 3"));
        let r = Reject::MethodNotAllowed("GET, POST").response();
        assert!(
            r.headers
                .iter()
                .any(|(n, v)| *n == "Allow" && v == "GET, POST")
        );
        assert_eq!(Reject::TooManyClients.response().status, 429);
        assert_eq!(Reject::Memory.response().status, 503);
    }
}
