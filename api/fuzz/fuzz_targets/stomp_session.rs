//! A whole STOMP session fed any bytes: it ends without panicking and writes only valid frames.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mutr_api::fuzzing::stomp_session(data));
