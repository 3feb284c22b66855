//! Networking between processes on one host: race-free port allocation and
//! hand-off to child processes ([`port`]), the process supervisor that
//! starts children on those ports ([`supervisor`]), the event loop
//! ([`event`]), the server building blocks on it ([`server`]), byte
//! buffers and write queues ([`buffer`]), framing ([`frame`]), and the
//! Redis protocol codec ([`resp`]). Built on
//! [`crate::sys`] only.

pub mod buffer;
pub mod event;
pub mod frame;
pub mod port;
pub mod resp;
pub mod server;
pub mod supervisor;
