//! The query of GET /api/v1/nodes/viz: a client error or a finite cube within the range limit.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mutr_api::fuzzing::viz_query(data));
