//! `keepty ls`, `drop`, `drop-all`, and the choice of session for a bare `attach`.

use serde_json::Value;

use super::Fail;
use super::http::{self, Server};
use crate::api::admin::{self, SessionRecord};

/// GETs `path` and parses its JSON; a refusal is [`Fail::Refused`] with the server's words.
fn get_json(server: &Server, path: &str, token: Option<&str>) -> Result<Value, Fail> {
    let (status, body) = server.request("GET", path, token)?;
    if status != 200 {
        return Err(refusal(status, &body, path));
    }
    serde_json::from_slice(&body)
        .map_err(|e| Fail::Unreachable(format!("{}: {path}: bad JSON: {e}", server.authority())))
}

fn refusal(status: u16, body: &[u8], path: &str) -> Fail {
    let mut text = http::error_text(status, body);
    if status == 401 && path.starts_with("/api/") {
        text.push_str("; with an admin token, use --all");
    }
    Fail::Refused(text)
}

/// The sessions of a list answer, read as records.
fn records(v: &Value) -> Vec<SessionRecord> {
    v["sessions"]
        .as_array()
        .map(|a| a.iter().filter_map(SessionRecord::from_json).collect())
        .unwrap_or_default()
}

/// `keepty ls`: the caller's sessions (`--all`: every session, from the admin list), as the
/// admin table or, with `--json`, as the server's JSON.
pub fn ls(server: &Server, token: Option<&str>, all: bool, json: bool) -> Result<u8, Fail> {
    let path = if all {
        "/admin/sessions"
    } else {
        "/api/sessions"
    };
    let v = get_json(server, path, token)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", admin::render_rows(&records(&v)));
    }
    Ok(0)
}

/// The id a bare `keepty attach` takes: the caller's running session that nobody is attached
/// to and that was seen last.
pub fn most_recent_detached(server: &Server, token: Option<&str>) -> Result<String, Fail> {
    let v = get_json(server, "/api/sessions", token)?;
    pick_detached(&records(&v))
        .map(str::to_string)
        .ok_or_else(|| {
            Fail::Refused("no detached session to attach (keepty new starts one)".into())
        })
}

/// The running, detached session with the latest `last_seen` (ties: the latest created).
pub fn pick_detached(list: &[SessionRecord]) -> Option<&str> {
    list.iter()
        .filter(|s| s.state == "running" && s.clients == 0)
        .max_by_key(|s| (s.last_seen, s.created_at))
        .map(|s| s.id.as_str())
}

/// `keepty drop ID` (admin).
pub fn drop_one(server: &Server, token: Option<&str>, id: &str) -> Result<u8, Fail> {
    let path = format!("/admin/drop?id={id}");
    let (status, body) = server.request("POST", &path, token)?;
    if status != 200 {
        return Err(refusal(status, &body, &path));
    }
    eprintln!("keepty: dropped {id}");
    Ok(0)
}

/// `keepty drop-all` (admin): the count the server asks to confirm is read just before.
pub fn drop_all(server: &Server, token: Option<&str>) -> Result<u8, Fail> {
    let v = get_json(server, "/admin/sessions", token)?;
    let n = v["sessions"].as_array().map_or(0, Vec::len);
    let path = format!("/admin/drop-all?confirm={n}");
    let (status, body) = server.request("POST", &path, token)?;
    if status != 200 {
        return Err(refusal(status, &body, &path));
    }
    eprintln!(
        "keepty: dropped {n} session{}",
        if n == 1 { "" } else { "s" }
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, state: &str, clients: usize, last_seen: u64) -> SessionRecord {
        SessionRecord::from_json(&serde_json::json!({
            "id": id, "owner": "o", "pid": 1, "state": state, "exit_code": null,
            "created_at": 1, "last_seen": last_seen, "idle_secs": 0, "expires_in_secs": 0,
            "bytes_buffered": 0, "bytes_total": 0, "clients": clients, "active_client": null,
            "cols": 80, "rows": 24
        }))
        .expect("a record")
    }

    #[test]
    fn the_most_recent_detached_session() {
        let list = [
            rec("old", "running", 0, 100),
            rec("attached", "running", 1, 900),
            rec("ended", "exited", 0, 800),
            rec("recent", "running", 0, 500),
        ];
        assert_eq!(pick_detached(&list), Some("recent"));
        assert_eq!(pick_detached(&list[1..3]), None);
    }
}
