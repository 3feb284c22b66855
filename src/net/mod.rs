//! Networking between processes on one host: race-free port allocation and
//! hand-off to child processes, the event loop, and framing. Built on
//! [`crate::sys`] only.
//!
//! This layer is being built; today it holds nothing of its own, and the
//! socket wrappers it will use are in [`crate::sys::socket`].
