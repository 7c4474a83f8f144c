//! The admin surface (issue 4): the session list as JSON and as a text table, drop and
//! drop-all with their gating, Prometheus metrics, the admin page, the Host/Origin/
//! `Sec-Fetch-Site` defences, security headers, JSON errors, and control bytes that are
//! never reflected raw. These servers have no admin token file, so loopback needs no token.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::http::{self, Response};
use common::support::{
    RECORD_FIELDS, StrayGuard, assert_json_error, echo_roundtrip, ids, number_after, wait_unlisted,
};
use common::ws::{self, WAIT};
use common::{process_alive, spawn_server};

/// 400 or 409 (where the SPEC leaves the choice), a JSON error either way.
fn assert_400_or_409(r: &Response, what: &str) {
    assert!(
        matches!(r.status, 400 | 409),
        "{what}: status {} {}",
        r.status,
        r.text()
    );
    assert_json_error(r, r.status, None, what);
}

/// Creates session `id` and leaves it detached.
fn detached_session(port: u16, id: &str) {
    let mut c = ws::connect(port, &format!("session={id}&new=1"));
    c.expect_attached();
    c.close();
}

/// Whether `v` holds the number `n` anywhere (a field name for a count is not specified).
fn holds_number(v: &Value, n: u64) -> bool {
    match v {
        Value::Number(x) => x.as_u64() == Some(n),
        Value::Array(a) => a.iter().any(|x| holds_number(x, n)),
        Value::Object(o) => o.values().any(|x| holds_number(x, n)),
        _ => false,
    }
}

/// One parsed exposition: TYPE per family and samples as (name, labels, value), in order.
struct Metrics {
    types: HashMap<String, String>,
    samples: Vec<(String, String, f64)>,
}

impl Metrics {
    /// The value of the one sample `name` whose label set contains `label` (or has none).
    fn value(&self, name: &str, label: &str) -> f64 {
        let found: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| n == name && (label.is_empty() || l.contains(label)))
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "samples of {name}{{{label}}}: {found:?} in {:?}",
            self.samples
        );
        found[0]
    }
}

/// Parses Prometheus text format 0.0.4, checking it as it goes: `# TYPE` at most once per
/// family and before its samples, known types, numeric values, no duplicate series.
fn parse_metrics(text: &str) -> Metrics {
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    let mut seen = HashSet::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            if parts.first() == Some(&"TYPE") {
                assert_eq!(parts.len(), 3, "bad TYPE line {line:?}");
                assert!(
                    matches!(
                        parts[2],
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ),
                    "unknown type in {line:?}"
                );
                let prev = types.insert(parts[1].to_string(), parts[2].to_string());
                assert!(prev.is_none(), "a second TYPE for {}", parts[1]);
            } else if parts.first() == Some(&"HELP") {
                assert!(parts.len() >= 2, "bad HELP line {line:?}");
            }
            continue;
        }
        let (series, rest) = match line.find('{') {
            Some(i) => {
                let close = line[i..]
                    .find('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                (&line[..i + close + 1], &line[i + close + 1..])
            }
            None => line
                .split_once(' ')
                .unwrap_or_else(|| panic!("no value in {line:?}")),
        };
        let (name, labels) = match series.find('{') {
            Some(i) => (&series[..i], &series[i + 1..series.len() - 1]),
            None => (series, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        for l in labels.split(',').filter(|l| !l.is_empty()) {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("bad label {l:?} in {line:?}"));
            assert!(
                k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad label name in {line:?}"
            );
            assert!(
                v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                "unquoted label value in {line:?}"
            );
        }
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value is not a number in {line:?}")),
        };
        if let Some(ts) = fields.next() {
            assert!(ts.parse::<i64>().is_ok(), "bad timestamp in {line:?}");
        }
        assert!(fields.next().is_none(), "trailing fields in {line:?}");
        // The family: a histogram or summary sample may add a suffix to its TYPE's name.
        assert!(
            [
                name,
                name.trim_end_matches("_bucket"),
                name.trim_end_matches("_sum"),
                name.trim_end_matches("_count"),
            ]
            .iter()
            .any(|f| types.contains_key(*f)),
            "sample {name} without a preceding # TYPE"
        );
        assert!(seen.insert(series.to_string()), "duplicate series {series}");
        samples.push((name.to_string(), labels.to_string(), value));
    }
    Metrics { types, samples }
}

fn get_metrics(addr: &str) -> Metrics {
    let r = http::get(addr, "/admin/metrics");
    assert_eq!(r.status, 200, "/admin/metrics: {}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "metrics Content-Type {ct:?}"
    );
    parse_metrics(&r.text())
}

/// The directive `name` of a Content-Security-Policy, if present.
fn csp_directive<'a>(csp: &'a str, name: &str) -> Option<&'a str> {
    csp.split(';').map(str::trim).find(|d| {
        d.split_whitespace()
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    })
}

/// The security headers every page and API answer carries; `html` adds the CSP checks,
/// `no_store` the Cache-Control one.
fn assert_security_headers(r: &Response, what: &str, html: bool, no_store: bool) {
    assert_eq!(
        r.header("x-content-type-options")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("nosniff"),
        "{what}: X-Content-Type-Options"
    );
    assert_eq!(
        r.header("referrer-policy")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("no-referrer"),
        "{what}: Referrer-Policy"
    );
    if html {
        let csp = r
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
        let fa = csp_directive(csp, "frame-ancestors")
            .unwrap_or_else(|| panic!("{what}: no frame-ancestors in {csp:?}"));
        assert!(fa.contains("'none'"), "{what}: {fa:?}");
        // script-src, or default-src which it falls back to.
        let script = csp_directive(csp, "script-src")
            .or_else(|| csp_directive(csp, "default-src"))
            .unwrap_or_else(|| panic!("{what}: no script-src (nor default-src) in {csp:?}"));
        assert!(
            !script.contains("'unsafe-inline'") && !script.contains("'unsafe-eval'"),
            "{what}: {script:?}"
        );
        assert!(
            !script.split_whitespace().any(|s| s == "*"),
            "{what}: scripts from anywhere: {script:?}"
        );
    }
    if no_store {
        let cc = r.header("cache-control").unwrap_or_default();
        assert!(
            cc.to_ascii_lowercase().contains("no-store"),
            "{what}: Cache-Control {cc:?}"
        );
    }
}

#[test]
fn session_list_as_json_and_as_an_aligned_text_table() {
    let srv = spawn_server(&["--max-memory", "48M", "--", common::sh()]);
    let addr = srv.addr();
    let mut a = ws::connect(srv.port, "session=a1&new=1&cols=100&rows=30");
    a.expect_attached();
    echo_roundtrip(&mut a, "list");
    detached_session(srv.port, "a-much-longer-session-id");

    let r = http::get(&addr, "/admin/sessions");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    let v = r.json();
    assert!(v["now"].is_u64(), "{v}");
    assert!(v["limits"].is_object(), "no limits object: {v}");
    assert_eq!(v["memory"]["cap"], 48 << 20, "{v}");
    let reserved = v["memory"]["reserved"].as_u64().expect("memory.reserved");
    assert!(reserved > 0 && reserved <= 48 << 20, "{v}");
    assert_eq!(ids(&v), ["a-much-longer-session-id", "a1"]);
    for rec in v["sessions"].as_array().unwrap() {
        for f in RECORD_FIELDS {
            assert!(rec.get(*f).is_some(), "record lacks {f}: {rec}");
        }
        assert_eq!(rec["owner"], "local", "{rec}");
        assert_eq!(rec["state"], "running", "{rec}");
        assert!(rec["pid"].as_i64().unwrap() > 1, "{rec}");
    }
    let a1 = srv.session_record("a1").unwrap();
    assert_eq!(a1["cols"], 100, "{a1}");
    assert_eq!(a1["rows"], 30, "{a1}");
    assert_eq!(a1["clients"], 1, "{a1}");
    assert!(a1["bytes_total"].as_u64().unwrap() > 0, "{a1}");

    let r = http::get(&addr, "/admin/sessions?format=text");
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/plain"),
        "text list Content-Type {ct:?}"
    );
    assert_security_headers(&r, "text list", false, true);
    let text = r.text();
    assert!(
        !r.body
            .iter()
            .any(|&b| b < 0x20 && b != b'\n' && b != b'\r' && b != b'\t')
            && !text.contains('\u{7f}'),
        "control bytes in the text table: {text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let row = |id: &str| {
        lines
            .iter()
            .position(|l| l.split_whitespace().any(|w| w == id))
            .unwrap_or_else(|| panic!("no row for {id} in\n{text}"))
    };
    let (r1, r2) = (row("a1"), row("a-much-longer-session-id"));
    // Aligned: the second column starts at the same place in rows whose ids differ in length.
    let second_col = |line: &str| {
        let first_end = line.trim_start().find(char::is_whitespace).unwrap()
            + (line.len() - line.trim_start().len());
        let rest = &line[first_end..];
        first_end + (rest.len() - rest.trim_start().len())
    };
    assert_eq!(
        second_col(lines[r1]),
        second_col(lines[r2]),
        "columns are not aligned:\n{text}"
    );
    // A footer with the count, after the rows.
    let last_row = r1.max(r2);
    assert!(
        lines[last_row + 1..].iter().any(|l| l
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w == "2")),
        "no footer with the count 2 after the rows:\n{text}"
    );
    a.close();
}

#[test]
fn drop_kills_the_process_group_and_tells_the_client() {
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    assert_eq!(
        get_metrics(&addr).value("keepty_sessions_dropped_total", ""),
        0.0
    );
    let mut c = ws::connect(srv.port, "session=drop-me&new=1");
    c.expect_attached();
    // Without job control the background job stays in the shell's process group; ignoring
    // SIGHUP keeps it alive until the SIGKILL that must follow.
    c.send_input(b"set +m; (trap '' HUP; exec sleep 1000) & echo bg=$! sh=$$ up-$((1+1))\n");
    let out = c.read_output_until(b"up-2", WAIT);
    let bg = number_after(&out, b"bg=").unwrap_or_else(|| panic!("no bg pid: {}", ws::tail(&out)));
    let _guard = StrayGuard(bg);
    let sh = number_after(&out, b"sh=").unwrap_or_else(|| panic!("no sh pid: {}", ws::tail(&out)));
    assert!(process_alive(bg) && process_alive(sh));
    assert_eq!(srv.session_record("drop-me").expect("listed")["pid"], sh);
    detached_session(srv.port, "bystander");

    let r = http::get(&addr, "/admin/drop?id=drop-me");
    assert_eq!(r.status, 200, "drop: {}", r.text());
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "drop answer is not JSON"
    );
    assert!(r.json().is_object(), "{}", r.text());
    assert_security_headers(&r, "drop", false, true);
    let dropped_at = Instant::now();

    // The client is told, then closed with 4000.
    let texts = c.expect_close(4000);
    assert!(
        texts.iter().any(|t| t["type"] == "dropped"),
        "no dropped message before 4000: {texts:?}"
    );
    wait_unlisted(&srv, "drop-me", Duration::from_secs(5));
    while (process_alive(bg) || process_alive(sh)) && dropped_at.elapsed() < Duration::from_secs(6)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!process_alive(sh), "the shell {sh} outlived the drop");
    assert!(
        !process_alive(bg),
        "the background job {bg} (ignoring SIGHUP) outlived the drop by 6 s: no SIGKILL"
    );

    // The id is remembered as dropped; a new attach is told so, and nothing restarts it.
    let mut again = ws::connect(srv.port, "session=drop-me");
    again.expect_error("dropped", 4404);
    assert!(srv.session_record("drop-me").is_none(), "the id came back");
    let r = http::get(&addr, "/admin/drop?id=drop-me");
    assert_json_error(&r, 404, Some("not_found"), "dropping a dropped id");

    // Others are untouched, and POST works as well.
    let b = srv
        .session_record("bystander")
        .expect("the bystander survived");
    assert_eq!(b["state"], "running");
    let r = http::request(&addr, "POST", "/admin/drop?id=bystander", &[]);
    assert_eq!(r.status, 200, "POST drop: {}", r.text());
    wait_unlisted(&srv, "bystander", Duration::from_secs(5));
    assert_eq!(
        get_metrics(&addr).value("keepty_sessions_dropped_total", ""),
        2.0
    );
}

#[test]
fn drop_errors_and_methods() {
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    detached_session(srv.port, "keep");
    assert_json_error(
        &http::get(&addr, "/admin/drop"),
        400,
        None,
        "drop without an id",
    );
    assert_json_error(
        &http::get(&addr, "/admin/drop?id=nope"),
        404,
        Some("not_found"),
        "drop of an unknown id",
    );
    assert_json_error(
        &http::request(&addr, "POST", "/admin/drop?id=nope", &[]),
        404,
        Some("not_found"),
        "POST drop of an unknown id",
    );
    let r = http::get(&addr, "/admin/drop?id=not%20an%20id!");
    assert!(
        matches!(r.status, 400 | 404),
        "drop of an invalid id: {} {}",
        r.status,
        r.text()
    );
    assert_json_error(&r, r.status, None, "drop of an invalid id");
    for (method, path) in [
        ("PUT", "/admin/drop?id=keep"),
        ("DELETE", "/admin/drop?id=keep"),
        ("PUT", "/admin/drop-all?confirm=1"),
        ("DELETE", "/admin/sessions"),
        ("PUT", "/admin/metrics"),
        ("DELETE", "/admin"),
        ("PUT", "/api/sessions"),
    ] {
        let r = http::request(&addr, method, path, &[]);
        assert_json_error(&r, 405, None, &format!("{method} {path}"));
    }
    if srv.session_record("keep").is_none() {
        panic!("a refused request dropped the session");
    }
    let r = http::get(&addr, "/admin/nope");
    assert_json_error(&r, 404, None, "/admin/nope");
}

#[test]
fn drop_all_needs_the_exact_count() {
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let mut a = ws::connect(srv.port, "session=s1&new=1");
    a.expect_attached();
    let mut b = ws::connect(srv.port, "session=s2&new=1");
    b.expect_attached();
    detached_session(srv.port, "s3");

    for confirm in ["2", "4", "0"] {
        let r = http::get(&addr, &format!("/admin/drop-all?confirm={confirm}"));
        assert_json_error(
            &r,
            409,
            Some("confirm_mismatch"),
            &format!("confirm={confirm}"),
        );
    }
    let r = http::request(&addr, "POST", "/admin/drop-all?confirm=2", &[]);
    assert_json_error(&r, 409, Some("confirm_mismatch"), "POST confirm=2");
    for path in [
        "/admin/drop-all",
        "/admin/drop-all?confirm=",
        "/admin/drop-all?confirm=three",
        "/admin/drop-all?confirm=-3",
    ] {
        assert_400_or_409(&http::get(&addr, path), path);
    }
    assert_eq!(
        ids(&srv.admin_sessions()),
        ["s1", "s2", "s3"],
        "a refused drop-all dropped something"
    );
    echo_roundtrip(&mut a, "alive");
    assert!(a.events.is_empty(), "{:?}", a.events);

    let r = http::get_with(
        &addr,
        "/admin/drop-all?confirm=3",
        &["Sec-Fetch-Site: same-origin"],
    );
    assert_eq!(r.status, 200, "drop-all confirm=3: {}", r.text());
    let v = r.json();
    assert!(holds_number(&v, 3), "no count 3 in {v}");
    for c in [&mut a, &mut b] {
        let texts = c.expect_close(4000);
        assert!(texts.iter().any(|t| t["type"] == "dropped"), "{texts:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ids(&srv.admin_sessions()).is_empty() {
        assert!(Instant::now() < deadline, "sessions left after drop-all");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = ws::connect(srv.port, "session=s3");
    c.expect_error("dropped", 4404);

    // Zero sessions: confirm=0 matches. And POST works.
    let r = http::get(&addr, "/admin/drop-all?confirm=0");
    assert_eq!(r.status, 200, "confirm=0 with no sessions: {}", r.text());
    detached_session(srv.port, "p1");
    let r = http::request(&addr, "POST", "/admin/drop-all?confirm=1", &[]);
    assert_eq!(r.status, 200, "POST drop-all: {}", r.text());
    wait_unlisted(&srv, "p1", Duration::from_secs(5));
    let m = get_metrics(&addr);
    assert_eq!(m.value("keepty_sessions_dropped_total", ""), 4.0);
}

#[test]
fn metrics_are_prometheus_text() {
    let srv = spawn_server(&["--max-memory", "40M", "--", common::sh()]);
    let addr = srv.addr();
    let mut c = ws::connect(srv.port, "session=m1&new=1");
    c.expect_attached();
    echo_roundtrip(&mut c, "metrics");
    detached_session(srv.port, "m2");
    // An exited session nobody saw end: state "exited".
    let mut e = ws::connect(srv.port, "session=m3&new=1");
    e.expect_attached();
    e.send_input(b"exit 3\n");
    e.abort();
    srv.wait_session("m3", WAIT, "m3 to exit", |r| r["state"] == "exited");

    let r = http::get(&addr, "/admin/metrics");
    assert_security_headers(&r, "metrics", false, true);
    let m = get_metrics(&addr);
    for (name, ty) in [
        ("keepty_sessions", "gauge"),
        ("keepty_clients", "gauge"),
        ("keepty_bytes_buffered", "gauge"),
        ("keepty_memory_reserved_bytes", "gauge"),
        ("keepty_memory_cap_bytes", "gauge"),
        ("keepty_sessions_reaped_total", "counter"),
        ("keepty_sessions_dropped_total", "counter"),
        ("keepty_sessions_refused_total", "counter"),
        ("keepty_uptime_seconds", "gauge"),
    ] {
        assert_eq!(
            m.types.get(name).map(String::as_str),
            Some(ty),
            "# TYPE of {name}; types {:?}",
            m.types
        );
        assert!(
            m.samples.iter().any(|(n, _, _)| n == name),
            "no sample of {name}"
        );
    }
    assert_eq!(m.value("keepty_sessions", "state=\"running\""), 2.0);
    assert_eq!(m.value("keepty_sessions", "state=\"exited\""), 1.0);
    assert!(m.value("keepty_clients", "") >= 1.0);
    assert!(m.value("keepty_bytes_buffered", "") > 0.0);
    assert_eq!(m.value("keepty_memory_cap_bytes", ""), (40u64 << 20) as f64);
    let reserved = m.value("keepty_memory_reserved_bytes", "");
    assert!(
        reserved > 0.0 && reserved <= (40u64 << 20) as f64,
        "{reserved}"
    );
    assert!(m.value("keepty_uptime_seconds", "") >= 0.0);
    for name in [
        "keepty_sessions_reaped_total",
        "keepty_sessions_dropped_total",
        "keepty_sessions_refused_total",
    ] {
        assert_eq!(m.value(name, ""), 0.0, "{name}");
    }
    for (name, _, v) in &m.samples {
        assert!(v.is_finite() && *v >= 0.0, "{name} = {v}");
    }

    let r = http::get(&addr, "/admin/drop?id=m2");
    assert_eq!(r.status, 200);
    let m2 = get_metrics(&addr);
    assert_eq!(m2.value("keepty_sessions_dropped_total", ""), 1.0);
    assert_eq!(m2.value("keepty_sessions", "state=\"running\""), 1.0);
    c.close();
}

#[test]
fn metrics_count_reaped_and_refused_sessions() {
    let srv = spawn_server(&["--ttl", "1s", "--max-sessions", "1", "--", common::sh()]);
    let addr = srv.addr();
    let mut c = ws::connect(srv.port, "session=r1&new=1");
    c.expect_attached();
    let mut refused = ws::connect(srv.port, "session=r2&new=1");
    refused.expect_error("limit", 4429);
    assert!(get_metrics(&addr).value("keepty_sessions_refused_total", "") >= 1.0);
    c.close();
    wait_unlisted(&srv, "r1", Duration::from_secs(6));
    assert_eq!(
        get_metrics(&addr).value("keepty_sessions_reaped_total", ""),
        1.0
    );
}

#[test]
fn admin_page_and_security_headers() {
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    detached_session(srv.port, "page");
    let r = http::get(&addr, "/admin");
    assert_eq!(r.status, 200, "/admin: {}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/html"), "/admin Content-Type {ct:?}");
    assert_security_headers(&r, "/admin", true, true);
    let html = r.text().to_ascii_lowercase();
    assert!(html.contains("<!doctype html>"), "not an HTML page");
    // No inline script: every script element has a src, and no inline handlers.
    let mut from = 0;
    let mut scripts = Vec::new();
    while let Some(i) = html[from..].find("<script") {
        let start = from + i;
        let end = start + html[start..].find('>').expect("unclosed script tag");
        let tag = &html[start..=end];
        assert!(tag.contains("src="), "inline script on /admin: {tag}");
        let body_end = html[end..].find("</script>").map_or(end + 1, |j| end + j);
        assert!(
            html[end + 1..body_end.max(end + 1)].trim().is_empty(),
            "script with src and a body: {tag}"
        );
        if let Some(s) = tag.split("src=").nth(1) {
            let s = s.trim_start_matches(['"', '\'']);
            let src: String = s.chars().take_while(|&c| c != '"' && c != '\'').collect();
            scripts.push(src);
        }
        from = end;
    }
    for handler in [
        "onclick=",
        "onload=",
        "onsubmit=",
        "onchange=",
        "oninput=",
        "javascript:",
    ] {
        assert!(
            !html.contains(handler),
            "inline handler {handler} on /admin"
        );
    }
    // The page's own scripts are served.
    for src in scripts.iter().filter(|s| s.starts_with('/')) {
        let r = http::get(&addr, src);
        assert_eq!(r.status, 200, "{src} referenced by /admin");
        assert!(
            r.header("content-type")
                .unwrap_or_default()
                .starts_with("text/javascript"),
            "{src} Content-Type"
        );
    }

    // The terminal page too, and every API answer.
    let r = http::get(&addr, "/");
    assert_eq!(r.status, 200);
    assert_security_headers(&r, "/", true, false);
    for path in [
        "/admin/sessions",
        "/admin/sessions?format=text",
        "/admin/metrics",
        "/api/sessions",
    ] {
        let r = http::get(&addr, path);
        assert_eq!(r.status, 200, "{path}");
        assert_security_headers(&r, path, false, true);
    }
    for (path, status) in [
        ("/admin/drop", 400),
        ("/admin/drop?id=zz", 404),
        ("/nope", 404),
    ] {
        let r = http::get(&addr, path);
        assert_json_error(&r, status, None, path);
        assert_security_headers(&r, path, false, path.starts_with("/admin"));
    }
}

#[test]
fn rebinding_hosts_and_foreign_origins_are_refused() {
    let srv = spawn_server(&[
        "--allow-origin",
        "http://app.example:8080",
        "--",
        common::sh(),
    ]);
    let addr = srv.addr();
    let port = srv.port;
    detached_session(port, "victim");
    let evil_host = format!("Host: evil.example:{port}");
    let evil_origin = format!("Origin: http://evil.example:{port}");

    // DNS rebinding: Host and Origin match each other, but the Host is not ours.
    let r = http::upgrade(&addr, "session=victim", &[&evil_host, &evil_origin]);
    assert_json_error(&r, 403, Some("forbidden"), "rebinding Host on /ws");
    let r = http::upgrade(&addr, "new=1", &[&evil_host, &evil_origin]);
    assert_json_error(&r, 403, Some("forbidden"), "rebinding Host on /ws?new=1");
    for path in [
        "/admin/sessions",
        "/admin/sessions?format=text",
        "/admin/metrics",
        "/admin",
        "/admin/drop?id=victim",
        "/admin/drop-all?confirm=1",
        "/api/sessions",
    ] {
        let r = http::request(&addr, "GET", path, &[&evil_host, &evil_origin]);
        assert_json_error(
            &r,
            403,
            Some("forbidden"),
            &format!("rebinding Host on {path}"),
        );
        let r = http::request(&addr, "POST", path, &[&evil_host, &evil_origin]);
        assert_eq!(r.status, 403, "rebinding Host on POST {path}");
    }

    // Cross-site requests from a browser: a foreign Origin, or `null`.
    for origin in [
        "Origin: http://evil.example".to_string(),
        "Origin: null".to_string(),
        format!("Origin: http://127.0.0.1:{}", port.wrapping_add(1)),
        // The server speaks plain HTTP: its own origin has the http scheme.
        format!("Origin: https://127.0.0.1:{port}"),
        "Origin: http://app.example".to_string(),
    ] {
        let r = http::upgrade(&addr, "session=victim", &[&origin]);
        assert_json_error(
            &r,
            403,
            Some("forbidden"),
            &format!("upgrade with {origin}"),
        );
        let r = http::get_with(&addr, "/admin/sessions", &[&origin]);
        assert_json_error(&r, 403, Some("forbidden"), &format!("admin with {origin}"));
        let r = http::get_with(&addr, "/admin/drop?id=victim", &[&origin]);
        assert_json_error(&r, 403, Some("forbidden"), &format!("drop with {origin}"));
        let r = http::request(&addr, "POST", "/admin/drop-all?confirm=1", &[&origin]);
        assert_json_error(
            &r,
            403,
            Some("forbidden"),
            &format!("drop-all with {origin}"),
        );
    }
    let rec = srv.session_record("victim").expect("the victim survived");
    assert_eq!(rec["clients"], 0, "a refused upgrade attached: {rec}");
    assert_eq!(
        ids(&srv.admin_sessions()),
        ["victim"],
        "a refused upgrade created a session"
    );

    // The request's own origin and an --allow-origin are fine.
    let own = format!("http://127.0.0.1:{port}");
    let mut c = ws::try_connect_with(
        port,
        "session=victim",
        Some("keepty.v1"),
        &[("Origin", &own)],
    )
    .unwrap_or_else(|e| panic!("upgrade with the own origin: {e}"));
    c.expect_attached();
    echo_roundtrip(&mut c, "own");
    c.close();
    let mut c = ws::try_connect_with(
        port,
        "session=app&new=1",
        Some("keepty.v1"),
        &[("Origin", "http://app.example:8080")],
    )
    .unwrap_or_else(|e| panic!("upgrade with an allowed origin: {e}"));
    c.expect_attached();
    c.close();
    let r = http::get_with(&addr, "/admin/sessions", &[&format!("Origin: {own}")]);
    assert_eq!(r.status, 200, "admin with the own origin: {}", r.text());
    let r = http::request(
        &addr,
        "GET",
        "/admin/sessions",
        &[
            &format!("Host: localhost:{port}"),
            &format!("Origin: http://localhost:{port}"),
        ],
    );
    assert_eq!(r.status, 200, "admin via localhost: {}", r.text());
    let r = http::get_with(
        &addr,
        "/admin/sessions",
        &["Origin: http://app.example:8080"],
    );
    assert_eq!(r.status, 200, "admin with an allowed origin: {}", r.text());
    let r = http::get_with(
        &addr,
        "/admin/drop?id=app",
        &[&format!("Origin: {own}"), "Sec-Fetch-Site: same-origin"],
    );
    assert_eq!(r.status, 200, "a same-origin drop: {}", r.text());
}

#[test]
fn cross_site_fetches_cannot_drop_sessions() {
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    detached_session(srv.port, "target");
    // An <img src> or a link from another site: a GET with Sec-Fetch-Site and no Origin.
    for site in ["cross-site", "same-site"] {
        let sfs = format!("Sec-Fetch-Site: {site}");
        for (method, path) in [
            ("GET", "/admin/drop?id=target"),
            ("POST", "/admin/drop?id=target"),
            ("GET", "/admin/drop-all?confirm=1"),
            ("POST", "/admin/drop-all?confirm=1"),
        ] {
            let r = http::request(&addr, method, path, &[&sfs]);
            assert_json_error(
                &r,
                403,
                Some("forbidden"),
                &format!("{method} {path} {site}"),
            );
        }
    }
    assert!(
        srv.session_record("target").is_some(),
        "a cross-site request dropped the session"
    );
    // A typed address (none), the admin page itself (same-origin), and curl (absent) may.
    let r = http::get_with(&addr, "/admin/drop?id=target", &["Sec-Fetch-Site: none"]);
    assert_eq!(r.status, 200, "Sec-Fetch-Site: none: {}", r.text());
    detached_session(srv.port, "t2");
    let r = http::request(
        &addr,
        "POST",
        "/admin/drop-all?confirm=1",
        &["Sec-Fetch-Site: same-origin"],
    );
    assert_eq!(r.status, 200, "Sec-Fetch-Site: same-origin: {}", r.text());
    detached_session(srv.port, "t3");
    let r = http::get(&addr, "/admin/drop?id=t3");
    assert_eq!(r.status, 200, "no Sec-Fetch-Site: {}", r.text());
}

#[test]
fn reflected_control_bytes_are_escaped() {
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let raw_ctl = |b: &[u8]| {
        b.iter()
            .any(|&c| (c < 0x20 && c != b'\n' && c != b'\r' && c != b'\t') || c == 0x7f)
    };
    let check = |r: &Response, what: &str| {
        assert!(
            !raw_ctl(&r.body),
            "{what}: control bytes in the body {:?}",
            r.text()
        );
        for (k, v) in &r.headers {
            assert!(
                !raw_ctl(v.as_bytes()),
                "{what}: control bytes in header {k}"
            );
        }
    };

    // Raw ESC in the request line and in a header.
    for raw in [
        format!("GET /nope\x1b[31mX HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
        format!("GET /admin/drop?id=\x1b[2J HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
        format!(
            "GET /nope HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: \x1b]0;pwned\x07\r\nX-Evil: \x1b[2J\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET /ws?session=\x1b[2J&new=1 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        ),
    ] {
        match http::raw_request(&addr, raw.as_bytes()) {
            Ok(r) => {
                check(&r, &format!("{raw:?}"));
                assert!(r.status >= 400, "{raw:?}: status {}", r.status);
            }
            Err(e) => panic!("{raw:?}: no answer: {e}"),
        }
    }
    // Percent-encoded control bytes, decoded by the server, must not come back raw.
    for path in [
        "/nope%1b%5b31m",
        "/admin/drop?id=%1b%5b2J",
        "/admin/drop?id=a%07b",
        "/admin/drop-all?confirm=%1b%5b2J",
        "/admin/sessions?format=%1b%5b2J",
        "/api/sessions?x=%1b",
    ] {
        let r = http::get(&addr, path);
        check(&r, path);
    }
    // On the WebSocket: an invalid session id is refused without echoing it raw.
    match ws::try_connect(srv.port, "session=%1b%5b2J&new=1") {
        Ok(mut c) => {
            let err = c.expect_error("bad_request", 4400);
            assert!(
                !err.to_string().contains('\u{1b}') && !raw_ctl(err.to_string().as_bytes()),
                "{err}"
            );
        }
        Err(e) => assert!(!e.contains('\u{1b}'), "{e:?}"),
    }
    let r = http::upgrade(&addr, "session=%1b%5b2J&new=1", &[]);
    check(&r, "upgrade with an ESC id");

    // The text table after all that, and the log.
    detached_session(srv.port, "ok-id");
    let r = http::get(&addr, "/admin/sessions?format=text");
    assert_eq!(r.status, 200);
    check(&r, "text table");
    std::thread::sleep(Duration::from_millis(200));
    for l in srv.stderr_lines() {
        assert!(!raw_ctl(l.as_bytes()), "control bytes in a log line: {l:?}");
    }
}

/// Not in the SPEC, but RFC 9112 section 3.2 says a request with more than one Host line
/// gets 400: otherwise the Host check and whatever else reads the Host may disagree.
#[test]
fn two_host_headers_are_refused() {
    let srv = spawn_server(&["--", common::sh()]);
    let addr = srv.addr();
    let evil_host = format!("Host: evil.example:{}", srv.port);
    detached_session(srv.port, "victim");
    for path in ["/api/sessions", "/admin/sessions"] {
        let r = http::get_with(&addr, path, &[&evil_host]);
        assert!(
            matches!(r.status, 400 | 403),
            "two Host headers on {path}: {} {}",
            r.status,
            r.text()
        );
        assert_json_error(&r, r.status, None, &format!("two Host headers on {path}"));
    }
}
