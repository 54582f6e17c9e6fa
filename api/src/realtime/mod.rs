//! Live push to browsers: STOMP 1.2 over SockJS and raw WebSocket, fanned out through Redis.
