//! The body of POST /api/v1/nodes: a client error or a node at a finite position.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mutr_api::fuzzing::node_body(data));
