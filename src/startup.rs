//! What is decided once, before the server listens: the default memory cap for this machine,
//! and the settings refused outright because the server could never do its job with them
//! (no request answered, no session created, every session's program missing). Each would
//! otherwise start fine and then fail every client, which on a router nobody is watching
//! looks like keepty being broken; a clear message and exit 2 at startup says what to fix.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::limits::{self, HTTP_RESERVE, WS_RESERVE};

/// The machine's RAM, bytes: `MemTotal` of /proc/meminfo; None where there is none. A u64:
/// on a 32-bit target a box with 4 GiB or more (an 8 GB Pi 4 on a 32-bit OS) overflows usize.
pub fn mem_total() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&meminfo)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The default `--max-memory` on this machine ([`limits::default_max_memory`] of its RAM).
pub fn machine_max_memory() -> usize {
    limits::default_max_memory(mem_total())
}

/// The default `--max-upload` on this machine ([`limits::default_max_upload`] of its RAM).
pub fn machine_max_upload() -> u64 {
    limits::default_max_upload(mem_total())
}

/// The startup line that says what upload cap is in force, and whether it is the default.
pub fn upload_line(cfg: &Config) -> String {
    let cap = size(usize::try_from(cfg.max_upload).unwrap_or(usize::MAX));
    if cfg.max_upload == machine_max_upload() {
        format!(
            "upload cap {cap} (the default here: a quarter of RAM, within 1M..1G; set --max-upload to change it)"
        )
    } else {
        format!("upload cap {cap} (--max-upload)")
    }
}

/// The startup line that says what memory cap is in force and, when it is the default, how
/// it follows from the machine.
pub fn memory_line(cfg: &Config) -> String {
    let cap = size(cfg.max_memory);
    let total = mem_total();
    if cfg.max_memory == limits::default_max_memory(total) {
        let how = match total {
            Some(t) => format!("a quarter of {} RAM, within 4M..64M", size64(t)),
            None => "RAM unknown".to_string(),
        };
        format!("memory cap {cap} (the default here: {how}; set --max-memory to change it)")
    } else {
        format!("memory cap {cap} (--max-memory)")
    }
}

/// A size the way the options take it: `64M`, `1.5M`, `300K`, `17` bytes.
fn size(n: usize) -> String {
    size64(n as u64)
}

/// [`size`] of a u64 (the machine's RAM, which a 32-bit usize may not hold).
fn size64(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M", n >> 20),
        n if n >= 1 << 20 => {
            // Tenths of a MiB, rounded half to even as `{:.1}` of the float would, in integers:
            // a float here linked core's float formatting (8 KB) for this one line.
            let (q, r) = ((n * 10) >> 20, (n * 10) & ((1 << 20) - 1));
            let q = q + u64::from(r > 1 << 19 || (r == 1 << 19 && q % 2 == 1));
            format!("{}.{}M", q / 10, q % 10)
        }
        n if n >= 1 << 10 => format!("{}K", n.div_ceil(1 << 10)),
        n => n.to_string(),
    }
}

/// Why `cfg` must not start, if it must not: every setting that would leave the server up
/// but useless. `path` is the `PATH` the sessions' programs are looked up in (the server's).
pub fn check(cfg: &Config, path: Option<&OsStr>) -> Result<(), String> {
    check_times(cfg)?;
    check_memory(cfg)?;
    check_command(&cfg.command, path)
}

/// The shortest `--ttl`: a reloading page or a phone waking up must find its session still
/// there, and that takes longer than a second. A TTL of zero reaped a session half a
/// second after a reload (issue 14).
const MIN_TTL: Duration = Duration::from_secs(1);

fn check_times(cfg: &Config) -> Result<(), String> {
    if cfg.ttl < MIN_TTL {
        return Err(format!(
            "--ttl {:?} would end every session the moment its page reloads; use 1s or more (default 12h)",
            cfg.ttl
        ));
    }
    if cfg.header_timeout.is_zero() {
        return Err(
            "--header-timeout 0 would drop every connection before its request; use 1s or more (default 10s)"
                .into(),
        );
    }
    Ok(())
}

/// What [`limits::Limits::admit`] needs at the least: one HTTP connection to answer anything
/// (`/healthz` included), and a WebSocket with its session to create one. Tombstones start at
/// zero and a session's charge does not depend on what came before, so if these two fit
/// once they fit whenever the server is empty.
fn check_memory(cfg: &Config) -> Result<(), String> {
    let l = cfg.limits(cfg.tls_requested());
    let request = HTTP_RESERVE + l.conn_overhead;
    if request > l.max_memory {
        return Err(format!(
            "--max-memory {} cannot hold one request ({} with its buffers): nothing would be answered, not even /healthz; use at least {}",
            size(l.max_memory),
            size(request),
            size(WS_RESERVE + l.conn_overhead + l.session_reserve())
        ));
    }
    let session = WS_RESERVE + l.conn_overhead + l.session_reserve();
    if session > l.max_memory {
        return Err(format!(
            "--max-memory {} cannot hold one session: --scrollback {} and its input queue take {}, its WebSocket {}; raise --max-memory to at least {} or lower --scrollback",
            size(l.max_memory),
            size(l.scrollback),
            size(l.session_reserve()),
            size(WS_RESERVE + l.conn_overhead),
            size(session)
        ));
    }
    Ok(())
}

/// execvp's search path when `PATH` is unset: glibc's `_CS_PATH`, musl's built-in default.
const DEFAULT_PATH: &str = if cfg!(target_env = "musl") {
    "/usr/local/bin:/bin:/usr/bin"
} else {
    "/bin:/usr/bin"
};

/// The program each session runs must exist and be executable, found the way execvp finds it:
/// a name with a slash as it is, any other on `path` (an empty entry is the current directory).
fn check_command(command: &[String], path: Option<&OsStr>) -> Result<(), String> {
    let Some(program) = command.first() else {
        return Err("no command to run".into());
    };
    if program.is_empty() {
        return Err("the command is an empty string".into());
    }
    if program.contains('/') {
        return if is_executable(Path::new(program)) {
            Ok(())
        } else {
            Err(format!(
                "the command {program} is not an executable file: every session would fail to start"
            ))
        };
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    if std::env::split_paths(path).any(|dir| {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        is_executable(&dir.join(program))
    }) {
        return Ok(());
    }
    Err(format!(
        "the command {program} is not found on PATH ({}): every session would fail to start; give its full path or fix PATH",
        path.to_string_lossy()
    ))
}

/// A regular file (after symlinks) with an execute bit. Like execvp, this does not prove exec
/// will succeed (a bad interpreter line, a foreign architecture), only that it can be tried.
fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, parse_args};

    fn cfg(args: &[&str]) -> Config {
        match parse_args(args.iter().map(|s| s.to_string())) {
            Ok(Cli::Run(c)) => *c,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn refused(args: &[&str]) -> String {
        check(&cfg(args), Some(OsStr::new("/usr/bin:/bin")))
            .expect_err(&format!("{args:?} was not refused"))
    }

    #[test]
    fn sizes_as_the_options_take_them() {
        assert_eq!(size(64 << 20), "64M");
        assert_eq!(size(300 << 10), "300K");
        assert_eq!(size(17), "17");
        // Tenths agree with the float formatting they replace, ties (1.25M) included.
        let mut n = 1usize << 20;
        while n < 3 << 30 {
            let float = format!("{:.1}M", n as f64 / f64::from(1 << 20));
            if !n.is_multiple_of(1 << 20) {
                assert_eq!(size(n), float, "{n}");
            }
            n += 40_961;
        }
        for n in [
            5 << 18,
            7 << 18,
            (1 << 20) + 1,
            (2 << 20) - 1,
            3 * (1 << 19),
        ] {
            let float = format!("{:.1}M", n as f64 / f64::from(1 << 20));
            assert_eq!(size(n), float, "{n}");
        }
    }

    #[test]
    fn meminfo_total() {
        let meminfo = "MemTotal:         125204 kB\nMemFree:           10000 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(125204 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB\n"), None);
        // 23.5 GiB (this machine): more than a 32-bit usize holds, still a size.
        let big = parse_mem_total("MemTotal:       24684084 kB\n");
        assert_eq!(big, Some(24_684_084 * 1024));
        assert_eq!(limits::default_max_memory(big), 64 << 20);
    }

    #[test]
    fn the_defaults_start() {
        assert_eq!(check(&cfg(&["--", "/bin/sh"]), None), Ok(()));
        assert_eq!(check(&cfg(&["--", "sh", "-c", "true"]), None), Ok(()));
        // The smallest default cap holds a session at the default scrollback.
        let small = Config {
            max_memory: limits::default_max_memory(Some(1 << 20)),
            command: vec!["/bin/sh".into()],
            ..Config::default()
        };
        assert_eq!(check(&small, None), Ok(()));
    }

    #[test]
    fn a_cap_below_one_request_is_refused() {
        let e = refused(&["--max-memory", "1K", "--", "/bin/sh"]);
        assert!(e.contains("not even /healthz"), "{e}");
        assert!(e.starts_with("--max-memory 1K "), "{e}");
    }

    #[test]
    fn a_cap_below_one_session_is_refused_naming_both_options() {
        let e = refused(&[
            "--scrollback",
            "64M",
            "--max-memory",
            "64M",
            "--",
            "/bin/sh",
        ]);
        assert!(
            e.contains("--scrollback 64M") && e.contains("raise --max-memory"),
            "{e}"
        );
        // Exactly one session and its client fit: that starts.
        let l = cfg(&["--", "/bin/sh"]).limits(false);
        let exact = (WS_RESERVE + l.session_reserve()).to_string();
        let c = cfg(&["--max-memory", &exact, "--", "/bin/sh"]);
        assert_eq!(check(&c, None), Ok(()));
        let one_less = (WS_RESERVE + l.session_reserve() - 1).to_string();
        refused(&["--max-memory", &one_less, "--", "/bin/sh"]);
    }

    #[test]
    fn zero_times_are_refused() {
        assert!(refused(&["--ttl", "0", "--", "/bin/sh"]).starts_with("--ttl 0ns "));
        refused(&["--ttl", "999ms", "--", "/bin/sh"]);
        assert_eq!(check(&cfg(&["--ttl", "1s", "--", "/bin/sh"]), None), Ok(()));
        refused(&["--header-timeout", "0", "--", "/bin/sh"]);
    }

    #[test]
    fn commands_are_found_like_execvp() {
        let e = refused(&["--", "keepty-no-such-program"]);
        assert!(
            e.contains("keepty-no-such-program is not found on PATH (/usr/bin:/bin)"),
            "{e}"
        );
        let e = refused(&["--", "/nonexistent/sh"]);
        assert!(e.contains("not an executable file"), "{e}");
        // A directory and a file without an execute bit are not programs.
        refused(&["--", "/tmp"]);
        let plain = std::env::temp_dir().join(format!("keepty-noexec-{}", std::process::id()));
        std::fs::write(&plain, "echo hi\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = refused(&["--", plain.to_str().unwrap()]);
        let _ = std::fs::remove_file(&plain);
        assert!(e.contains("not an executable file"), "{e}");
        // Found through PATH, and not found when PATH leaves its directory out.
        let sh = cfg(&["--", "sh"]);
        assert_eq!(check(&sh, Some(OsStr::new("/nonexistent:/bin"))), Ok(()));
        assert!(check(&sh, Some(OsStr::new("/nonexistent"))).is_err());
        // Unset PATH: the libc default, which has /bin.
        assert_eq!(check(&sh, None), Ok(()));
        assert!(check_command(&[String::new()], None).is_err());
        assert!(check_command(&[], None).is_err());
    }

    #[test]
    fn sizes_read_like_the_options() {
        assert_eq!(size(64 << 20), "64M");
        assert_eq!(size(3 << 19), "1.5M");
        assert_eq!(size(10 << 10), "10K");
        assert_eq!(size(1000), "1000");
    }
}
