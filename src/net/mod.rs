//! Networking between processes on one host: race-free port allocation and
//! hand-off to child processes ([`port`]); the event loop and framing come
//! next. Built on [`crate::sys`] only.

pub mod port;
