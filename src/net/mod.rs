//! Networking between processes on one host: race-free port allocation and
//! hand-off to child processes ([`port`]), the event loop and server
//! building blocks ([`event`]), framing ([`frame`]), and the Redis protocol
//! codec ([`resp`]). Built on
//! [`crate::sys`] only.

pub mod event;
pub mod frame;
pub mod port;
pub mod resp;
