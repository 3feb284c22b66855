//! procwire wires processes together on one host without an async runtime.
//!
//! Everything stands on [`sys`], thin safe wrappers over the system calls in
//! which every call's result is checked and every error says which call
//! failed, on what, and why:
//!
//! - [`sys`]: sockets and their options, processes (`fork`, reaping, fd
//!   placement for socket activation), shared memory (POSIX, memfd, SysV,
//!   mappings), the epoll/kqueue selector, futexes and eventfds (Linux), and
//!   fd passing over Unix sockets;
//! - [`net`]: port allocation and hand-off, the event loop and server
//!   building blocks, framing, the RESP codec;
//! - [`ipc`]: the shared-memory transport.
//!
//! Layers only look down: `net` and `ipc` use `sys` and never call rustix or
//! libc themselves.
//!
//! # Errors
//!
//! ```
//! use procwire::sys::socket::{Domain, Socket, Type};
//!
//! let a = Socket::new(Domain::IPV4, Type::STREAM)?;
//! a.bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())?;
//! let taken = a.local_addr()?;
//!
//! let b = Socket::new(Domain::IPV4, Type::STREAM)?;
//! let err = b.bind(taken.clone()).unwrap_err();
//! assert_eq!(err.call(), "bind");
//! // "bind(127.0.0.1:49475): Address already in use (os error 98)"
//! assert!(err.to_string().starts_with(&format!("bind({taken}): ")));
//! assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
//! # Ok::<(), procwire::sys::Error>(())
//! ```

#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod ipc;
pub mod net;
pub mod sys;

/// The README's code blocks, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
