//! Every process a session starts, wherever it goes: a cgroup v2 of its own per session.
//!
//! A process that calls `setsid` or double-forks leaves the session's process groups and its
//! session id, so neither `killpg` nor a `/proc` scan by session finds it. A cgroup keeps
//! everything the child ever forks, whatever it does short of being moved by root. The child
//! joins its cgroup between fork and exec (it writes `0` to `cgroup.procs`, see
//! [`Pty::spawn`](crate::sessions::pty::Pty::spawn)), so nothing runs outside it. A drop
//! signals every pid listed in `cgroup.procs` (O(the session's processes), not O(the box))
//! and ends with `cgroup.kill`, then the directory is removed.
//!
//! Where it works: a cgroup2 hierarchy (pure, or the `unified` one of a hybrid mount) in
//! which keepty may create directories under its own cgroup (root, or a service with
//! `Delegate=yes`). Elsewhere [`detect`] says why once and sessions fall back to process
//! groups and the bounded `/proc` scan of [`crate::sessions::pty::signal_session`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The most pids read from one `cgroup.procs` per signal: a fork bomb cannot make a drop take
/// unbounded time (`cgroup.kill` still reaches them all).
const MAX_PROCS: usize = 4096;
/// Directories whose removal waits for their last process to go, retried by [`sweep`].
const MAX_PENDING: usize = 256;
/// Sweeps one directory gets before it is given up on (a process stuck in the kernel).
const MAX_TRIES: u8 = 30;

/// How long after a kill the loop tries again to remove a cgroup still busy.
pub const SWEEP_AFTER: Duration = Duration::from_secs(1);

/// A sweep timer is on the wheel: one is enough however many sessions ended.
static ARMED: AtomicBool = AtomicBool::new(false);
static BASE: OnceLock<Option<PathBuf>> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);
static PENDING: Mutex<Vec<(PathBuf, u8)>> = Mutex::new(Vec::new());
/// Cgroups of sessions that ended by themselves with processes left inside (a `nohup` job):
/// removed once empty, never killed, tried at each [`sweep`].
static RELEASED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Finds where session cgroups can be made, tries it once, and logs the outcome in one line.
/// Later calls return the first answer.
pub fn detect() -> Option<&'static Path> {
    BASE.get_or_init(|| match probe() {
        Ok(base) => {
            eprintln!(
                "keepty: cgroup: each session in a cgroup of its own under {}",
                base.display()
            );
            Some(base)
        }
        Err(why) => {
            eprintln!(
                "keepty: cgroup: unavailable ({why}); a drop reaches the processes still in \
                 the session's process groups and session only"
            );
            None
        }
    })
    .as_deref()
}

fn probe() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup2 mount")?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let own = own_cgroup(&own).ok_or("no cgroup2 entry in /proc/self/cgroup")?;
    let base = mount.join(own.trim_start_matches('/'));
    let probe = base.join(format!("keepty-{}-probe", std::process::id()));
    std::fs::create_dir(&probe).map_err(|e| format!("cannot create {}: {e}", probe.display()))?;
    let _ = std::fs::remove_dir(&probe);
    remove_stale(&base);
    Ok(base)
}

/// Removes the empty session cgroups of keepty processes that are gone (killed before they
/// could sweep). A non-empty one is left alone: rmdir refuses it, and its sessions are not
/// ours to end. Startup only; O(entries under our cgroup).
fn remove_stale(base: &Path) {
    let Ok(dir) = std::fs::read_dir(base) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("keepty-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// The mount point of the cgroup2 filesystem in `/proc/self/mountinfo` text (field 5 is the
/// mount point; the filesystem type follows the ` - ` separator).
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// Our cgroup2 path from `/proc/self/cgroup` text: the `0::PATH` line.
fn own_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// One session's cgroup. Dropping it kills what is left inside and removes it.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// A new, empty cgroup for a session about to start; `None` where cgroups are
    /// unavailable (see [`detect`]) or this one could not be made (logged).
    pub fn create() -> Option<Cgroup> {
        let base = detect()?;
        let _ = sweep();
        // An old directory of ours (an in-place upgrade keeps the pid) is skipped, not reused.
        for _ in 0..16 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!("keepty-{}-{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Some(Cgroup { dir }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    eprintln!("keepty: cgroup: cannot create {}: {e}", dir.display());
                    return None;
                }
            }
        }
        None
    }

    /// The cgroup an upgrade's state names, taken over by the new process: only a directory
    /// of ours (this pid's, under the detected base), never a path the state could point
    /// anywhere else; `None` for "" or anything else (the drop then falls back to the scan).
    pub fn adopt(dir: &str) -> Option<Cgroup> {
        let base = detect()?;
        let dir = Path::new(dir);
        let name = dir.file_name()?.to_str()?;
        let ours = format!("keepty-{}-", std::process::id());
        if dir.parent() != Some(base) || !name.starts_with(&ours) || !dir.is_dir() {
            return None;
        }
        Some(Cgroup {
            dir: dir.to_path_buf(),
        })
    }

    /// `cgroup.procs`, open for writing: the child writes `0` to it to join.
    pub fn procs_file(&self) -> io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
    }

    /// The pids inside, at most [`MAX_PROCS`].
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .take(MAX_PROCS)
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Sends `sig` to every process inside.
    pub fn signal(&self, sig: Signal) {
        let me = std::process::id() as i32;
        for pid in self.pids() {
            // Never ourselves, should root have moved keepty in.
            if pid > 1 && pid != me {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    }

    /// SIGKILLs everything inside, forks in flight included (`cgroup.kill`, Linux 5.14);
    /// an older kernel gets a SIGKILL per listed pid.
    pub fn kill(&self) {
        if std::fs::write(self.dir.join("cgroup.kill"), "1").is_err() {
            self.signal(Signal::SIGKILL);
        }
    }

    /// The directory: for an upgrade's state, and tests.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Cgroup {
    /// The session ended by itself (its program exited and a client saw it): what it left
    /// running, a `nohup` job or a daemon, is the user's and goes on, as after a logout. Only
    /// a drop or a reap kills (dropping a [`Cgroup`]). The directory goes once it is empty.
    pub fn release(mut self) {
        let dir = std::mem::take(&mut self.dir);
        // Nothing else to free: the path was taken, and skipping Drop skips its kill.
        std::mem::forget(self);
        if std::fs::remove_dir(&dir).is_err()
            && dir.exists()
            && let Ok(mut released) = RELEASED.lock()
        {
            if released.len() >= MAX_PENDING {
                released.remove(0);
            }
            released.push(dir);
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill();
        // The processes die a moment after the kill: a busy directory is retried by `sweep`.
        if std::fs::remove_dir(&self.dir).is_err()
            && let Ok(mut pending) = PENDING.lock()
        {
            if pending.len() >= MAX_PENDING {
                let (gone, _) = pending.remove(0);
                eprintln!("keepty: cgroup: giving up on removing {}", gone.display());
            }
            pending.push((std::mem::take(&mut self.dir), 0));
        }
    }
}

/// Removes the session cgroups whose processes have all gone since; true while some are
/// left (the loop then sweeps again a second later). Called when a session is created, after
/// a torn-down session's kill, and at shutdown: O(pending), at most [`MAX_PENDING`] rmdir
/// calls, and each directory is tried at most [`MAX_TRIES`] times.
pub fn sweep() -> bool {
    if let Ok(mut released) = RELEASED.lock() {
        released.retain(|d| std::fs::remove_dir(d).is_err() && d.exists());
    }
    let Ok(mut pending) = PENDING.lock() else {
        return false;
    };
    pending.retain_mut(|(d, tries)| {
        let _ = std::fs::write(d.join("cgroup.kill"), "1");
        if std::fs::remove_dir(&*d).is_ok() || !d.exists() {
            return false;
        }
        *tries += 1;
        if *tries >= MAX_TRIES {
            eprintln!("keepty: cgroup: giving up on removing {}", d.display());
            return false;
        }
        true
    });
    !pending.is_empty()
}

/// Sweeps now, and says whether the loop should file a sweep timer [`SWEEP_AFTER`] from now:
/// true when directories are left and no timer is filed yet. The timer's handler calls this
/// again with `fired` set.
pub fn sweep_and_rearm(fired: bool) -> bool {
    if fired {
        ARMED.store(false, Ordering::Relaxed);
    }
    sweep() && !ARMED.swap(true, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_in_pure_and_hybrid_layouts() {
        let hybrid = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure =
            "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(
            cgroup2_mount("27 25 0:24 / /x rw - cgroup cgroup rw\n"),
            None
        );
        assert_eq!(
            own_cgroup("4:memory:/a\n0::/system.slice/keepty.service\n"),
            Some("/system.slice/keepty.service")
        );
        assert_eq!(own_cgroup("4:memory:/a\n"), None);
    }

    #[test]
    fn a_cgroup_is_made_joined_killed_and_removed() {
        let Some(cg) = Cgroup::create() else {
            eprintln!("skipped: cgroups unavailable here");
            return;
        };
        let dir = cg.dir().to_path_buf();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        assert_eq!(cg.pids(), vec![child.id() as i32]);
        drop(cg);
        let st = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(9));
        for _ in 0..50 {
            if !sweep() && !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
