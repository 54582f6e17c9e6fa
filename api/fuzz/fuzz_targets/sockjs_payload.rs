//! A client's SockJS payload (xhr_send body, SockJS WebSocket message) and the STOMP frames in it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mutr_api::fuzzing::sockjs_payload(data));
