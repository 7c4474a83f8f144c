//! Helpers for the access-control tests: token files in a private temp dir, and the
//! base64url form of a token.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory of its own under the system temp dir (mode 0700), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `keepty-test-PID-TAG-N`.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("keepty-test-{}-{tag}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `content` to `name` with `mode`, atomically (a temp file renamed over it), so a
    /// server reloading at that moment never sees half a file. Returns the path as a String.
    pub fn write(&self, name: &str, content: &str, mode: u32) -> String {
        let path = self.path(name);
        write_file(&path, content, mode);
        path.to_str().expect("utf-8 temp path").to_string()
    }
}

impl TempDir {
    /// Writes `data` to `name` (mode 0644) and returns the path quoted for `sh -c`.
    pub fn shell_file(&self, name: &str, data: &[u8]) -> String {
        let path = self.path(name);
        fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        format!("'{}'", path.display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes `content` to `path` with permission bits `mode`, through a temp file and a rename.
pub fn write_file(path: &Path, content: &str, mode: u32) {
    let tmp = path.with_extension("tmp-write");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
    // The umask may have cleared bits of `mode`: set them exactly.
    f.set_permissions(fs::Permissions::from_mode(mode)).unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// Unpadded base64url (RFC 4648 section 5).
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The subprotocol that carries a user token: `keepty.token.BASE64URL(TOKEN)`.
pub fn token_protocol(token: &str) -> String {
    format!("keepty.token.{}", b64url(token.as_bytes()))
}
