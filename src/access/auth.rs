//! Who may do what: user and admin tokens, matched in constant time, and a per-address limit
//! on failed attempts so a token cannot be guessed.
//!
//! Nothing here ever formats a token into a message: errors name the file and the line.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::access::account::Account;
use crate::limits::{
    FAILURE_WINDOW, GLOBAL_FAILURES, MAX_FAILURES, MAX_TRACKED, MAX_TRUSTED, TRUST_KEEP,
};
use crate::net::addr::key;

/// The user every request is when no token file is configured.
pub const LOCAL_USER: &str = "local";

/// One line of the user token file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Who owns the sessions this token creates.
    pub name: String,
    token: Vec<u8>,
    /// The most sessions this user may have at once, if limited.
    pub max_sessions: Option<usize>,
    /// The unix user named in the fourth field, as written, with its line for messages.
    unix_user: Option<(String, usize)>,
    /// That unix user, resolved when the file is loaded: whom this user's sessions run as.
    /// `None`: keepty's own account.
    pub account: Option<Rc<Account>>,
}

impl User {
    /// The token itself, for the one place that shows it: the phone link keepty prints on its
    /// own terminal at startup (src/reach.rs). Never for a log.
    pub fn token(&self) -> &[u8] {
        &self.token
    }
}

/// Compares a `secret` with a `guess` in time that depends only on the guess's length (which
/// the guesser knows anyway): every byte of the guess is compared, against the secret's byte
/// or a zero past its end, with no early exit, so neither how many leading bytes were right
/// nor how long the secret is shows in the time taken.
pub fn ct_eq(secret: &[u8], guess: &[u8]) -> bool {
    let mut diff = u64::from(secret.len() != guess.len());
    for (i, g) in guess.iter().enumerate() {
        diff |= u64::from(g ^ secret.get(i).copied().unwrap_or(0));
    }
    // black_box keeps the optimizer from turning the fold into an early-exit compare.
    std::hint::black_box(diff) == 0
}

/// Parses the user token file: `NAME TOKEN [MAX_SESSIONS [UNIX_USER]]` per line, `#`
/// comments; `-` as MAX_SESSIONS means no limit of its own (so a unix user can follow).
/// Unix users are only named here; [`Tokens::load`] looks them up.
pub fn parse_users(text: &str) -> Result<Vec<User>, String> {
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(name), Some(token)) = (f.next(), f.next()) else {
            return Err(format!(
                "line {}: expected NAME TOKEN [MAX_SESSIONS [UNIX_USER]]",
                i + 1
            ));
        };
        let max_sessions = match f.next() {
            None | Some("-") => None,
            Some(n) => Some(n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("line {}: MAX_SESSIONS must be a positive number", i + 1)
            })?),
        };
        let unix_user = f.next().map(|u| (u.to_string(), i + 1));
        if f.next().is_some() {
            return Err(format!("line {}: too many fields", i + 1));
        }
        if !crate::api::protocol::valid_id(name) {
            return Err(format!(
                "line {}: NAME must be 1-64 characters of A-Z a-z 0-9 _ -",
                i + 1
            ));
        }
        users.push(User {
            name: name.to_string(),
            token: token.as_bytes().to_vec(),
            max_sessions,
            unix_user,
            account: None,
        });
    }
    Ok(users)
}

/// Parses the admin token file: one token per line, `#` comments.
pub fn parse_admins(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// The loaded token files.
#[derive(Debug, Default)]
pub struct Tokens {
    /// `None`: no user token file, everyone is [`LOCAL_USER`].
    users: Option<Vec<User>>,
    /// `None`: no admin token file, admin is for loopback peers only.
    admins: Option<Vec<Vec<u8>>>,
}

/// What a token file read produced: the tokens, and warnings for the log.
pub struct Loaded {
    /// The tokens.
    pub tokens: Tokens,
    /// Lines for the log (never containing a token).
    pub warnings: Vec<String>,
}

/// A token file's text, with its mode and owner for the checks that depend on accounts.
struct TokenFile<'a> {
    path: &'a Path,
    mode: u32,
    owner: u32,
}

fn read_token_file<'a>(
    path: &'a Path,
    warnings: &mut Vec<String>,
) -> Result<(String, TokenFile<'a>), String> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        warnings.push(format!(
            "token file {} is readable by group or others (mode {mode:o}); chmod 600 it",
            path.display(),
        ));
    }
    Ok((
        text,
        TokenFile {
            path,
            mode,
            owner: meta.uid(),
        },
    ))
}

/// Looks up every unix user the file names. keepty as root may run sessions as anyone; as
/// any other uid it can run them only as itself, so naming another account is refused rather
/// than silently running that user's sessions as keepty's.
fn resolve_accounts(users: &mut [User], euid: u32) -> Result<(), String> {
    for u in users {
        let Some((unix, line)) = &u.unix_user else {
            continue;
        };
        let a = Account::resolve(unix).map_err(|e| format!("line {line}: UNIX_USER: {e}"))?;
        if euid != 0 && a.uid != euid {
            return Err(format!(
                "line {line}: keepty runs as uid {euid}, not root, so it cannot start sessions \
                 as another unix user (uid {}); run it as root or remove the field",
                a.uid
            ));
        }
        u.account = Some(Rc::new(a));
    }
    Ok(())
}

/// With sessions running as other accounts, a token file they can read would hand each of
/// them every other user's token and the admin's: refused, not warned about.
fn check_private(users: &[User], files: &[TokenFile<'_>], euid: u32) -> Result<(), String> {
    let accounts: Vec<&Account> = users.iter().filter_map(|u| u.account.as_deref()).collect();
    if accounts.iter().all(|a| a.uid == euid) {
        return Ok(());
    }
    for f in files {
        if f.mode & 0o077 != 0 {
            return Err(format!(
                "token file {} is readable by group or others (mode {:o}) while sessions run \
                 as other unix users; chmod 600 it",
                f.path.display(),
                f.mode
            ));
        }
        if let Some(a) = accounts.iter().find(|a| a.uid == f.owner && a.uid != euid) {
            return Err(format!(
                "token file {} belongs to unix user {}, whose sessions could read it; chown it \
                 to keepty's user",
                f.path.display(),
                a.name
            ));
        }
    }
    Ok(())
}

impl Tokens {
    /// Reads the configured files, and looks up the unix users the user file names.
    pub fn load(user_file: Option<&Path>, admin_file: Option<&Path>) -> Result<Loaded, String> {
        let euid = nix::unistd::geteuid().as_raw();
        let mut warnings = Vec::new();
        let mut files = Vec::new();
        let users = match user_file {
            None => None,
            Some(p) => {
                let (text, file) = read_token_file(p, &mut warnings)?;
                files.push(file);
                let mut users = parse_users(&text).map_err(|e| format!("{}: {e}", p.display()))?;
                resolve_accounts(&mut users, euid).map_err(|e| format!("{}: {e}", p.display()))?;
                Some(users)
            }
        };
        let admins = match admin_file {
            None => None,
            Some(p) => {
                let (text, file) = read_token_file(p, &mut warnings)?;
                files.push(file);
                Some(parse_admins(&text))
            }
        };
        if let Some(users) = &users {
            check_private(users, &files, euid)?;
        }
        Ok(Loaded {
            tokens: Tokens { users, admins },
            warnings,
        })
    }

    /// True when user tokens are required.
    pub fn users_required(&self) -> bool {
        self.users.is_some()
    }

    /// True when admin tokens are required (else admin is loopback-only).
    pub fn admins_required(&self) -> bool {
        self.admins.is_some()
    }

    /// The user a token belongs to. Every token is compared, so the time taken does not say
    /// which one matched.
    pub fn user(&self, token: &[u8]) -> Option<&User> {
        let users = self.users.as_ref()?;
        let mut found = None;
        for u in users {
            if ct_eq(&u.token, token) && found.is_none() {
                found = Some(u);
            }
        }
        found
    }

    /// True if `token` is an admin token.
    pub fn is_admin(&self, token: &[u8]) -> bool {
        let Some(admins) = &self.admins else {
            return false;
        };
        admins.iter().fold(false, |ok, t| ok | ct_eq(t, token))
    }

    /// How many user tokens and admin tokens are loaded, for the log.
    pub fn counts(&self) -> (Option<usize>, Option<usize>) {
        (
            self.users.as_ref().map(Vec::len),
            self.admins.as_ref().map(Vec::len),
        )
    }
}

/// What a [`FailureLimiter`] holds, as plain values an upgrade's state file carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimiterState {
    /// Per address key: failures, and how long ago the window (or the block) began.
    pub by_ip: Vec<(String, u32, Duration)>,
    /// Failures from every address, and how long ago that window began.
    pub global: Option<(u32, Duration)>,
    /// Address keys that logged in lately, and how long that is still remembered.
    pub trusted: Vec<(String, Duration)>,
}

/// Failed authentications: counted per address (an IPv6 /64 as one, [`crate::net::addr::key`])
/// and in all.
///
/// The per-address budget is SPEC 4's: [`MAX_FAILURES`] a [`FAILURE_WINDOW`], then refused for
/// a window. The global budget ([`GLOBAL_FAILURES`] a window, all addresses together) stops N
/// addresses from making 10·N guesses a minute. When it is spent, addresses are refused
/// before their token is read for the rest of the window, except those that presented a
/// right token within [`TRUST_KEEP`]: they keep their own per-address budget. So a guesser
/// with many addresses gets at most [`GLOBAL_FAILURES`] guesses a minute, and what it can do
/// to the operator is keep a device that has not logged in for a day from logging in while
/// the flood lasts; the operator's known devices are never locked out by anyone else.
#[derive(Default)]
pub struct FailureLimiter {
    /// Failures and when the count (or the block) started, per address key.
    by_ip: HashMap<IpAddr, (u32, Instant)>,
    /// Failures from every address, and when the window started.
    global: (u32, Option<Instant>),
    /// Address keys that presented a right token, and until when that is remembered.
    trusted: HashMap<IpAddr, Instant>,
}

impl FailureLimiter {
    /// True while `ip` is refused for too many failures: its own, or everyone's while it
    /// has not logged in lately.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        let ip = key(ip);
        let own = self
            .by_ip
            .get(&ip)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && now < *since + FAILURE_WINDOW);
        own || (self.global_spent(now) && !self.known(ip, now))
    }

    /// True while `ip` (a key) is remembered as having logged in.
    fn known(&self, ip: IpAddr, now: Instant) -> bool {
        self.trusted.get(&ip).is_some_and(|until| now < *until)
    }

    fn global_spent(&self, now: Instant) -> bool {
        let (n, since) = self.global;
        n >= GLOBAL_FAILURES && since.is_some_and(|s| now < s + FAILURE_WINDOW)
    }

    /// Everything the limiter holds, for an upgrade; keys are strings so the state file need
    /// not change when the limiter's keys do.
    pub fn snapshot(&self, now: Instant) -> LimiterState {
        let age = |since: Instant| now.saturating_duration_since(since);
        LimiterState {
            by_ip: self
                .by_ip
                .iter()
                .map(|(ip, (n, since))| (ip.to_string(), *n, age(*since)))
                .collect(),
            global: self.global.1.map(|since| (self.global.0, age(since))),
            trusted: self
                .trusted
                .iter()
                .map(|(ip, until)| (ip.to_string(), until.saturating_duration_since(now)))
                .collect(),
        }
    }

    /// Puts back a [`FailureLimiter::snapshot`]; a key that is not an address, or a window
    /// long over, is skipped, and the caps hold whatever the state says.
    pub fn restore(&mut self, st: &LimiterState, now: Instant) {
        for (key, n, age) in &st.by_ip {
            if let (Ok(ip), Some(since)) = (key.parse::<IpAddr>(), now.checked_sub(*age))
                && *age < FAILURE_WINDOW
                && self.by_ip.len() < MAX_TRACKED
            {
                self.by_ip.insert(ip, (*n, since));
            }
        }
        if let Some((n, age)) = st.global
            && age < FAILURE_WINDOW
            && let Some(since) = now.checked_sub(age)
        {
            self.global = (n, Some(since));
        }
        for (key, left) in &st.trusted {
            if let Ok(ip) = key.parse::<IpAddr>()
                && *left <= TRUST_KEEP
                && self.trusted.len() < MAX_TRUSTED
            {
                self.trusted.insert(ip, now + *left);
            }
        }
    }

    /// Counts a failure; returns true if `ip` is now blocked.
    pub fn fail(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = key(ip);
        match self.global.1 {
            Some(since) if now < since + FAILURE_WINDOW => self.global.0 += 1,
            _ => self.global = (1, Some(now)),
        }
        if self.by_ip.len() >= MAX_TRACKED && !self.by_ip.contains_key(&ip) {
            self.by_ip
                .retain(|_, (_, since)| now < *since + FAILURE_WINDOW);
            if self.by_ip.len() >= MAX_TRACKED
                && let Some(oldest) = self
                    .by_ip
                    .iter()
                    .min_by_key(|(_, (_, s))| *s)
                    .map(|(k, _)| *k)
            {
                self.by_ip.remove(&oldest);
            }
        }
        let e = self.by_ip.entry(ip).or_insert((0, now));
        if now >= e.1 + FAILURE_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
        // The block lasts a full window from the failure that caused it.
        if e.0 == MAX_FAILURES {
            e.1 = now;
        }
        let own = e.0 >= MAX_FAILURES;
        own || (self.global_spent(now) && !self.known(ip, now))
    }

    /// `ip` presented a right token: it keeps its own budget through a global block for
    /// [`TRUST_KEEP`]. At most [`MAX_TRUSTED`] addresses are remembered, the stalest
    /// forgotten first.
    pub fn succeed(&mut self, ip: IpAddr, now: Instant) {
        let ip = key(ip);
        if self.trusted.len() >= MAX_TRUSTED && !self.trusted.contains_key(&ip) {
            self.trusted.retain(|_, until| now < *until);
            if self.trusted.len() >= MAX_TRUSTED
                && let Some(stalest) = self
                    .trusted
                    .iter()
                    .min_by_key(|(_, u)| **u)
                    .map(|(k, _)| *k)
            {
                self.trusted.remove(&stalest);
            }
        }
        self.trusted.insert(ip, now + TRUST_KEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret2"));
        assert!(!ct_eq(b"secret", b"secre"));
        assert!(!ct_eq(b"secret", b""));
        assert!(!ct_eq(b"", b"x"));
        // A guess that is the secret followed by zero bytes is not the secret.
        assert!(!ct_eq(b"ab", b"ab\0\0"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn user_file() {
        let u = parse_users("# comment\nalice s3cret 2\n\nbob t0ken # trailing\n").unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].name, "alice");
        assert_eq!(u[0].max_sessions, Some(2));
        assert_eq!(u[1].max_sessions, None);
        let u = parse_users("carol c4 - nobody\ndave d4 3 daemon\n").unwrap();
        assert_eq!(u[0].max_sessions, None, "- is no limit of its own");
        assert_eq!(u[0].unix_user, Some(("nobody".to_string(), 1)));
        assert_eq!(u[1].max_sessions, Some(3));
        assert_eq!(u[1].unix_user, Some(("daemon".to_string(), 2)));
        assert!(u[0].account.is_none(), "parsing looks nobody up");
        for bad in [
            "alice",
            "alice tok 0",
            "alice tok 1 root extra",
            "alice tok x",
            "a/b tok",
        ] {
            let e = parse_users(bad).unwrap_err();
            assert!(!e.contains("tok"), "errors must not echo tokens: {e}");
        }
    }

    fn file(mode: u32, owner: u32) -> TokenFile<'static> {
        TokenFile {
            path: Path::new("/etc/keepty/users"),
            mode,
            owner,
        }
    }

    #[test]
    fn accounts_are_looked_up_and_strangers_refused() {
        let mut u = parse_users("a t1 - root\nb t2\n").unwrap();
        resolve_accounts(&mut u, 0).unwrap();
        assert_eq!(u[0].account.as_ref().map(|a| a.uid), Some(0));
        assert!(u[1].account.is_none());
        let mut u = parse_users("a t1 - keepty-no-such-user\n").unwrap();
        let e = resolve_accounts(&mut u, 0).unwrap_err();
        assert!(e.contains("line 1") && e.contains("does not exist"), "{e}");
        assert!(
            !e.contains("keepty-no-such-user"),
            "a swapped line would log a token: {e}"
        );
        // Not root: another account is refused, one's own is fine.
        let mut u = parse_users("a t1 - root\n").unwrap();
        let e = resolve_accounts(&mut u, 1000).unwrap_err();
        assert!(e.contains("not root") && e.contains("uid 1000"), "{e}");
    }

    #[test]
    fn token_files_must_be_private_once_sessions_run_as_others() {
        let mut other = parse_users("a t1\n").unwrap();
        other[0].account = Some(Rc::new(Account {
            name: "alice".into(),
            uid: 1001,
            gid: 1001,
            groups: vec![1001],
            home: "/home/alice".into(),
            shell: "/bin/sh".into(),
        }));
        assert!(check_private(&other, &[file(0o600, 0)], 0).is_ok());
        let e = check_private(&other, &[file(0o600, 0), file(0o640, 0)], 0).unwrap_err();
        assert!(e.contains("mode 640") && e.contains("chmod 600"), "{e}");
        let e = check_private(&other, &[file(0o600, 1001)], 0).unwrap_err();
        assert!(e.contains("belongs to unix user alice"), "{e}");
        // Without other accounts a loose mode stays a warning (read_token_file's).
        let plain = parse_users("a t1\n").unwrap();
        assert!(check_private(&plain, &[file(0o644, 0)], 0).is_ok());
    }

    #[test]
    fn lookup() {
        let t = Tokens {
            users: Some(parse_users("alice aaa\nbob bbb 3").unwrap()),
            admins: Some(parse_admins("root-token\n# x\n")),
        };
        assert_eq!(t.user(b"bbb").map(|u| u.name.as_str()), Some("bob"));
        assert!(t.user(b"ccc").is_none());
        assert!(t.is_admin(b"root-token"));
        assert!(!t.is_admin(b"aaa"));
        assert!(Tokens::default().user(b"aaa").is_none());
        assert!(!Tokens::default().is_admin(b"root-token"));
    }

    #[test]
    fn failures_block_then_expire() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        let mut l = FailureLimiter::default();
        for i in 0..MAX_FAILURES - 1 {
            assert!(!l.fail(ip, t0 + Duration::from_secs(u64::from(i))));
        }
        assert!(!l.blocked(ip, t0 + Duration::from_secs(20)));
        assert!(l.fail(ip, t0 + Duration::from_secs(20)));
        assert!(l.blocked(ip, t0 + Duration::from_secs(70)));
        assert!(!l.blocked(other, t0 + Duration::from_secs(21)));
        assert!(!l.blocked(ip, t0 + Duration::from_secs(81)));
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::default();
        for i in 0..MAX_FAILURES {
            let ip: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            l.fail(ip, t0);
        }
        assert!(l.blocked("2001:db8:1:2:dead:beef::1".parse().unwrap(), t0));
        assert!(!l.blocked("2001:db8:1:3::1".parse().unwrap(), t0));
    }

    #[test]
    fn the_global_budget_caps_many_addresses_but_spares_known_ones() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::default();
        let operator: IpAddr = "192.168.1.10".parse().unwrap();
        let newcomer: IpAddr = "192.168.1.11".parse().unwrap();
        l.succeed(operator, t0);
        // Each address stays under its own budget; together they spend the global one.
        let per = MAX_FAILURES - 1;
        let mut n = 0;
        'outer: for a in 0..=255u8 {
            for _ in 0..per {
                if n == GLOBAL_FAILURES {
                    break 'outer;
                }
                l.fail(IpAddr::from([10, 0, 0, a]), t0);
                n += 1;
            }
        }
        assert!(
            l.blocked("10.0.1.1".parse().unwrap(), t0),
            "a fresh address"
        );
        assert!(l.blocked(newcomer, t0), "a device not seen before");
        assert!(!l.blocked(operator, t0), "the operator's known address");
        // The known address still has its own budget, not an unlimited one.
        for _ in 0..MAX_FAILURES {
            l.fail(operator, t0);
        }
        assert!(l.blocked(operator, t0));
        // The global block ends with its window.
        let later = t0 + FAILURE_WINDOW;
        assert!(!l.blocked(newcomer, later));
        // Trust is bounded in count and in time.
        for a in 0..=255u8 {
            l.succeed(IpAddr::from([172, 16, 0, a]), t0);
        }
        assert!(l.trusted.len() <= MAX_TRUSTED);
    }

    #[test]
    fn the_limiter_crosses_an_upgrade_whole() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            l.fail(a, t0);
        }
        l.succeed(b, t0);
        let t1 = t0 + Duration::from_secs(5);
        let snap = l.snapshot(t1);
        let t2 = t1 + Duration::from_secs(1000);
        let mut back = FailureLimiter::default();
        back.restore(&snap, t2);
        assert_eq!(
            back.snapshot(t2),
            snap,
            "every part, with the same ages and time left"
        );
        assert!(back.blocked(a, t2));
        assert!(back.known(key(b), t2));
    }
}
