//! The pure parts of the file routes: how an upload's body is framed, what a path may be,
//! how a download is named, what a temporary file is called, and each refusal's status.

use std::borrow::Cow;

use crate::net::http::{Request, Response};

/// Why a file request is refused; [`FileError::response`] writes each one's status and code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileError {
    /// No `Content-Length`, or a chunked body: 411.
    LengthRequired,
    /// A malformed, repeated or conflicting `Content-Length`, or `Transfer-Encoding` beside
    /// it: 400 (request smuggling lives in that ambiguity).
    BadLength,
    /// Over `--max-upload`: 413, before a byte is written.
    TooLarge(u64),
    /// No `path`, a NUL in it, or a name that cannot be a file: 400.
    BadPath,
    /// The path names a directory, or ends in `/`: 400.
    IsDirectory,
    /// A directory, fifo or device where a file was asked for: 400.
    NotAFile,
    /// The file exists and `overwrite=1` was not given: 409.
    Exists,
    /// The file, or the upload's directory, does not exist: 404.
    NotFound,
    /// The session's user may not do this: 403.
    PermissionDenied,
    /// More than the file system has free: 507.
    NoSpace,
    /// The session already has a transfer in flight: 409.
    Busy,
    /// The session has ended: 409.
    NotRunning,
    /// The session is another user's: 403.
    Forbidden,
    /// No session by that id: 404.
    UnknownSession,
    /// A download ticket that is used, expired or unknown: 404.
    UnknownTicket,
    /// A transfer's buffer would pass `--max-memory`: 503.
    Memory,
    /// The helper could not be started or failed: 500, with the reason.
    Io(String),
}

impl FileError {
    /// The one place each refusal's status, code and message are written.
    pub fn response(&self) -> Response {
        let (status, code, message): (u16, &str, Cow<'_, str>) = match self {
            FileError::LengthRequired => (
                411,
                "length_required",
                "an upload needs Content-Length (not chunked)".into(),
            ),
            FileError::BadLength => (
                400,
                "bad_request",
                "one Content-Length of digits, and no Transfer-Encoding".into(),
            ),
            FileError::TooLarge(cap) => (
                413,
                "too_large",
                format!("the file is larger than --max-upload ({cap} bytes)").into(),
            ),
            FileError::BadPath => (400, "bad_request", "path= must name a file (no NUL)".into()),
            FileError::IsDirectory => (400, "is_directory", "the path is a directory".into()),
            FileError::NotAFile => (
                400,
                "not_a_file",
                "not a regular file (a directory, fifo or device)".into(),
            ),
            FileError::Exists => (
                409,
                "exists",
                "the file exists; send overwrite=1 to replace it".into(),
            ),
            FileError::NotFound => (404, "not_found", "no such file or directory".into()),
            FileError::PermissionDenied => (
                403,
                "permission_denied",
                "the session's user may not do that".into(),
            ),
            FileError::NoSpace => (
                507,
                "insufficient_storage",
                "not enough free space on the file system".into(),
            ),
            FileError::Busy => (409, "busy", "the session has a transfer in flight".into()),
            FileError::NotRunning => (409, "not_running", "the session has ended".into()),
            FileError::Forbidden => (403, "forbidden", "not your session".into()),
            FileError::UnknownSession => (404, "unknown_session", "no such session".into()),
            FileError::UnknownTicket => (
                404,
                "unknown_ticket",
                "the download link is used, expired or unknown".into(),
            ),
            FileError::Memory => (503, "memory", "memory cap reached".into()),
            FileError::Io(why) => (500, "io_error", why.as_str().into()),
        };
        Response::error(status, code, &message)
    }

    /// The refusal a helper names by its code (see `files::helper`).
    pub fn from_code(code: &str, message: &str) -> FileError {
        match code {
            "is_directory" => FileError::IsDirectory,
            "not_a_file" => FileError::NotAFile,
            "exists" => FileError::Exists,
            "not_found" => FileError::NotFound,
            "permission_denied" => FileError::PermissionDenied,
            "insufficient_storage" => FileError::NoSpace,
            "bad_request" => FileError::BadPath,
            _ => FileError::Io(message.to_string()),
        }
    }

    /// The code a helper sends for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            FileError::IsDirectory => "is_directory",
            FileError::NotAFile => "not_a_file",
            FileError::Exists => "exists",
            FileError::NotFound => "not_found",
            FileError::PermissionDenied => "permission_denied",
            FileError::NoSpace => "insufficient_storage",
            FileError::BadPath => "bad_request",
            _ => "io_error",
        }
    }
}

/// The refusal for a failed system call on a path.
pub fn errno_error(e: nix::errno::Errno) -> FileError {
    use nix::errno::Errno;
    match e {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP => FileError::NotFound,
        Errno::EACCES | Errno::EPERM | Errno::EROFS => FileError::PermissionDenied,
        Errno::EISDIR => FileError::IsDirectory,
        Errno::ENOSPC | Errno::EDQUOT => FileError::NoSpace,
        Errno::ENAMETOOLONG | Errno::EINVAL => FileError::BadPath,
        e => FileError::Io(e.desc().to_string()),
    }
}

/// The length of an upload's body: exactly one `Content-Length` of decimal digits (no sign,
/// no spaces inside, no list) and no `Transfer-Encoding`. Chunked alone is
/// [`FileError::LengthRequired`], as is no length at all.
pub fn body_length(req: &Request) -> Result<u64, FileError> {
    let mut lengths = req.headers.iter().filter(|(n, _)| n == "content-length");
    let te = req.header("transfer-encoding").is_some();
    match (lengths.next(), lengths.next()) {
        (None, _) if te => Err(FileError::LengthRequired),
        (None, _) => Err(FileError::LengthRequired),
        (Some(_), Some(_)) => Err(FileError::BadLength),
        (Some(_), None) if te => Err(FileError::BadLength),
        (Some((_, v)), None) => {
            let v = v.trim();
            if v.is_empty() || v.len() > 19 || !v.bytes().all(|c| c.is_ascii_digit()) {
                return Err(FileError::BadLength);
            }
            v.parse().map_err(|_| FileError::BadLength)
        }
    }
}

/// The `path=` parameter, decoded: present, not empty, without NUL.
pub fn path_param(query: &str) -> Result<String, FileError> {
    match crate::net::http::query_param(query, "path") {
        Some(p) if !p.is_empty() && !p.contains('\0') => Ok(p),
        _ => Err(FileError::BadPath),
    }
}

/// The last component of `path` (what a download is saved as).
pub fn basename(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("download")
}

/// `Content-Disposition: attachment` for `name` (RFC 6266): a plain `filename` with
/// anything outside printable ASCII, quotes and backslashes replaced by `_`, and
/// `filename*=UTF-8''...` percent-encoded when the name is not plain ASCII.
pub fn content_disposition(name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if plain == name {
        return format!("attachment; filename=\"{plain}\"");
    }
    let mut star = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            star.push(b as char);
        } else {
            star.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{star}")
}

/// Longest file name most file systems take, bytes.
const NAME_MAX: usize = 255;

/// The temporary name an upload to `name` is written under, with `suffix` (six random
/// characters): `.NAME.keepty-upload-XXXXXX`, `NAME` cut (at a character boundary) so the
/// whole fits in [`NAME_MAX`].
pub fn temp_name(name: &str, suffix: &str) -> String {
    let fixed = 1 + ".keepty-upload-".len() + suffix.len();
    let mut cut = NAME_MAX.saturating_sub(fixed).min(name.len());
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(".{}.keepty-upload-{suffix}", &name[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "PUT".into(),
            path: "/api/sessions/a/files".into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Request::default()
        }
    }

    #[test]
    fn content_length_is_one_plain_number() {
        let cl = |v: &str| body_length(&req(&[("content-length", v)]));
        assert_eq!(cl("0"), Ok(0));
        assert_eq!(cl("52428800"), Ok(52_428_800));
        assert_eq!(
            cl(" 12 "),
            Ok(12),
            "surrounding whitespace is the header's own"
        );
        for bad in [
            "-1",
            "+5",
            "1 2",
            "1,1",
            "0x10",
            "",
            "99999999999999999999",
            "18446744073709551616",
        ] {
            assert_eq!(cl(bad), Err(FileError::BadLength), "{bad:?}");
        }
        assert_eq!(body_length(&req(&[])), Err(FileError::LengthRequired));
        assert_eq!(
            body_length(&req(&[("transfer-encoding", "chunked")])),
            Err(FileError::LengthRequired)
        );
        assert_eq!(
            body_length(&req(&[
                ("transfer-encoding", "chunked"),
                ("content-length", "5")
            ])),
            Err(FileError::BadLength),
            "both: refused, not guessed"
        );
        assert_eq!(
            body_length(&req(&[("content-length", "5"), ("content-length", "5")])),
            Err(FileError::BadLength)
        );
    }

    #[test]
    fn paths_must_be_present_and_free_of_nul() {
        assert_eq!(path_param("path=%2Ftmp%2Fa"), Ok("/tmp/a".into()));
        assert_eq!(path_param("path=a%00b"), Err(FileError::BadPath));
        assert_eq!(path_param("path="), Err(FileError::BadPath));
        assert_eq!(path_param("other=1"), Err(FileError::BadPath));
        assert_eq!(basename("/tmp/x/log.txt"), "log.txt");
        assert_eq!(basename("rel"), "rel");
        assert_eq!(basename("/"), "download");
    }

    #[test]
    fn dispositions_are_quoted_safely_and_carry_utf8() {
        assert_eq!(
            content_disposition("log.txt"),
            "attachment; filename=\"log.txt\""
        );
        assert_eq!(
            content_disposition("my file.txt"),
            "attachment; filename=\"my file.txt\""
        );
        assert_eq!(
            content_disposition("a\"b\\c\r\n.txt"),
            "attachment; filename=\"a_b_c__.txt\"; filename*=UTF-8''a%22b%5Cc%0D%0A.txt"
        );
        assert_eq!(
            content_disposition("résumé.pdf"),
            "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
        );
    }

    #[test]
    fn temp_names_are_hidden_and_fit_a_file_name() {
        assert_eq!(temp_name("a.bin", "Ab3_-x"), ".a.bin.keepty-upload-Ab3_-x");
        let long = "é".repeat(200);
        let t = temp_name(&long, "XXXXXX");
        assert!(t.len() <= NAME_MAX, "{}", t.len());
        assert!(t.starts_with(".é") && t.ends_with(".keepty-upload-XXXXXX"));
    }

    #[test]
    fn every_refusal_has_its_status() {
        for (e, status) in [
            (FileError::LengthRequired, 411),
            (FileError::TooLarge(1), 413),
            (FileError::Exists, 409),
            (FileError::Busy, 409),
            (FileError::NotRunning, 409),
            (FileError::NoSpace, 507),
            (FileError::PermissionDenied, 403),
            (FileError::Forbidden, 403),
            (FileError::UnknownSession, 404),
            (FileError::UnknownTicket, 404),
            (FileError::NotAFile, 400),
        ] {
            assert_eq!(e.response().status, status, "{e:?}");
        }
        for e in [
            FileError::IsDirectory,
            FileError::NotAFile,
            FileError::Exists,
            FileError::NotFound,
            FileError::PermissionDenied,
            FileError::NoSpace,
        ] {
            assert_eq!(FileError::from_code(e.code(), ""), e);
        }
    }
}
