//! What each session costs: the memory and CPU of its processes, and the program in its
//! foreground with that program's directory, read from `/proc` on the timer wheel.
//!
//! A session's processes are those whose session id is the session's (its child leads a
//! session of its own, and everything the shell starts stays in it unless it calls `setsid`).
//! Finding them needs every process's `stat`, so a sweep reads `/proc/*/stat` once for all
//! sessions together, in steps of at most [`STEP_BUDGET`] file reads per timer tick, so a box
//! with many processes never stalls a turn of the loop; then it publishes the totals.
//!
//! - `rss_bytes`: the sum of the members' resident sets (field 24 of `stat`, the same count
//!   as `statm`'s second field, which saves a read per process). Pages shared between members
//!   (libc, a forked shell) are counted once per member, as `ps` would add them.
//! - `cpu_ms`: the members' user+system time plus the time of their children that exited and
//!   were waited for (`cutime`, `cstime`), so a finished `make` still counts: it is what the
//!   session has cost since it started, and falls only when a member exits whose parent is
//!   not in the session.
//! - `command`, `cwd`: the terminal's foreground process group (`tcgetpgrp` on the master,
//!   as tmux's `pane_current_command`), its leader's name and directory, or the shell's when
//!   the group's leader is gone.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sessions::table::Table;

/// Files read per timer tick while a sweep is under way.
pub const STEP_BUDGET: usize = 64;
/// Time between the starts of two sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// Time between two steps of one sweep (one timer-wheel slot).
pub const STEP_EVERY: Duration = Duration::from_millis(100);

/// The fields of `/proc/PID/stat` the sampler uses.
#[derive(Debug, PartialEq, Eq)]
pub struct ProcStat<'a> {
    /// The executable's name, at most 15 bytes, as the kernel keeps it.
    pub comm: &'a str,
    /// Process group.
    pub pgrp: i32,
    /// Session id.
    pub session: i32,
    /// User and system time, clock ticks.
    pub utime: u64,
    /// System time, clock ticks.
    pub stime: u64,
    /// Waited-for children's user time, clock ticks.
    pub cutime: u64,
    /// Waited-for children's system time, clock ticks.
    pub cstime: u64,
    /// Resident set, pages.
    pub rss_pages: u64,
}

/// Parses one `/proc/PID/stat` line. The name sits in parentheses and may itself hold spaces
/// and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat<'_>> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?;
    let mut f = text.get(close + 1..)?.split_ascii_whitespace();
    // Fields from 3 (state) on; `nth` counts from the current position.
    let pgrp = f.nth(2)?.parse().ok()?;
    let session = f.next()?.parse().ok()?;
    let utime = f.nth(7)?.parse().ok()?;
    let stime = f.next()?.parse().ok()?;
    // Signed in the kernel's format; never negative in practice.
    let cutime = f.next()?.parse::<i64>().ok()?.max(0) as u64;
    let cstime = f.next()?.parse::<i64>().ok()?.max(0) as u64;
    let rss = f.nth(6)?.parse::<i64>().ok()?.max(0) as u64;
    Some(ProcStat {
        comm,
        pgrp,
        session,
        utime,
        stime,
        cutime,
        cstime,
        rss_pages: rss,
    })
}

/// Parses `/proc/PID/statm`: the resident set in pages (its second field).
pub fn parse_statm_resident(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// What one session costs, as last sampled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// The resident sets of the session's processes, summed.
    pub rss_bytes: u64,
    /// Their user+system time, with their waited-for children's, milliseconds.
    pub cpu_ms: u64,
    /// The foreground program's name ("" until sampled or once the program is gone).
    pub command: String,
    /// The foreground program's working directory ("" when unreadable).
    pub cwd: String,
}

/// One session being swept.
struct Target {
    key: usize,
    generation: u64,
    sid: i32,
    /// The terminal's foreground group when the sweep began.
    fg: Option<i32>,
    pages: u64,
    ticks: u64,
    /// The pid whose name and directory stand for the foreground, and its name.
    shown: Option<(i32, String)>,
    /// How well `shown` stands for the foreground: 3 its leader, 2 a member, 1 the shell.
    shown_rank: u8,
}

enum Phase {
    Idle,
    /// Reading `stat` of `pids[pos..]`.
    Scan,
    /// Reading the directories of `targets[pos..]`.
    Dirs,
}

/// The sampler's state between ticks; every buffer is kept and reused.
pub struct Sampler {
    root: PathBuf,
    /// The path being read, rebuilt in place for each file.
    path: String,
    phase: Phase,
    pids: Vec<i32>,
    targets: Vec<Target>,
    pos: usize,
    buf: Vec<u8>,
    page_size: u64,
    clock_ticks: u64,
    /// Finished usages, by (slot, generation), waiting to be stored.
    done: Vec<((usize, u64), Usage)>,
    /// Files read in the last sweep, for the metrics.
    pub last_sweep_reads: u64,
    reads: u64,
    /// A tick is filed on the timer wheel.
    armed: bool,
}

/// `ROOT/PID/FILE`, written into `buf` (kept between calls, so a sweep allocates no paths).
fn proc_path<'a>(buf: &'a mut String, root: &Path, pid: i32, file: &str) -> &'a Path {
    use std::fmt::Write as _;
    buf.clear();
    let _ = write!(buf, "{}/{pid}/{file}", root.display());
    Path::new(buf.as_str())
}

/// The kernel's page size and clock tick rate, with Linux's usual values if unknown.
fn sysconf(var: nix::unistd::SysconfVar, fallback: u64) -> u64 {
    match nix::unistd::sysconf(var) {
        Ok(Some(v)) if v > 0 => v as u64,
        _ => fallback,
    }
}

impl Sampler {
    /// A sampler of the `/proc` at `root` (a fixture directory in tests and benches).
    pub fn new(root: impl Into<PathBuf>) -> Sampler {
        Sampler {
            root: root.into(),
            path: String::new(),
            phase: Phase::Idle,
            pids: Vec::new(),
            targets: Vec::new(),
            pos: 0,
            buf: vec![0; 1024],
            page_size: sysconf(nix::unistd::SysconfVar::PAGE_SIZE, 4096),
            clock_ticks: sysconf(nix::unistd::SysconfVar::CLK_TCK, 100),
            done: Vec::new(),
            last_sweep_reads: 0,
            reads: 0,
            armed: false,
        }
    }

    /// Starts a sweep over `sessions`: (slot, generation, session id, foreground group).
    pub fn begin(&mut self, sessions: impl Iterator<Item = (usize, u64, i32, Option<i32>)>) {
        self.targets.clear();
        for (key, generation, sid, fg) in sessions {
            self.targets.push(Target {
                key,
                generation,
                sid,
                fg,
                pages: 0,
                ticks: 0,
                shown: None,
                shown_rank: 0,
            });
        }
        self.targets.sort_unstable_by_key(|t| t.sid);
        self.pids.clear();
        self.reads = 1;
        if !self.targets.is_empty()
            && let Ok(dir) = std::fs::read_dir(&self.root)
        {
            self.pids.extend(
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok())),
            );
        }
        self.pos = 0;
        self.phase = Phase::Scan;
    }

    /// Does up to `budget` file reads of the sweep; true once it is finished and its
    /// results wait in [`Sampler::take_done`].
    pub fn step(&mut self, budget: usize) -> bool {
        let mut left = budget;
        while left > 0 {
            match self.phase {
                Phase::Idle => return true,
                Phase::Scan => {
                    let Some(&pid) = self.pids.get(self.pos) else {
                        self.phase = Phase::Dirs;
                        self.pos = 0;
                        continue;
                    };
                    self.pos += 1;
                    left -= 1;
                    self.scan_one(pid);
                }
                Phase::Dirs => {
                    if self.pos >= self.targets.len() {
                        self.finish();
                        return true;
                    }
                    left -= 1;
                    self.dir_one(self.pos);
                    self.pos += 1;
                }
            }
        }
        matches!(self.phase, Phase::Idle)
    }

    /// The usages of the last finished sweep, by (slot, generation).
    pub fn take_done(&mut self) -> std::vec::Drain<'_, ((usize, u64), Usage)> {
        self.done.drain(..)
    }

    /// Reads `path` into the reused buffer (one `read` does for `/proc` files this small).
    fn read_file(buf: &mut [u8], path: &Path) -> Option<usize> {
        let mut f = File::open(path).ok()?;
        f.read(buf).ok()
    }

    fn scan_one(&mut self, pid: i32) {
        self.reads += 1;
        let path = proc_path(&mut self.path, &self.root, pid, "stat");
        let Some(n) = Self::read_file(&mut self.buf, path) else {
            return; // gone since the listing
        };
        let Ok(text) = std::str::from_utf8(&self.buf[..n]) else {
            return;
        };
        let Some(st) = parse_stat(text) else {
            return;
        };
        let Ok(i) = self.targets.binary_search_by_key(&st.session, |t| t.sid) else {
            return;
        };
        let t = &mut self.targets[i];
        t.pages += st.rss_pages;
        t.ticks += st.utime + st.stime + st.cutime + st.cstime;
        // The group's leader names the foreground; any other member of it does when the
        // leader is gone; the shell does when the group is unknown.
        let rank = if t.fg == Some(pid) {
            3
        } else if t.fg == Some(st.pgrp) {
            2
        } else if pid == t.sid {
            1
        } else {
            0
        };
        if rank > t.shown_rank {
            t.shown = Some((pid, st.comm.to_string()));
            t.shown_rank = rank;
        }
    }

    fn dir_one(&mut self, i: usize) {
        self.reads += 1;
        let t = &self.targets[i];
        let cwd = t
            .shown
            .as_ref()
            .and_then(|(pid, _)| {
                std::fs::read_link(proc_path(&mut self.path, &self.root, *pid, "cwd")).ok()
            })
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let usage = Usage {
            rss_bytes: t.pages.saturating_mul(self.page_size),
            cpu_ms: t.ticks.saturating_mul(1000) / self.clock_ticks,
            command: t.shown.as_ref().map(|(_, c)| c.clone()).unwrap_or_default(),
            cwd,
        };
        self.done.push(((t.key, t.generation), usage));
    }

    fn finish(&mut self) {
        self.phase = Phase::Idle;
        self.last_sweep_reads = self.reads;
    }

    /// Whether a [`Sampler::tick`] is due on the wheel; when not, [`Sampler::arm`] files one.
    pub(crate) fn arm(&mut self) -> bool {
        !std::mem::replace(&mut self.armed, true)
    }

    /// One timer tick against the live table: begins a sweep when idle, takes a step, and
    /// stores finished usages. Returns when to call again; `None` when no session is alive,
    /// so an idle server sleeps until a session starts (which arms the sampler again).
    // Out of line so callgrind can count a tick by name (benches/sample_cost.sh).
    #[inline(never)]
    pub(crate) fn tick(&mut self, table: &mut Table, now: Instant) -> Option<Instant> {
        if matches!(self.phase, Phase::Idle) {
            self.begin(
                table
                    .iter()
                    .filter(|(_, s)| s.is_alive())
                    .map(|(k, s)| (k, s.generation(), s.pid(), s.foreground_group())),
            );
        }
        if !self.step(STEP_BUDGET) {
            return Some(now + STEP_EVERY);
        }
        for ((k, generation), usage) in self.done.drain(..) {
            if let Some(s) = table.get_mut(k)
                && s.generation() == generation
            {
                s.set_usage(usage);
            }
        }
        // Exited sessions have no processes left to cost anything.
        for k in table.keys() {
            if let Some(s) = table.get_mut(k)
                && !s.is_alive()
            {
                s.set_usage(Usage::default());
            }
        }
        self.armed = table.iter().any(|(_, s)| s.is_alive());
        self.armed.then_some(now + SWEEP_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASH: &str = "4242 (bash) S 4200 4242 4242 34816 4300 4194560 2301 11250 0 3 \
        12 7 40 9 20 0 1 0 123456 9891840 1280 18446744073709551615 1 1 0 0 0 0 65536 \
        3670020 1266777851 0 0 0 17 1 0 0 0 0 0";
    const ODD: &str = "77 (we ird) (x)) R 4242 4300 4242 34816 4300 4194304 90 0 0 0 \
        250 30 0 0 20 0 1 0 123999 60000000 12800 18446744073709551615 1 1 0 0 0 0 0 0 0 \
        0 0 0 17 0 0 0 0 0 0";

    #[test]
    fn stat_fields() {
        let s = parse_stat(BASH).unwrap();
        assert_eq!(
            s,
            ProcStat {
                comm: "bash",
                pgrp: 4242,
                session: 4242,
                utime: 12,
                stime: 7,
                cutime: 40,
                cstime: 9,
                rss_pages: 1280,
            }
        );
        // The name may hold spaces and parentheses; fields count from the last `)`.
        let s = parse_stat(ODD).unwrap();
        assert_eq!(s.comm, "we ird) (x)");
        assert_eq!((s.pgrp, s.session, s.utime, s.stime), (4300, 4242, 250, 30));
        assert_eq!(s.rss_pages, 12800);
    }

    #[test]
    fn stat_garbage() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("1 (x"), None);
        assert_eq!(parse_stat("1 (x) S 0 1"), None);
        assert_eq!(parse_stat(&BASH.replace("1280", "lots")), None);
        // Cut anywhere, it never panics.
        for i in 0..BASH.len() {
            let _ = parse_stat(&BASH[..i]);
        }
    }

    #[test]
    fn statm() {
        assert_eq!(
            parse_statm_resident("2415 1280 700 200 0 500 0\n"),
            Some(1280)
        );
        assert_eq!(parse_statm_resident("2415"), None);
        assert_eq!(parse_statm_resident("a b"), None);
    }

    /// A fixture /proc: `(pid, stat line, cwd)`.
    fn fixture(name: &str, procs: &[(i32, String, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("keepty-proc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (pid, stat, cwd) in procs {
            let dir = root.join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("stat"), stat).unwrap();
            std::os::unix::fs::symlink(cwd, dir.join("cwd")).unwrap();
        }
        std::fs::create_dir_all(root.join("self")).unwrap();
        root
    }

    fn stat(pid: i32, comm: &str, pgrp: i32, sid: i32, ticks: u64, pages: u64) -> String {
        format!(
            "{pid} ({comm}) S 1 {pgrp} {sid} 0 0 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0 1 0 {pages} 0"
        )
    }

    #[test]
    fn sweep_sums_a_session_and_names_its_foreground() {
        let root = fixture(
            "sum",
            &[
                (100, stat(100, "sh", 100, 100, 10, 100), "/home/a"),
                (101, stat(101, "python3", 101, 100, 300, 12800), "/tmp/work"),
                (102, stat(102, "sleep", 101, 100, 0, 50), "/tmp/work"),
                (200, stat(200, "sh", 200, 200, 5, 90), "/root"),
                (300, stat(300, "other", 300, 300, 999, 999), "/"),
            ],
        );
        let mut s = Sampler::new(&root);
        s.page_size = 4096;
        s.clock_ticks = 100;
        s.begin([(0, 7, 100, Some(101)), (1, 8, 200, None)].into_iter());
        // Five stats, two directories: one step of 3 is not enough, three are.
        assert!(!s.step(3));
        assert!(!s.step(3));
        assert!(s.step(3));
        let mut done: Vec<_> = s.take_done().collect();
        done.sort_by_key(|(k, _)| *k);
        assert_eq!(
            done,
            vec![
                (
                    (0, 7),
                    Usage {
                        rss_bytes: (100 + 12800 + 50) * 4096,
                        cpu_ms: 3100,
                        command: "python3".into(),
                        cwd: "/tmp/work".into(),
                    }
                ),
                (
                    (1, 8),
                    Usage {
                        rss_bytes: 90 * 4096,
                        cpu_ms: 50,
                        command: "sh".into(),
                        cwd: "/root".into(),
                    }
                ),
            ]
        );
        assert_eq!(s.last_sweep_reads, 1 + 5 + 2);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_gone_group_leader_falls_back_to_a_member_then_the_shell() {
        let root = fixture(
            "fallback",
            &[
                (100, stat(100, "sh", 100, 100, 0, 1), "/a"),
                (105, stat(105, "make", 104, 100, 0, 1), "/b"),
            ],
        );
        let mut s = Sampler::new(&root);
        s.begin([(0, 1, 100, Some(104)), (1, 1, 999, Some(999))].into_iter());
        assert!(s.step(100));
        let mut done: Vec<_> = s.take_done().collect();
        done.sort_by_key(|(k, _)| *k);
        assert_eq!(done[0].1.command, "make");
        assert_eq!(done[0].1.cwd, "/b");
        // A session with no process left costs nothing and names nothing.
        assert_eq!(done[1].1, Usage::default());
        let _ = std::fs::remove_dir_all(&root);
    }
}
