//! Admission of one request: whether its Host names this server, whether its Origin and
//! fetch metadata may act here, and which user or admin its token makes it. The gate sees a
//! parsed request head and the peer's address, never a socket, so every rule is testable
//! with a literal request; the event loop only carries out the answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use crate::access::account::Account;
use crate::access::auth::{self, FailureLimiter, Tokens};
use crate::access::peer;
use crate::config::Config;
use crate::net::addr;
use crate::net::http::{self, Request, Response};

/// The authenticated user behind a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    /// Who owns the sessions this request creates or sees.
    pub(crate) name: String,
    /// The most sessions this user may have at once, if limited.
    pub(crate) max_sessions: Option<usize>,
    /// The unix account its sessions run as; `None`: keepty's own.
    pub(crate) account: Option<Rc<Account>>,
}

/// Why a request is not admitted. [`Refusal::response`] is the one place each one's status,
/// code and message are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// More than one `Host` header: a proxy in front could read another one than we do.
    /// 400.
    TwoHosts,
    /// No `Host` header. 400.
    NoHost,
    /// `Host` names another server or port: what a DNS rebinding attack looks like. 403.
    ForeignHost,
    /// More than one `Origin` header: judging only the first would be a bypass. 403.
    TwoOrigins,
    /// `Origin` is neither this server's own nor an `--allow-origin` (`null` included). 403.
    ForeignOrigin,
    /// A request with a side effect whose `Sec-Fetch-Site` says another site sent it: a link
    /// or an image elsewhere. 403.
    CrossSite,
    /// More than one `Sec-Fetch-Site` header: as with two Origins, judging only the first
    /// would be a bypass. 403.
    TwoFetchSites,
    /// A token in a request a browser made for another site's page (an `<img>`, a link, a
    /// script): refused before the token is read, so it is neither a guess that counts
    /// against the address nor one that is answered. 403.
    CrossSiteToken,
    /// An admin request from a peer off loopback, with no admin token file to let it prove
    /// itself. 403.
    AdminNotLoopback,
    /// A user route without a user token while a token file is configured. 401.
    NoUserToken,
    /// An admin route without an admin token while an admin token file is configured. 401.
    NoAdminToken,
    /// A token that is not in the file (user or admin); counted against the address. 401.
    WrongToken,
    /// The address used up its failed attempts and is refused until its window ends. 429.
    TooManyFailures,
    /// A token-less request from a loopback socket of another unix account than keepty's
    /// (or root's): loopback is every account on the box, not just the operator. 401.
    OtherAccount,
    /// A token-less user request that a proxy forwarded: without a token file keepty serves
    /// only this box's own account, and a proxy's clients are anyone the proxy serves. 403.
    ProxiedWithoutToken,
}

impl Refusal {
    /// Status, error code and message, as the JSON error body shows them.
    fn parts(self) -> (u16, &'static str, &'static str) {
        match self {
            Refusal::TwoHosts => (400, "bad_request", "more than one Host header"),
            Refusal::NoHost => (400, "bad_request", "Host header required"),
            Refusal::ForeignHost => (
                403,
                "forbidden",
                "Host does not name this server; start keepty with --allow-host NAME to allow that name",
            ),
            Refusal::TwoOrigins => (403, "forbidden", "more than one Origin"),
            Refusal::ForeignOrigin => (403, "forbidden", "Origin not allowed"),
            Refusal::CrossSite => (
                403,
                "forbidden",
                "a request from another site cannot change sessions",
            ),
            Refusal::TwoFetchSites => (403, "forbidden", "more than one Sec-Fetch-Site"),
            Refusal::CrossSiteToken => (
                403,
                "forbidden",
                "a request made for another site cannot present a token; open it from the address bar",
            ),
            Refusal::AdminNotLoopback => (
                403,
                "forbidden",
                "without --admin-token-file the admin surface answers loopback peers only",
            ),
            Refusal::NoUserToken => (401, "unauthorized", "a user token is required"),
            Refusal::NoAdminToken => (401, "unauthorized", "an admin token is required"),
            Refusal::WrongToken => (401, "unauthorized", "wrong token"),
            Refusal::OtherAccount => (
                401,
                "unauthorized",
                "on loopback without a token keepty serves only its own unix account; another \
                 account needs a token",
            ),
            Refusal::ProxiedWithoutToken => (
                403,
                "forbidden",
                "this request came through a proxy; without --token-file keepty serves only \
                 this box's own account, so give it a --token-file",
            ),
            Refusal::TooManyFailures => (
                429,
                "limit",
                "too many failed attempts from this address; try again in a minute",
            ),
        }
    }

    /// The HTTP answer: the status and the JSON error `{"error", "message"}`.
    pub(crate) fn response(&self) -> Response {
        let (status, code, message) = self.parts();
        Response::error(status, code, message)
    }
}

/// Who may ask: the loaded tokens, the failed-attempt limiter and the Host and Origin
/// allow-lists, with the counter of wrong tokens for the metrics.
pub(crate) struct Gate {
    tokens: Tokens,
    failures: FailureLimiter,
    /// `--allow-host` names, lowercased by the command line parser.
    allow_hosts: Vec<String>,
    allow_origins: Vec<String>,
    /// `--trusted-proxy` addresses: from them, the client is named by the forwarding headers.
    trusted_proxies: Vec<IpAddr>,
    /// The bound port: a `Host` with another port names another server.
    port: u16,
    /// Serving HTTPS: our own origin is `https://` + Host.
    tls: bool,
    token_file: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
    auth_failures: u64,
    /// Who owns a loopback peer's socket ([`peer::socket_uid`]; a stub in unit tests).
    owner_of: fn(SocketAddr, SocketAddr) -> Option<u32>,
    /// The listen address (its port the bound one): where a loopback client connected to.
    listen: SocketAddr,
    /// `--insecure-no-auth`: the operator let everyone in without a token, proxied or not.
    no_auth: bool,
}

/// Reads the token files and logs what was loaded (counts and warnings, never a token).
fn load_tokens(user_file: Option<&Path>, admin_file: Option<&Path>) -> Result<Tokens, String> {
    let loaded = Tokens::load(user_file, admin_file)?;
    for w in &loaded.warnings {
        eprintln!("keepty: warning: {w}");
    }
    let (users, admins) = loaded.tokens.counts();
    eprintln!(
        "keepty: auth: {}; admin: {}",
        users.map_or(
            "no token file, every request is user local".to_string(),
            |n| format!("{n} user tokens")
        ),
        admins.map_or("loopback peers only".to_string(), |n| format!(
            "{n} admin tokens"
        ))
    );
    Ok(loaded.tokens)
}

/// The token in `Authorization: Bearer TOKEN`.
fn bearer(req: &Request) -> Option<&[u8]> {
    let v = req.header("authorization")?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().as_bytes())
}

/// The token a browser sends as the subprotocol `keepty.token.BASE64URL(TOKEN)`: it cannot
/// set `Authorization` on a WebSocket.
fn subprotocol_token(req: &Request) -> Option<Vec<u8>> {
    req.headers
        .iter()
        .filter(|(n, _)| n == "sec-websocket-protocol")
        .flat_map(|(_, v)| v.split(','))
        .find_map(|p| p.trim().strip_prefix("keepty.token."))
        .and_then(crate::base64::url_decode)
}

/// This machine's name, lowercased; empty when it has none that reads.
fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The names a router or a Pi answers for itself, which need no `--allow-host`: its hostname,
/// and its first label under `.local` (mDNS, as a Pi or a Mac resolves it) and `.lan` (how
/// OpenWrt's dnsmasq names the router and its clients). A rebinding attack needs a name the
/// attacker's DNS answers; these are names the LAN's own resolver answers. A hostname that
/// is not a plain DNS name (`(none)`, empty, `localhost`) adds nothing.
fn own_names(hostname: &str) -> Vec<String> {
    let h = hostname.trim_end_matches('.');
    let plain = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !h.split('.').all(plain) || h == "localhost" || h.parse::<Ipv4Addr>().is_ok() {
        return Vec::new();
    }
    let first = h.split('.').next().unwrap_or(h);
    let mut names = vec![h.to_string()];
    for n in [
        first.to_string(),
        format!("{first}.local"),
        format!("{first}.lan"),
    ] {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

impl Gate {
    /// Loads the token files named in `cfg` and logs what was loaded. `port` is the bound
    /// port (the real one when 0 was asked for); `tls` whether the server speaks HTTPS.
    pub(crate) fn new(cfg: &Config, port: u16, tls: bool) -> Result<Gate, String> {
        let tokens = load_tokens(cfg.token_file.as_deref(), cfg.admin_token_file.as_deref())?;
        Ok(Gate {
            tokens,
            failures: FailureLimiter::default(),
            allow_hosts: [cfg.allow_hosts.clone(), own_names(&hostname())].concat(),
            allow_origins: cfg.allow_origins.clone(),
            trusted_proxies: cfg.trusted_proxies.clone(),
            port,
            tls,
            token_file: cfg.token_file.clone(),
            admin_token_file: cfg.admin_token_file.clone(),
            auth_failures: 0,
            owner_of: peer::socket_uid,
            listen: SocketAddr::new(cfg.listen.ip(), port),
            no_auth: cfg.insecure_no_auth,
        })
    }

    /// The bound port and whether the server speaks HTTPS, once known: `new` runs before the
    /// bind so that a broken token file is reported first.
    pub(crate) fn bound(&mut self, port: u16, tls: bool) {
        self.port = port;
        self.tls = tls;
        self.listen.set_port(port);
    }

    /// SIGHUP: reads both token files again. A file that no longer reads or parses keeps the
    /// old tokens, so an editing slip does not lock everyone out. Sessions and clients stay
    /// as they are; only new requests see new tokens.
    pub(crate) fn reload(&mut self) {
        match load_tokens(self.token_file.as_deref(), self.admin_token_file.as_deref()) {
            Ok(t) => {
                self.tokens = t;
                eprintln!("keepty: SIGHUP: token files reloaded");
            }
            Err(e) => eprintln!("keepty: SIGHUP: keeping the old tokens: {e}"),
        }
    }

    /// The failure limiter and the count of wrong tokens, carried across an upgrade.
    pub(crate) fn failures_mut(&mut self) -> (&mut FailureLimiter, &mut u64) {
        (&mut self.failures, &mut self.auth_failures)
    }

    /// The failure limiter, for an upgrade's state.
    pub(crate) fn failures(&self) -> &FailureLimiter {
        &self.failures
    }

    /// For unit tests of code above the gate: every loopback peer is keepty's own account
    /// (the real lookup would find no socket behind a literal address).
    #[cfg(test)]
    pub(crate) fn trusting_loopback(mut self) -> Gate {
        self.owner_of = |_, _| Some(nix::unistd::geteuid().as_raw());
        self
    }

    /// Wrong tokens seen since start, for the metrics.
    pub(crate) fn auth_failures(&self) -> u64 {
        self.auth_failures
    }

    /// The client a request from `peer` stands for, for every per-address budget: the peer,
    /// or behind a `--trusted-proxy` the address its forwarding headers name.
    pub(crate) fn client(&self, req: &Request, peer: SocketAddr) -> IpAddr {
        addr::client(req, peer.ip(), &self.trusted_proxies)
    }

    /// Whether the request comes from this box itself and may have loopback's trust: a
    /// loopback peer, and no forwarding header (a reverse proxy on the box connects from
    /// loopback for every client it serves, so a forwarded request is the proxy's client's).
    pub(crate) fn loopback(&self, req: &Request, peer: SocketAddr) -> bool {
        peer.ip().is_loopback() && !addr::forwarded(req)
    }

    /// The Host allowlist (`localhost`, IP literals, the box's own names, `--allow-host`):
    /// the only defence against DNS rebinding, where an attacker's page
    /// reaches us under its own name with a matching Origin.
    pub(crate) fn host(&self, req: &Request) -> Result<(), Refusal> {
        // Two Host headers could be read differently by a proxy in front and by us.
        if req.headers.iter().filter(|(n, _)| n == "host").count() > 1 {
            return Err(Refusal::TwoHosts);
        }
        let Some(host) = req.header("host") else {
            return Err(Refusal::NoHost);
        };
        let host = host.trim().to_ascii_lowercase();
        let (name, port) = match host.rsplit_once(':') {
            Some((n, p))
                if !n.is_empty()
                    && (n.starts_with('[') || !n.contains(':'))
                    && p.chars().all(|c| c.is_ascii_digit()) =>
            {
                (n, Some(p))
            }
            _ => (host.as_str(), None),
        };
        if port.is_some_and(|p| p.parse::<u16>().ok() != Some(self.port)) {
            return Err(Refusal::ForeignHost);
        }
        // An IP literal cannot be a rebinding attack (that needs a name the attacker's DNS
        // answers), and it is how an operator reaches a box listening on 0.0.0.0.
        let ip_literal = name.parse::<Ipv4Addr>().is_ok()
            || name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<Ipv6Addr>().is_ok());
        let ok = ip_literal
            || name == "localhost"
            || self.allow_hosts.iter().any(|h| *h == name || *h == host);
        if ok {
            Ok(())
        } else {
            Err(Refusal::ForeignHost)
        }
    }

    /// A request carrying `Origin` must come from our own origin or an allowed one; one
    /// without it (curl, scripts) is judged by its token alone.
    pub(crate) fn origin(&self, req: &Request) -> Result<(), Refusal> {
        let Some(origin) = req.header("origin") else {
            return Ok(());
        };
        // A browser sends one Origin; judging only the first of several would be a bypass.
        if req.headers.iter().filter(|(n, _)| n == "origin").count() > 1 {
            return Err(Refusal::TwoOrigins);
        }
        let host = req.header("host").unwrap_or("");
        // Our own origin is the Host asked for under the scheme we serve; a TLS proxy in
        // front of a plain keepty is another origin and is named with --allow-origin.
        let scheme = if self.tls { "https://" } else { "http://" };
        let own = origin
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            && origin[scheme.len()..].eq_ignore_ascii_case(host);
        if own || self.allow_origins.iter().any(|o| o == origin) {
            Ok(())
        } else {
            Err(Refusal::ForeignOrigin)
        }
    }

    /// The user a request acts as: `local` without a token file, else the owner of the
    /// token it carries (Bearer, or the `keepty.token.` subprotocol for browsers). The
    /// Origin and the fetch metadata are judged first, so a foreign page's attempt never
    /// reaches the token check (and never counts as a failed login).
    pub(crate) fn user(
        &mut self,
        req: &Request,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<Caller, Refusal> {
        self.user_acting(req, false, peer, now)
    }

    /// [`Gate::user`] for a route that may have a side effect (a file upload, a download
    /// ticket): like the admin actions, such a request sent by another site's page is
    /// refused on its fetch metadata before its token is read.
    pub(crate) fn user_acting(
        &mut self,
        req: &Request,
        side_effect: bool,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<Caller, Refusal> {
        self.origin(req)?;
        fetch_site(req, side_effect)?;
        if !self.tokens.users_required() {
            // A proxy on the box connects from loopback, often as keepty's own account, for
            // every client it serves: the uid check alone would hand them all this account.
            if peer.ip().to_canonical().is_loopback() && addr::forwarded(req) && !self.no_auth {
                return Err(Refusal::ProxiedWithoutToken);
            }
            self.own_account(peer)?;
            return Ok(Caller {
                name: auth::LOCAL_USER.to_string(),
                max_sessions: None,
                account: None,
            });
        }
        let client = self.may_guess(req, peer, now)?;
        let token = bearer(req)
            .map(<[u8]>::to_vec)
            .or_else(|| subprotocol_token(req));
        let Some(token) = token else {
            return Err(Refusal::NoUserToken);
        };
        match self.tokens.user(&token) {
            Some(u) => {
                let caller = Caller {
                    name: u.name.clone(),
                    max_sessions: u.max_sessions,
                    account: u.account.clone(),
                };
                self.failures.succeed(client, now);
                Ok(caller)
            }
            None => Err(self.wrong_token(client, now, "user")),
        }
    }

    /// Where a token is about to be read: the client it counts against, unless the request
    /// may not guess at all. Another site's page must not make this browser's requests guess
    /// tokens (each would count against the operator's own address); a client could send
    /// those headers itself, so the token is not read rather than read and not counted. The
    /// failure block is on guessing tokens, so it applies here too.
    fn may_guess(&self, req: &Request, peer: SocketAddr, now: Instant) -> Result<IpAddr, Refusal> {
        if browser_cross_site(req) {
            return Err(Refusal::CrossSiteToken);
        }
        let client = self.client(req, peer);
        if self.failures.blocked(client, now) {
            return Err(Refusal::TooManyFailures);
        }
        Ok(client)
    }

    /// Admin access: the Origin and the fetch metadata (for a route with a side effect, it
    /// must not come from another site), then an admin token when an admin token file is
    /// configured (else a loopback peer). What a browser can be made to send from another
    /// site is refused before any token is looked at.
    pub(crate) fn admin(
        &mut self,
        req: &Request,
        side_effect: bool,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), Refusal> {
        self.origin(req)?;
        fetch_site(req, side_effect)?;
        self.admin_token(req, peer, now)
    }

    fn admin_token(
        &mut self,
        req: &Request,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), Refusal> {
        if !self.tokens.admins_required() {
            return if self.loopback(req, peer) {
                self.own_account(peer)
            } else {
                Err(Refusal::AdminNotLoopback)
            };
        }
        let client = self.may_guess(req, peer, now)?;
        // The query parameter is for a phone's address bar, which cannot set a header.
        let token = bearer(req)
            .map(<[u8]>::to_vec)
            .or_else(|| http::query_param(&req.query, "token").map(String::into_bytes));
        match token {
            None => Err(Refusal::NoAdminToken),
            Some(t) if self.tokens.is_admin(&t) => {
                self.failures.succeed(client, now);
                Ok(())
            }
            Some(_) => Err(self.wrong_token(client, now, "admin")),
        }
    }

    /// Where no token is asked, a loopback peer must be keepty's own account or root: the
    /// hook into [`peer`], which finds the socket's owner. Peers off loopback were let in by
    /// `--insecure-no-auth` and are not looked up (their sockets are on another machine).
    fn own_account(&self, peer: SocketAddr) -> Result<(), Refusal> {
        if !peer.ip().to_canonical().is_loopback() {
            return Ok(());
        }
        match (self.owner_of)(peer, self.listen) {
            Some(uid) if peer::trusted_uid(uid) => Ok(()),
            uid => {
                eprintln!(
                    "keepty: refused request from {peer}: its socket belongs to {}, not \
                     keepty's account; it needs a token",
                    uid.map_or("an unknown uid".to_string(), |u| format!("uid {u}"))
                );
                Err(Refusal::OtherAccount)
            }
        }
    }

    /// Counts a wrong token from `client` (never logging it). Once the address has used up
    /// its attempts, its next requests get 429 (checked before any token).
    fn wrong_token(&mut self, client: IpAddr, now: Instant, kind: &str) -> Refusal {
        self.auth_failures += 1;
        let blocked = self.failures.fail(client, now);
        eprintln!(
            "keepty: wrong {kind} token from {client}{}",
            if blocked {
                "; refusing that address for a minute"
            } else {
                ""
            }
        );
        // This failure is answered as one; the block applies to the address's next requests.
        Refusal::WrongToken
    }
}

/// A request with a side effect must not come from another site: a link or an image
/// elsewhere would otherwise be enough to drop sessions. Two `Sec-Fetch-Site` headers are
/// refused whatever the route: a browser sends one.
fn fetch_site(req: &Request, side_effect: bool) -> Result<(), Refusal> {
    if req
        .headers
        .iter()
        .filter(|(n, _)| n == "sec-fetch-site")
        .count()
        > 1
    {
        return Err(Refusal::TwoFetchSites);
    }
    match req.header("sec-fetch-site") {
        Some(site) if side_effect && !matches!(site.trim(), "same-origin" | "none") => {
            Err(Refusal::CrossSite)
        }
        _ => Ok(()),
    }
}

/// True when a browser says it made this request for another origin's page
/// (`Sec-Fetch-Site` other than `same-origin` or `none`), or as a subresource no keepty
/// page loads with a token (`Sec-Fetch-Dest` `image`, `script` or `style`). Such a request's
/// token is not the peer's guess but a page elsewhere using the peer's browser. A client
/// that omits the headers (curl, a script) is judged by its token.
fn browser_cross_site(req: &Request) -> bool {
    let site = req.header("sec-fetch-site").map(str::trim);
    let dest = req.header("sec-fetch-dest").map(str::trim);
    site.is_some_and(|s| !s.eq_ignore_ascii_case("same-origin") && !s.eq_ignore_ascii_case("none"))
        || dest.is_some_and(|d| {
            ["image", "script", "style"]
                .iter()
                .any(|k| d.eq_ignore_ascii_case(k))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{FAILURE_WINDOW, MAX_FAILURES};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const PORT: u16 = 7700;

    /// A directory of its own under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("keepty-gate-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        /// Writes a token file, private as the server asks, so the test log stays quiet.
        fn write(&self, name: &str, text: &str) -> PathBuf {
            use std::os::unix::fs::PermissionsExt;
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn req(head: &str) -> Request {
        http::parse_head(head.as_bytes()).unwrap().unwrap().0
    }

    /// `GET /ws` carrying `token` as a Bearer token.
    fn ws_bearer(token: &str) -> Request {
        req(&format!(
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
        ))
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 50000)
    }

    /// A gate whose loopback peers are all keepty's own account.
    fn open(cfg: &Config) -> Gate {
        Gate::new(cfg, PORT, false).unwrap().trusting_loopback()
    }

    /// A gate with user tokens `alice s3cret 2` and `bob b0b`, and admin token `r00t`, and
    /// the directory holding its files (for rewriting them; dropping it removes them).
    fn with_tokens() -> (TempDir, Gate) {
        let dir = TempDir::new();
        let cfg = Config {
            token_file: Some(dir.write("users", "alice s3cret 2\nbob b0b\n")),
            admin_token_file: Some(dir.write("admins", "r00t\n")),
            ..Config::default()
        };
        let g = open(&cfg);
        (dir, g)
    }

    fn code(r: Refusal) -> (u16, String) {
        let resp = r.response();
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(body["message"].as_str(), Some(r.parts().2));
        (resp.status, body["error"].as_str().unwrap().to_string())
    }

    #[test]
    fn host_allowed_forms() {
        let cfg = Config {
            allow_hosts: vec!["box.lan".into()],
            ..Config::default()
        };
        let g = open(&cfg);
        for host in [
            "localhost",
            "localhost:7700",
            "LocalHost:7700",
            "127.0.0.1",
            "127.0.0.1:7700",
            "192.168.1.20:7700",
            "[::1]",
            "[::1]:7700",
            "[fe80::1]:7700",
            "box.lan",
            "Box.Lan:7700",
        ] {
            let r = req(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
            assert_eq!(g.host(&r), Ok(()), "{host}");
        }
    }

    #[test]
    fn the_box_answers_to_its_own_names() {
        assert_eq!(
            own_names("openwrt"),
            ["openwrt", "openwrt.local", "openwrt.lan"]
        );
        assert_eq!(
            own_names("pi.home.example"),
            ["pi.home.example", "pi", "pi.local", "pi.lan"]
        );
        assert_eq!(
            own_names("router.lan"),
            ["router.lan", "router", "router.local"]
        );
        for odd in ["", "(none)", "localhost", "a b", "-x", "a..b", "10.0.0.1"] {
            assert_eq!(own_names(odd), Vec::<String>::new(), "{odd:?}");
        }
        // They join the allowlist; a suffix trick on them does not.
        let mut g = open(&Config::default());
        g.allow_hosts.extend(own_names("openwrt"));
        for host in ["openwrt", "OpenWrt.lan:7700", "openwrt.local"] {
            let r = req(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
            assert_eq!(g.host(&r), Ok(()), "{host}");
        }
        for host in [
            "openwrt.lan.evil.example",
            "openwrt.example",
            "xopenwrt.lan",
        ] {
            let r = req(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
            assert_eq!(g.host(&r), Err(Refusal::ForeignHost), "{host}");
        }
    }

    #[test]
    fn host_refused_forms() {
        let g = open(&Config::default());
        for host in [
            "localhost:7701",
            "127.0.0.1:80",
            "[::1]:99999",
            "localhost:x",
            "evil.example",
            "evil.example:7700",
            "box.lan",
            // Unbracketed IPv6 is not a Host form; it is refused rather than guessed at.
            "::1",
        ] {
            let r = req(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
            assert_eq!(g.host(&r), Err(Refusal::ForeignHost), "{host}");
        }
        let two = req("GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n");
        assert_eq!(g.host(&two), Err(Refusal::TwoHosts));
        assert_eq!(g.host(&req("GET / HTTP/1.0\r\n\r\n")), Err(Refusal::NoHost));
    }

    #[test]
    fn origin_rules() {
        let cfg = Config {
            allow_origins: vec!["https://term.example".into()],
            ..Config::default()
        };
        let g = open(&cfg);
        let with = |origin: &str| {
            req(&format!(
                "GET /ws HTTP/1.1\r\nHost: localhost:7700\r\nOrigin: {origin}\r\n\r\n"
            ))
        };
        assert_eq!(
            g.origin(&req("GET /ws HTTP/1.1\r\nHost: localhost:7700\r\n\r\n")),
            Ok(())
        );
        assert_eq!(g.origin(&with("http://localhost:7700")), Ok(()));
        assert_eq!(g.origin(&with("HTTP://LOCALHOST:7700")), Ok(()));
        assert_eq!(g.origin(&with("https://term.example")), Ok(()));
        for bad in [
            "null",
            "https://localhost:7700",
            "http://localhost:7701",
            "http://localhost",
            "https://term.example/",
            "https://Term.example",
            "http://evil.example",
        ] {
            assert_eq!(g.origin(&with(bad)), Err(Refusal::ForeignOrigin), "{bad}");
        }
        let two = req(
            "GET /ws HTTP/1.1\r\nHost: localhost:7700\r\nOrigin: http://localhost:7700\r\n\
             Origin: http://localhost:7700\r\n\r\n",
        );
        assert_eq!(g.origin(&two), Err(Refusal::TwoOrigins));

        // Under TLS our own origin is the https one.
        let g = Gate::new(&cfg, PORT, true).unwrap();
        assert_eq!(g.origin(&with("https://localhost:7700")), Ok(()));
        assert_eq!(
            g.origin(&with("http://localhost:7700")),
            Err(Refusal::ForeignOrigin)
        );
    }

    #[test]
    fn no_token_file_is_local() {
        let mut g = open(&Config::default());
        let c = g
            .user(
                &req("GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n"),
                peer("127.0.0.1"),
                Instant::now(),
            )
            .unwrap();
        assert_eq!(c.name, auth::LOCAL_USER);
        assert_eq!(c.max_sessions, None);
    }

    #[test]
    fn without_tokens_loopback_is_only_our_own_account() {
        let mut g = open(&Config::default());
        let ws = req("GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let admin = req("GET /admin/sessions HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let now = Instant::now();
        g.owner_of = |_, _| Some(0);
        assert!(g.user(&ws, peer("127.0.0.1"), now).is_ok(), "root");
        g.owner_of = |_, _| Some(65534);
        for p in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(g.user(&ws, peer(p), now), Err(Refusal::OtherAccount), "{p}");
        }
        for p in ["127.0.0.1", "::1"] {
            assert_eq!(
                g.admin(&admin, false, peer(p), now),
                Err(Refusal::OtherAccount)
            );
        }
        g.owner_of = |_, _| None;
        assert_eq!(
            g.user(&ws, peer("127.0.0.1"), now),
            Err(Refusal::OtherAccount),
            "an owner not found is a stranger"
        );
        // A proxy running as keepty's own account forwards anyone: not local without a token.
        g.owner_of = |_, _| Some(0);
        for h in [
            "X-Forwarded-For: 192.168.1.9",
            "Forwarded: for=192.168.1.9",
            "X-Real-IP: 10.1.1.1",
        ] {
            let fwd = req(&format!(
                "GET /ws HTTP/1.1\r\nHost: localhost\r\n{h}\r\n\r\n"
            ));
            assert_eq!(
                g.user(&fwd, peer("127.0.0.1"), now),
                Err(Refusal::ProxiedWithoutToken),
                "{h}"
            );
            g.no_auth = true;
            assert!(
                g.user(&fwd, peer("127.0.0.1"), now).is_ok(),
                "--insecure-no-auth: {h}"
            );
            g.no_auth = false;
        }
        // Off loopback (--insecure-no-auth) nobody is looked up.
        g.owner_of = |_, _| panic!("looked up a LAN peer");
        assert!(g.user(&ws, peer("192.168.1.5"), now).is_ok());
        // With a token file the token decides, whoever owns the socket.
        let (_dir, mut g) = with_tokens();
        g.owner_of = |_, _| Some(65534);
        assert_eq!(
            g.user(&ws_bearer("b0b"), peer("127.0.0.1"), now)
                .unwrap()
                .name,
            "bob"
        );
    }

    #[test]
    fn user_tokens() {
        let (_dir, mut g) = with_tokens();
        let (p, now) = (peer("10.0.0.1"), Instant::now());
        let alice = Caller {
            name: "alice".into(),
            max_sessions: Some(2),
            account: None,
        };
        let bearer = ws_bearer("s3cret");
        assert_eq!(g.user(&bearer, p, now), Ok(alice.clone()));
        let lower =
            req("GET /ws HTTP/1.1\r\nHost: localhost\r\nAuthorization: bearer  b0b \r\n\r\n");
        assert_eq!(g.user(&lower, p, now).unwrap().name, "bob");
        // base64url("s3cret") = czNjcmV0, next to the protocol the page really speaks.
        let sub = req("GET /ws HTTP/1.1\r\nHost: localhost\r\n\
             Sec-WebSocket-Protocol: keepty.v1, keepty.token.czNjcmV0\r\n\r\n");
        assert_eq!(g.user(&sub, p, now), Ok(alice));
        let none = req("GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(g.user(&none, p, now), Err(Refusal::NoUserToken));
        let basic =
            req("GET /ws HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic s3cret\r\n\r\n");
        assert_eq!(g.user(&basic, p, now), Err(Refusal::NoUserToken));
        assert_eq!(g.auth_failures(), 0, "a missing token is not a guess");
        let wrong = ws_bearer("s3creT");
        assert_eq!(g.user(&wrong, p, now), Err(Refusal::WrongToken));
        // An admin token is not a user token.
        let admin = ws_bearer("r00t");
        assert_eq!(g.user(&admin, p, now), Err(Refusal::WrongToken));
        assert_eq!(g.auth_failures(), 2);
    }

    #[test]
    fn failures_block_the_address_for_a_window() {
        let (_dir, mut g) = with_tokens();
        let (p, other, t0) = (peer("10.0.0.1"), peer("10.0.0.2"), Instant::now());
        let wrong = ws_bearer("nope");
        let right = ws_bearer("s3cret");
        for _ in 0..MAX_FAILURES {
            assert_eq!(g.user(&wrong, p, t0), Err(Refusal::WrongToken));
        }
        assert_eq!(g.user(&wrong, p, t0), Err(Refusal::TooManyFailures));
        assert_eq!(
            g.user(&right, p, t0),
            Err(Refusal::TooManyFailures),
            "a right token does not lift the block"
        );
        let admin = req("GET /admin/sessions?token=r00t HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(
            g.admin(&admin, false, p, t0),
            Err(Refusal::TooManyFailures),
            "one limiter for user and admin tokens"
        );
        assert_eq!(
            g.auth_failures(),
            u64::from(MAX_FAILURES),
            "refused, not counted"
        );
        assert_eq!(g.user(&right, other, t0).unwrap().name, "alice");
        let later = t0 + FAILURE_WINDOW - Duration::from_millis(1);
        assert_eq!(g.user(&right, p, later), Err(Refusal::TooManyFailures));
        assert_eq!(
            g.user(&right, p, t0 + FAILURE_WINDOW).unwrap().name,
            "alice"
        );
    }

    #[test]
    fn admin_without_a_file_is_loopback_only() {
        let mut g = open(&Config::default());
        let r = req("GET /admin/sessions HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let now = Instant::now();
        assert_eq!(g.admin(&r, false, peer("127.0.0.1"), now), Ok(()));
        assert_eq!(g.admin(&r, true, peer("::1"), now), Ok(()));
        assert_eq!(
            g.admin(&r, false, peer("192.168.1.5"), now),
            Err(Refusal::AdminNotLoopback)
        );
    }

    #[test]
    fn admin_tokens() {
        let (_dir, mut g) = with_tokens();
        let (p, now) = (peer("192.168.1.5"), Instant::now());
        let bearer =
            req("GET /admin/sessions HTTP/1.1\r\nHost: box\r\nAuthorization: Bearer r00t\r\n\r\n");
        assert_eq!(g.admin(&bearer, false, p, now), Ok(()));
        let query =
            req("GET /admin/sessions?format=text&token=r%300t HTTP/1.1\r\nHost: box\r\n\r\n");
        assert_eq!(g.admin(&query, false, p, now), Ok(()));
        let none = req("GET /admin/sessions HTTP/1.1\r\nHost: box\r\n\r\n");
        assert_eq!(g.admin(&none, false, p, now), Err(Refusal::NoAdminToken));
        // A user token is not an admin token, even from loopback.
        let user = req("GET /admin/sessions?token=s3cret HTTP/1.1\r\nHost: box\r\n\r\n");
        assert_eq!(
            g.admin(&user, false, peer("127.0.0.1"), now),
            Err(Refusal::WrongToken)
        );
        assert_eq!(g.auth_failures(), 1);
    }

    #[test]
    fn admin_checks_origin_then_fetch_site_then_token() {
        let (_dir, mut g) = with_tokens();
        let (p, now) = (peer("127.0.0.1"), Instant::now());
        let site = |site: &str, token: &str| {
            req(&format!(
                "POST /admin/drop-all?confirm=0&token={token} HTTP/1.1\r\nHost: localhost:7700\r\n\
                 Sec-Fetch-Site: {site}\r\n\r\n"
            ))
        };
        assert_eq!(
            g.admin(&site("cross-site", "r00t"), true, p, now),
            Err(Refusal::CrossSite)
        );
        assert_eq!(
            g.admin(&site("same-site", "r00t"), true, p, now),
            Err(Refusal::CrossSite)
        );
        assert_eq!(g.admin(&site("same-origin", "r00t"), true, p, now), Ok(()));
        assert_eq!(g.admin(&site("none", "r00t"), true, p, now), Ok(()));
        assert_eq!(
            g.admin(&site("cross-site", "r00t"), false, p, now),
            Err(Refusal::CrossSiteToken),
            "with a token file, no token is read from another site's request"
        );
        // Without an admin token file, a read-only admin request is judged by loopback alone.
        let mut open = open(&Config::default());
        assert_eq!(
            open.admin(&site("cross-site", "x"), false, p, now),
            Ok(()),
            "only a side effect is refused cross-site"
        );
        // The fetch metadata is judged before the token: a cross-site drop is no guess.
        assert_eq!(
            g.admin(&site("cross-site", "nope"), true, p, now),
            Err(Refusal::CrossSite)
        );
        assert_eq!(g.auth_failures(), 0);
        assert_eq!(
            g.admin(&site("same-origin", "nope"), true, p, now),
            Err(Refusal::WrongToken)
        );
        assert_eq!(g.auth_failures(), 1);
        // A foreign Origin is refused before the token is looked at: no guess counted.
        let foreign = req(
            "GET /admin/sessions?token=nope HTTP/1.1\r\nHost: localhost:7700\r\n\
             Origin: http://evil.example\r\n\r\n",
        );
        assert_eq!(
            g.admin(&foreign, false, p, now),
            Err(Refusal::ForeignOrigin)
        );
        assert_eq!(g.auth_failures(), 1);
    }

    #[test]
    fn cross_site_browser_requests_never_reach_the_token() {
        let (_dir, mut g) = with_tokens();
        let (p, now) = (peer("192.168.1.5"), Instant::now());
        // What `<img src="http://box:7700/admin/sessions?token=x">` on another site sends.
        let img = |token: &str| {
            req(&format!(
                "GET /admin/sessions?token={token} HTTP/1.1\r\nHost: localhost:7700\r\n\
                 Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: image\r\n\r\n"
            ))
        };
        // A same-site page on another port, and a script tag with no site header at all.
        let sibling = |token: &str| {
            req(&format!(
                "GET /api/sessions HTTP/1.1\r\nHost: localhost:7700\r\n\
                 Authorization: Bearer {token}\r\nSec-Fetch-Site: same-site\r\n\r\n"
            ))
        };
        let script = req(
            "GET /admin/sessions?token=x HTTP/1.1\r\nHost: localhost:7700\r\n\
             Sec-Fetch-Dest: script\r\n\r\n",
        );
        for _ in 0..3 * MAX_FAILURES {
            assert_eq!(
                g.admin(&img("x"), false, p, now),
                Err(Refusal::CrossSiteToken)
            );
            assert_eq!(g.user(&sibling("x"), p, now), Err(Refusal::CrossSiteToken));
            assert_eq!(
                g.admin(&script, false, p, now),
                Err(Refusal::CrossSiteToken)
            );
        }
        // The token is not read at all: a right one is refused the same way, so a client
        // that writes these headers itself gets no answer to its guesses.
        assert_eq!(
            g.admin(&img("r00t"), false, p, now),
            Err(Refusal::CrossSiteToken)
        );
        assert_eq!(
            g.user(&sibling("s3cret"), p, now),
            Err(Refusal::CrossSiteToken)
        );
        assert_eq!(g.auth_failures(), 0);
        assert_eq!(g.user(&ws_bearer("s3cret"), p, now).unwrap().name, "alice");
        let admin = req("GET /admin/sessions?token=r00t HTTP/1.1\r\nHost: localhost:7700\r\n\r\n");
        assert_eq!(g.admin(&admin, false, p, now), Ok(()));
        // A foreign Origin on /ws is refused before its token is read.
        let ws = req(
            "GET /ws HTTP/1.1\r\nHost: localhost:7700\r\nOrigin: http://evil.example\r\n\
             Authorization: Bearer nope\r\n\r\n",
        );
        assert_eq!(g.user(&ws, p, now), Err(Refusal::ForeignOrigin));
        assert_eq!(g.auth_failures(), 0);
        // Without a token file there is no token to protect: the page's own rules apply.
        let mut open = open(&Config::default());
        assert!(open.user(&sibling("x"), peer("127.0.0.1"), now).is_ok());
    }

    #[test]
    fn two_fetch_site_headers_are_refused() {
        let (_dir, mut g) = with_tokens();
        let (p, now) = (peer("127.0.0.1"), Instant::now());
        let two = req(
            "POST /admin/drop-all?confirm=0&token=r00t HTTP/1.1\r\nHost: localhost\r\n\
             Sec-Fetch-Site: same-origin\r\nSec-Fetch-Site: cross-site\r\n\r\n",
        );
        assert_eq!(g.admin(&two, true, p, now), Err(Refusal::TwoFetchSites));
        assert_eq!(g.admin(&two, false, p, now), Err(Refusal::TwoFetchSites));
        let ws = req(
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret\r\n\
             Sec-Fetch-Site: none\r\nSec-Fetch-Site: none\r\n\r\n",
        );
        assert_eq!(g.user(&ws, p, now), Err(Refusal::TwoFetchSites));
    }

    #[test]
    fn a_forwarded_request_is_not_loopback() {
        let mut g = open(&Config::default());
        let now = Instant::now();
        let lo = peer("127.0.0.1");
        for h in [
            "X-Forwarded-For: 192.168.1.9",
            "Forwarded: for=192.168.1.9",
            "X-Real-IP: 192.168.1.9",
        ] {
            let r = req(&format!(
                "GET /admin/sessions HTTP/1.1\r\nHost: localhost\r\n{h}\r\n\r\n"
            ));
            assert!(!g.loopback(&r, lo), "{h}");
            assert_eq!(
                g.admin(&r, false, lo, now),
                Err(Refusal::AdminNotLoopback),
                "{h}"
            );
        }
    }

    #[test]
    fn behind_a_trusted_proxy_the_failure_budget_is_the_clients() {
        let dir = TempDir::new();
        let cfg = Config {
            token_file: Some(dir.write("users", "alice s3cret\n")),
            trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
            ..Config::default()
        };
        let mut g = open(&cfg);
        let (proxy, now) = (peer("127.0.0.1"), Instant::now());
        let from = |client: &str, token: &str| {
            req(&format!(
                "GET /api/sessions HTTP/1.1\r\nHost: localhost\r\n\
                 X-Forwarded-For: 6.6.6.6, {client}\r\nAuthorization: Bearer {token}\r\n\r\n"
            ))
        };
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                g.user(&from("10.0.0.66", "x"), proxy, now),
                Err(Refusal::WrongToken)
            );
        }
        assert_eq!(
            g.user(&from("10.0.0.66", "s3cret"), proxy, now),
            Err(Refusal::TooManyFailures)
        );
        // Another client of the same proxy is not locked out by the first one's guesses.
        assert_eq!(
            g.user(&from("10.0.0.7", "s3cret"), proxy, now)
                .unwrap()
                .name,
            "alice"
        );
        // Without --trusted-proxy the header is ignored: the proxy is the address.
        let (_d, mut plain) = with_tokens();
        for _ in 0..MAX_FAILURES {
            let _ = plain.user(&from("10.0.0.66", "x"), proxy, now);
        }
        assert_eq!(
            plain.user(&from("10.0.0.7", "s3cret"), proxy, now),
            Err(Refusal::TooManyFailures)
        );
    }

    #[test]
    fn reload_takes_a_good_file_and_keeps_the_old_tokens_for_a_bad_one() {
        let (dir, mut g) = with_tokens();
        let (p, now) = (peer("10.0.0.1"), Instant::now());
        dir.write("users", "carol c4rol\n");
        dir.write("admins", "n3w-r00t\n");
        g.reload();
        assert_eq!(g.user(&ws_bearer("c4rol"), p, now).unwrap().name, "carol");
        assert_eq!(
            g.user(&ws_bearer("s3cret"), p, now),
            Err(Refusal::WrongToken)
        );
        let admin =
            req("GET /admin HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer n3w-r00t\r\n\r\n");
        assert_eq!(g.admin(&admin, false, p, now), Ok(()));

        dir.write("users", "dave\n");
        g.reload();
        assert_eq!(g.user(&ws_bearer("c4rol"), p, now).unwrap().name, "carol");
        std::fs::remove_file(dir.0.join("users")).unwrap();
        g.reload();
        assert_eq!(g.user(&ws_bearer("c4rol"), p, now).unwrap().name, "carol");
    }

    #[test]
    fn a_broken_file_fails_the_start() {
        let dir = TempDir::new();
        let cfg = Config {
            token_file: Some(dir.write("users", "alice\n")),
            ..Config::default()
        };
        let e = Gate::new(&cfg, PORT, false).err().unwrap();
        assert!(e.contains("users") && e.contains("line 1"), "{e}");
        let cfg = Config {
            token_file: Some(dir.0.join("missing")),
            ..Config::default()
        };
        assert!(Gate::new(&cfg, PORT, false).is_err());
    }

    #[test]
    fn refusal_responses() {
        for (r, status, c) in [
            (Refusal::TwoHosts, 400, "bad_request"),
            (Refusal::NoHost, 400, "bad_request"),
            (Refusal::ForeignHost, 403, "forbidden"),
            (Refusal::TwoOrigins, 403, "forbidden"),
            (Refusal::ForeignOrigin, 403, "forbidden"),
            (Refusal::CrossSite, 403, "forbidden"),
            (Refusal::TwoFetchSites, 403, "forbidden"),
            (Refusal::CrossSiteToken, 403, "forbidden"),
            (Refusal::AdminNotLoopback, 403, "forbidden"),
            (Refusal::NoUserToken, 401, "unauthorized"),
            (Refusal::NoAdminToken, 401, "unauthorized"),
            (Refusal::WrongToken, 401, "unauthorized"),
            (Refusal::TooManyFailures, 429, "limit"),
            (Refusal::OtherAccount, 401, "unauthorized"),
        ] {
            assert_eq!(code(r), (status, c.to_string()), "{r:?}");
        }
    }
}
