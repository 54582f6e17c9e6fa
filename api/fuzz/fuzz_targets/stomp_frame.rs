//! The STOMP decoder: any bytes, whole or in pieces, round-tripped where it decodes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mutr_api::fuzzing::stomp_frame(data));
