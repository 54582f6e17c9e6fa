//! MUTR API: HTTP endpoints, STOMP-over-SockJS push and the hand-off to the analysis pipeline.

#![forbid(unsafe_code)]

pub mod realtime;
