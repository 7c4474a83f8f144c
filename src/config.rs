//! Command line -> [`Config`]: options, sizes, durations, the program to run. The caps and
//! their defaults are in [`crate::limits`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::limits::{self, DetachedOutput, Limits};

/// What a second attach to an attached session does (SPEC section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachPolicy {
    /// The newcomer is refused with `attached_elsewhere`.
    Reject,
    /// The old client gets `taken_over`; the newcomer attaches.
    Handoff,
    /// The newcomer attaches as a read-only viewer.
    Multi,
}

impl AttachPolicy {
    /// The name used on the command line and in the `attached` message.
    pub fn name(self) -> &'static str {
        match self {
            AttachPolicy::Reject => "reject",
            AttachPolicy::Handoff => "handoff",
            AttachPolicy::Multi => "multi",
        }
    }
}

/// The server's whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen. Default `127.0.0.1:7700`.
    pub listen: SocketAddr,
    /// Idle TTL after which a session is reaped. Default 12 h.
    pub ttl: Duration,
    /// Default `handoff`.
    pub attach_policy: AttachPolicy,
    /// Ring size per session, bytes. Default 256 KiB.
    pub scrollback: usize,
    /// Sessions alive at once. Default 32.
    pub max_sessions: usize,
    /// Open connections (HTTP + WebSocket) at once. Default 128.
    pub max_clients: usize,
    /// Hard cap on ring buffers + connection buffers. Default a quarter of the machine's RAM,
    /// within 4..64 MiB ([`limits::default_max_memory`]).
    pub max_memory: usize,
    /// Largest file upload, bytes (`--max-upload`). Default a quarter of the machine's RAM,
    /// within 1M..1G ([`limits::default_max_upload`]): routers keep /tmp in RAM.
    pub max_upload: u64,
    /// How long a file transfer may go without progress in either direction
    /// (`--transfer-timeout`). Default 30 s.
    pub transfer_timeout: Duration,
    /// User token file.
    pub token_file: Option<PathBuf>,
    /// Admin token file.
    pub admin_token_file: Option<PathBuf>,
    /// Extra allowed `Origin` values (exact match).
    pub allow_origins: Vec<String>,
    /// Extra allowed `Host` names.
    pub allow_hosts: Vec<String>,
    /// Reverse proxies whose forwarding headers name the client (`--trusted-proxy`,
    /// repeatable; extension).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Total time a connection gets to send its request head. Default 10 s.
    pub header_timeout: Duration,
    /// Connections without a complete request yet. Default 32.
    pub max_pending: usize,
    /// How long a kept-alive connection may wait for its next request. Default 5 s
    /// (`--keepalive-timeout`, extension).
    pub keepalive_timeout: Duration,
    /// How many of `--max-clients` one address may hold; default a quarter, at least 32
    /// (`--max-clients-per-address`, extension).
    pub max_per_address: Option<usize>,
    /// How often clients are pinged. A client silent for 3 intervals, or one that takes none
    /// of its output for 3 intervals, is closed. Default 20 s (extension: behind a proxy with
    /// a shorter idle timeout, ping more often).
    pub ping_interval: Duration,
    /// Default `drop-oldest`.
    pub detached_output: DetachedOutput,
    /// Allows a non-loopback listen address without tokens.
    pub insecure_no_auth: bool,
    /// TLS certificate chain, PEM (`--tls-cert`, feature `tls`).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key, PEM (`--tls-key`, feature `tls`).
    pub tls_key: Option<PathBuf>,
    /// Make (once) and use a self-signed certificate (`--tls-self-signed`, feature `tls`).
    pub tls_self_signed: bool,
    /// Where the self-signed pair is kept (`--tls-dir`); default `$XDG_STATE_HOME/keepty`,
    /// else `~/.local/state/keepty`.
    pub tls_dir: Option<PathBuf>,
    /// Program and arguments each session runs.
    pub command: Vec<String>,
    /// Hidden (`--restore-fd N`): take over from the state an upgrade left in fd N.
    pub restore_fd: Option<i32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            ttl: limits::DEFAULT_TTL,
            attach_policy: AttachPolicy::Handoff,
            scrollback: limits::DEFAULT_SCROLLBACK,
            max_sessions: limits::DEFAULT_MAX_SESSIONS,
            max_clients: limits::DEFAULT_MAX_CLIENTS,
            max_memory: crate::startup::machine_max_memory(),
            max_upload: crate::startup::machine_max_upload(),
            transfer_timeout: limits::DEFAULT_TRANSFER_TIMEOUT,
            token_file: None,
            admin_token_file: None,
            allow_origins: Vec::new(),
            allow_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            header_timeout: limits::DEFAULT_HEADER_TIMEOUT,
            max_pending: limits::DEFAULT_MAX_PENDING,
            keepalive_timeout: limits::DEFAULT_KEEPALIVE_TIMEOUT,
            max_per_address: None,
            ping_interval: limits::DEFAULT_PING_INTERVAL,
            detached_output: DetachedOutput::DropOldest,
            insecure_no_auth: false,
            tls_cert: None,
            tls_key: None,
            tls_self_signed: false,
            tls_dir: None,
            command: Vec::new(),
            restore_fd: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Cli {
    /// Run the server.
    Run(Box<Config>),
    /// Print help and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
    /// A client subcommand (`ls`, `attach`, `new`, `drop`, `drop-all`, `send`) and its arguments,
    /// run by [`crate::cli`] against a running keepty.
    Client(String, Vec<String>),
}

/// The subcommands: a first argument equal to one of these is never a server option or a
/// COMMAND (a program to run goes after `--`).
pub const SUBCOMMANDS: [&str; 6] = ["ls", "attach", "new", "drop", "drop-all", "send"];

/// Options that take a value and may be given more than once; every other valued option may
/// appear once, so a repeated `--listen` is a mistake rather than last-wins.
const REPEATABLE: [&str; 3] = ["--allow-origin", "--allow-host", "--trusted-proxy"];

/// Every option that takes a value: a name not here (nor a flag) is unknown, whatever follows.
const VALUED: [&str; 24] = [
    "--listen",
    "--ttl",
    "--header-timeout",
    "--ping-interval",
    "--attach-policy",
    "--detached-output",
    "--scrollback",
    "--max-memory",
    "--max-upload",
    "--transfer-timeout",
    "--max-sessions",
    "--max-clients",
    "--max-pending",
    "--token-file",
    "--admin-token-file",
    "--allow-origin",
    "--allow-host",
    "--tls-cert",
    "--tls-key",
    "--tls-dir",
    "--trusted-proxy",
    "--keepalive-timeout",
    "--max-clients-per-address",
    // Hidden: only an upgrade in place passes it (docs/upgrade.md).
    "--restore-fd",
];

/// A command-line mistake; printed with the usage hint, exit code 2.
#[derive(Debug, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `--help` text.
pub const USAGE: &str = "\
keepty: a persistent browser terminal

Usage: keepty [OPTIONS] [-- COMMAND [ARGS...]]   serve
       keepty SUBCOMMAND [ARGS...]              talk to a running keepty

Subcommands (keepty SUBCOMMAND --help for theirs):
  ls [--all] [--json]           list your sessions (--all: everyone's, admin token)
  attach [ID]                   attach this terminal (no ID: the most recent detached one)
  new [NAME]                    create a session and attach
  drop ID                       end one session (admin)
  drop-all                      end every session (admin)
  send FILE                     inside a session: the page offers FILE for download

Options:
  --listen ADDR:PORT            where to listen (default 127.0.0.1:7700; port 0 picks one)
  --ttl DURATION                reap sessions idle this long (default 12h)
  --attach-policy POLICY        reject | handoff | multi (default handoff)
  --scrollback SIZE             output kept per session (default 256K)
  --max-sessions N              sessions alive at once (default 32)
  --max-clients N               open connections at once (default 128)
  --max-memory SIZE             cap on rings + connection buffers
                                (default a quarter of RAM, within 4M..64M)
  --max-upload SIZE             largest file upload (default a quarter of RAM, within 1M..1G)
  --transfer-timeout DURATION   end a file transfer without progress this long (default 30s)
  --token-file PATH             user tokens: NAME TOKEN [MAX_SESSIONS] per line
  --admin-token-file PATH       admin tokens, one per line
  --allow-origin ORIGIN         extra allowed Origin (repeatable)
  --allow-host NAME             extra allowed Host name (repeatable)
  --trusted-proxy ADDR          a reverse proxy whose X-Forwarded-For/Forwarded names the client (repeatable)
  --header-timeout DURATION     time to send a request head (default 10s)
  --max-pending N               connections still sending a request head (default 32)
  --max-clients-per-address N   connections one address may hold (default max-clients/4, at least 32)
  --keepalive-timeout DURATION  close a kept-alive connection idle this long (default 5s)
  --detached-output MODE        drop-oldest | block (default drop-oldest)
  --ping-interval DURATION      ping clients this often; 3 silent intervals close one (default 20s)
  --insecure-no-auth            allow a non-loopback --listen without tokens
  --tls-cert PATH               serve HTTPS with this PEM certificate chain (needs --tls-key)
  --tls-key PATH                the PEM private key for --tls-cert
  --tls-self-signed             make a certificate on first start, keep and reuse it
  --tls-dir DIR                 where --tls-self-signed keeps it
                                (default $XDG_STATE_HOME/keepty, else ~/.local/state/keepty)
  --help, --version

COMMAND defaults to $SHELL, else /bin/sh; it always follows `--`. Durations: ms, s, m, h, d.
Sizes: K, M, G (powers of 1024).
";

/// Parses `12h`, `10s`, `250ms`, `3d`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m, h, d)")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// Parses `256K`, `64M`, `1G`, or a bare byte count.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => return Err(format!("bad size unit in {s:?} (use K, M, G)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

fn parse_count(opt: &str, s: &str) -> Result<usize, CliError> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(CliError(format!(
            "{opt} needs a positive number, got {s:?}"
        ))),
    }
}

/// Parses the arguments after the program name.
///
/// The first argument decides the mode: a [`SUBCOMMANDS`] name makes the rest that
/// subcommand's arguments; otherwise everything up to `--` is an option and everything after
/// it the COMMAND. A bare word before `--` is an error: `keepty bogus` used to run a program
/// called `bogus`, and with subcommands a typo (`keepty attahc`) would have started a server.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, CliError> {
    let mut cfg = Config::default();
    let mut it = args.into_iter().peekable();
    if let Some(first) = it.peek()
        && SUBCOMMANDS.contains(&first.as_str())
    {
        let name = it.next().unwrap_or_default();
        return Ok(Cli::Client(name, it.collect()));
    }
    let mut seen: Vec<String> = Vec::new();
    while let Some(arg) = it.next() {
        if arg == "--" {
            cfg.command = it.by_ref().collect();
            if cfg.command.is_empty() {
                return Err(CliError("-- must be followed by a COMMAND".into()));
            }
            break;
        }
        if !arg.starts_with('-') {
            let hint = if seen.is_empty() {
                format!(
                    "unknown subcommand {arg:?} (subcommands: {}; a program to run goes after --)",
                    SUBCOMMANDS.join(", ")
                )
            } else {
                format!("unexpected argument {arg:?} (a program to run goes after --)")
            };
            return Err(CliError(hint));
        }
        // Accept both `--opt value` and `--opt=value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let flag = |inline: &Option<String>| -> Result<(), CliError> {
            match inline {
                Some(_) => Err(CliError(format!("{name} takes no value"))),
                None => Ok(()),
            }
        };
        let once = |seen: &mut Vec<String>| -> Result<(), CliError> {
            if !REPEATABLE.contains(&name.as_str()) && seen.contains(&name) {
                return Err(CliError(format!("{name} given twice")));
            }
            seen.push(name.clone());
            Ok(())
        };
        match name.as_str() {
            "--help" | "-h" => return Ok(Cli::Help),
            "--version" | "-V" => return Ok(Cli::Version),
            "--insecure-no-auth" => {
                flag(&inline)?;
                once(&mut seen)?;
                cfg.insecure_no_auth = true;
                continue;
            }
            "--tls-self-signed" => {
                flag(&inline)?;
                once(&mut seen)?;
                cfg.tls_self_signed = true;
                continue;
            }
            n if !VALUED.contains(&n) => {
                return Err(CliError(format!("unknown option {name}")));
            }
            _ => {}
        }
        once(&mut seen)?;
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| CliError(format!("{name} needs a value")))?,
        };
        let bad = |e: String| CliError(format!("{name}: {e}"));
        match name.as_str() {
            "--listen" => {
                cfg.listen = value
                    .parse()
                    .map_err(|_| bad(format!("expected ADDR:PORT, got {value:?}")))?
            }
            "--ttl" => cfg.ttl = parse_duration(&value).map_err(bad)?,
            "--header-timeout" => cfg.header_timeout = parse_duration(&value).map_err(bad)?,
            "--keepalive-timeout" => cfg.keepalive_timeout = parse_duration(&value).map_err(bad)?,
            "--max-clients-per-address" => cfg.max_per_address = Some(parse_count(&name, &value)?),
            "--ping-interval" => {
                cfg.ping_interval = parse_duration(&value).map_err(bad)?;
                if cfg.ping_interval < Duration::from_millis(100) {
                    return Err(bad("must be at least 100ms".into()));
                }
            }
            "--attach-policy" => {
                cfg.attach_policy = match value.as_str() {
                    "reject" => AttachPolicy::Reject,
                    "handoff" => AttachPolicy::Handoff,
                    "multi" => AttachPolicy::Multi,
                    _ => return Err(bad("expected reject, handoff or multi".into())),
                }
            }
            "--detached-output" => {
                cfg.detached_output = match value.as_str() {
                    "drop-oldest" => DetachedOutput::DropOldest,
                    "block" => DetachedOutput::Block,
                    _ => return Err(bad("expected drop-oldest or block".into())),
                }
            }
            "--scrollback" => {
                cfg.scrollback = parse_size(&value).map_err(bad)?;
                if cfg.scrollback < 1024 {
                    return Err(bad("must be at least 1K".into()));
                }
            }
            "--max-memory" => cfg.max_memory = parse_size(&value).map_err(bad)?,
            "--max-upload" => cfg.max_upload = parse_size(&value).map_err(bad)? as u64,
            "--transfer-timeout" => cfg.transfer_timeout = parse_duration(&value).map_err(bad)?,
            "--max-sessions" => cfg.max_sessions = parse_count(&name, &value)?,
            "--max-clients" => cfg.max_clients = parse_count(&name, &value)?,
            "--max-pending" => cfg.max_pending = parse_count(&name, &value)?,
            "--token-file" => cfg.token_file = Some(PathBuf::from(value)),
            "--admin-token-file" => cfg.admin_token_file = Some(PathBuf::from(value)),
            "--allow-origin" => cfg.allow_origins.push(value),
            "--allow-host" => cfg.allow_hosts.push(value.to_ascii_lowercase()),
            "--trusted-proxy" => cfg.trusted_proxies.push(
                value
                    .parse()
                    .map_err(|_| bad(format!("expected an IP address, got {value:?}")))?,
            ),
            "--tls-cert" => cfg.tls_cert = Some(PathBuf::from(value)),
            "--tls-key" => cfg.tls_key = Some(PathBuf::from(value)),
            "--tls-dir" => cfg.tls_dir = Some(PathBuf::from(value)),
            "--restore-fd" => {
                cfg.restore_fd = Some(value.parse().map_err(|_| bad("expected an fd".into()))?)
            }
            _ => return Err(CliError(format!("unknown option {name}"))),
        }
    }
    if cfg.tls_requested() {
        if !cfg!(feature = "tls") {
            return Err(CliError(
                "this keepty was built without TLS (cargo feature `tls`)".into(),
            ));
        }
        if cfg.tls_self_signed && (cfg.tls_cert.is_some() || cfg.tls_key.is_some()) {
            return Err(CliError(
                "--tls-self-signed and --tls-cert/--tls-key exclude each other".into(),
            ));
        }
        if !cfg.tls_self_signed && (cfg.tls_cert.is_none() || cfg.tls_key.is_none()) {
            return Err(CliError("--tls-cert and --tls-key go together".into()));
        }
    }
    if cfg.command.is_empty() {
        let shell = std::env::var("SHELL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/bin/sh".to_string());
        cfg.command.push(shell);
    }
    Ok(Cli::Run(Box::new(cfg)))
}

impl Config {
    /// The caps this configuration sets; `tls` when connections carry rustls state.
    pub fn limits(&self, tls: bool) -> Limits {
        #[cfg(feature = "tls")]
        let conn_overhead = if tls { limits::TLS_RESERVE } else { 0 };
        #[cfg(not(feature = "tls"))]
        let conn_overhead = {
            let _ = tls;
            0
        };
        Limits {
            max_sessions: self.max_sessions,
            max_clients: self.max_clients,
            max_pending: self.max_pending,
            max_memory: self.max_memory,
            scrollback: self.scrollback,
            ttl: self.ttl,
            header_timeout: self.header_timeout,
            keepalive_timeout: self.keepalive_timeout,
            max_per_address: self.max_per_address,
            ping_interval: self.ping_interval,
            detached_output: self.detached_output,
            max_upload: self.max_upload,
            transfer_timeout: self.transfer_timeout,
            conn_overhead,
        }
    }

    /// True when any TLS option was given (whether this build has TLS or not).
    pub fn tls_requested(&self) -> bool {
        self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_self_signed
    }

    /// The one-time warning for plain HTTP off loopback: tokens cross the network in clear.
    pub fn transport_warning(&self) -> Option<String> {
        if self.tls_requested() || self.listen.ip().is_loopback() || self.token_file.is_none() {
            return None;
        }
        Some(format!(
            "WARNING: serving plain HTTP on {}: tokens and everything typed cross the network unencrypted; use --tls-cert/--tls-key or --tls-self-signed, or a TLS proxy",
            self.listen
        ))
    }

    /// Why this configuration must not start, if it must not: a non-loopback listen address
    /// without tokens would hand a shell to the whole network.
    pub fn refusal(&self) -> Option<String> {
        if !self.listen.ip().is_loopback() && self.token_file.is_none() && !self.insecure_no_auth {
            return Some(format!(
                "refusing to listen on {} without --token-file: anyone who can reach it would get a shell (use --insecure-no-auth to override)",
                self.listen
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, CliError> {
        match parse_args(args.iter().map(|s| s.to_string()))? {
            Cli::Run(c) => Ok(*c),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172800)));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256K"), Ok(262144));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("1T").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn defaults_and_command() {
        let c = run(&["--", "/bin/echo", "hi"]).unwrap();
        assert_eq!(c.listen.port(), 7700);
        assert_eq!(c.scrollback, 256 << 10);
        assert_eq!(c.command, vec!["/bin/echo", "hi"]);
        assert_eq!(c.attach_policy, AttachPolicy::Handoff);
        assert_eq!(c.detached_output, DetachedOutput::DropOldest);
    }

    #[test]
    fn transfer_options() {
        let c = run(&["--max-upload", "5M", "--transfer-timeout", "2s"]).unwrap();
        assert_eq!(c.max_upload, 5 << 20);
        assert_eq!(c.transfer_timeout, Duration::from_secs(2));
        let l = c.limits(false);
        assert_eq!(
            (l.max_upload, l.transfer_timeout),
            (5 << 20, Duration::from_secs(2))
        );
        let d = run(&[]).unwrap();
        assert_eq!(d.transfer_timeout, Duration::from_secs(30));
        assert!(
            (1 << 20..=1 << 30).contains(&d.max_upload),
            "{}",
            d.max_upload
        );
        assert!(run(&["--max-upload", "lots"]).is_err());
        assert!(
            run(&["--max-upload", "1M", "--max-upload", "2M"]).is_err(),
            "once"
        );
    }

    #[test]
    fn options() {
        let c = run(&[
            "--listen=127.0.0.1:0",
            "--scrollback",
            "64K",
            "--detached-output",
            "block",
            "--max-clients",
            "5",
            "--",
            "/bin/cat",
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.scrollback, 65536);
        assert_eq!(c.detached_output, DetachedOutput::Block);
        assert_eq!(c.max_clients, 5);
        assert_eq!(c.command, vec!["/bin/cat"]);
    }

    #[test]
    fn access_options() {
        let c = run(&[
            "--trusted-proxy",
            "127.0.0.1",
            "--trusted-proxy=::1",
            "--keepalive-timeout",
            "2s",
            "--max-clients-per-address",
            "9",
        ])
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.keepalive_timeout, Duration::from_secs(2));
        assert_eq!(c.max_per_address, Some(9));
        let d = run(&[]).unwrap();
        assert_eq!(d.keepalive_timeout, Duration::from_secs(5));
        assert!(d.trusted_proxies.is_empty() && d.max_per_address.is_none());
        assert!(run(&["--trusted-proxy", "proxy.lan"]).is_err());
        assert!(run(&["--trusted-proxy", "10.0.0.0/8"]).is_err());
        assert!(run(&["--max-clients-per-address", "0"]).is_err());
    }

    #[test]
    fn mistakes() {
        assert!(run(&["--bogus"]).is_err());
        assert!(run(&["--listen"]).is_err());
        assert!(run(&["--listen", "nowhere"]).is_err());
        assert!(run(&["--max-clients", "0"]).is_err());
        assert!(run(&["--attach-policy", "share"]).is_err());
        assert!(run(&["--insecure-no-auth=1"]).is_err());
        assert!(run(&["--"]).is_err());
    }

    fn err(args: &[&str]) -> String {
        run(args).unwrap_err().0
    }

    #[test]
    fn unknown_options_are_named_as_such() {
        // Before a value was looked for, so these said "needs a value".
        assert_eq!(err(&["--bogus"]), "unknown option --bogus");
        assert_eq!(err(&["-x"]), "unknown option -x");
        assert_eq!(err(&["--bogus=1"]), "unknown option --bogus");
        assert_eq!(err(&["--listen"]), "--listen needs a value");
    }

    #[test]
    fn single_valued_options_are_given_once() {
        assert_eq!(
            err(&["--listen", "127.0.0.1:1", "--listen=127.0.0.1:2"]),
            "--listen given twice"
        );
        assert_eq!(
            err(&["--insecure-no-auth", "--insecure-no-auth"]),
            "--insecure-no-auth given twice"
        );
        let c = run(&["--allow-host", "a", "--allow-host", "b"]).unwrap();
        assert_eq!(c.allow_hosts, vec!["a", "b"]);
    }

    #[test]
    fn bare_words_are_not_commands() {
        assert!(err(&["bogus"]).starts_with("unknown subcommand \"bogus\""));
        assert!(err(&["--ttl", "1h", "/bin/cat"]).starts_with("unexpected argument \"/bin/cat\""));
        // After `--` anything goes, a subcommand's name included.
        assert_eq!(run(&["--", "ls", "-l"]).unwrap().command, vec!["ls", "-l"]);
    }

    #[test]
    fn subcommands_take_the_rest() {
        match parse_args(["attach", "--listen", "x"].map(String::from)).unwrap() {
            Cli::Client(name, rest) => {
                assert_eq!(name, "attach");
                assert_eq!(rest, vec!["--listen", "x"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn non_loopback_needs_tokens() {
        let c = run(&["--listen", "0.0.0.0:7700"]).unwrap();
        assert!(c.refusal().is_some());
        let c = run(&["--listen", "0.0.0.0:7700", "--insecure-no-auth"]).unwrap();
        assert!(c.refusal().is_none());
        let c = run(&["--listen", "[::1]:7700"]).unwrap();
        assert!(c.refusal().is_none());
    }
}
