//! Client text frames and /ws queries: any input is either accepted with valid values or
//! refused as bad_request, never a panic.
#![no_main]
use keepty::api::protocol::{self, ClientMsg, ErrorCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match protocol::parse_client_msg(text) {
        Ok(ClientMsg::Resize { cols, rows }) => {
            assert!(protocol::valid_dim(cols) && protocol::valid_dim(rows))
        }
        Ok(_) => {}
        Err(e) => assert_eq!(e.code, ErrorCode::BadRequest),
    }
    match protocol::parse_ws_query(text) {
        Ok(p) => {
            assert!(p.session.as_deref().is_none_or(protocol::valid_id));
            assert!(p.session.is_some() || p.new);
        }
        Err(e) => assert_eq!(e.code, ErrorCode::BadRequest),
    }
});
