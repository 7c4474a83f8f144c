//! Request-head parsing and routing for a typical browser request and a WebSocket upgrade.
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keepty::net::http;

const PAGE: &[u8] = b"GET /assets/xterm.js HTTP/1.1\r\nHost: 192.168.1.1:7700\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\nIf-None-Match: \"0123456789abcdef\"\r\nConnection: keep-alive\r\n\r\n";
const UPGRADE: &[u8] = b"GET /ws?session=abcdefghijklmnopqrstuv&since=123456&cols=120&rows=40&flow=1 HTTP/1.1\r\nHost: 192.168.1.1:7700\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: keepty.v1\r\nOrigin: http://192.168.1.1:7700\r\n\r\n";

fn parse(c: &mut Criterion) {
    c.bench_function("http/parse_route_asset", |b| {
        b.iter(|| {
            let (req, _) = http::parse_head(black_box(PAGE)).unwrap().unwrap();
            black_box(http::route(&req));
        })
    });
    c.bench_function("http/parse_upgrade_query", |b| {
        b.iter(|| {
            let (req, _) = http::parse_head(black_box(UPGRADE)).unwrap().unwrap();
            black_box(keepty::api::protocol::parse_ws_query(&req.query).unwrap());
        })
    });
}

criterion_group!(benches, parse);
criterion_main!(benches);
