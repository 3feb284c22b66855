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

// On docs.rs, items that exist on some platforms only say which.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

/// Builder-style setters for an options struct's public fields: for each
/// `field: Type`, `fn field(self, value: Type) -> Self`. The structs are
/// `#[non_exhaustive]` (a new option is not a breaking change), so users
/// start from `Default` and chain these, or assign the fields.
macro_rules! option_setters {
    ($t:ty { $($(#[$m:meta])* $field:ident: $ft:ty),* $(,)? }) => {
        impl $t {
            $(
                $(#[$m])*
                #[must_use = "a setter returns the changed options; use them"]
                pub fn $field(mut self, value: $ft) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

pub mod ipc;
pub mod net;
pub mod sys;

/// The README's code blocks, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Dropping a handle whose drop acts is a warning (`#[must_use]`), an
/// error under `#![deny(unused_must_use)]`. Each case below fails to
/// compile; the last one, the same calls with the values kept, compiles.
///
/// Dropping a `Reservation`:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f() -> Result<(), Box<dyn std::error::Error>> {
/// procwire::net::port::Reservation::localhost()?;
/// Ok(())
/// }
/// ```
///
/// Dropping a `ReservationBuilder`:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f() -> Result<(), Box<dyn std::error::Error>> {
/// procwire::net::port::Reservation::builder(std::net::Ipv4Addr::LOCALHOST.into()).port(0);
/// Ok(())
/// }
/// ```
///
/// Dropping a `Socket`:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f() -> Result<(), Box<dyn std::error::Error>> {
/// procwire::sys::socket::Socket::new(procwire::sys::socket::Domain::IPV4, procwire::sys::socket::Type::STREAM)?;
/// Ok(())
/// }
/// ```
///
/// Dropping a `Mapping`:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f() -> Result<(), Box<dyn std::error::Error>> {
/// procwire::sys::shm::Mapping::anonymous(4096)?;
/// Ok(())
/// }
/// ```
///
/// Dropping a `Timer`:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f() -> Result<(), Box<dyn std::error::Error>> {
/// procwire::sys::event::Timer::new()?;
/// Ok(())
/// }
/// ```
///
/// Dropping a `Spawn`:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f() -> Result<(), Box<dyn std::error::Error>> {
/// procwire::sys::process::Spawn::new("true");
/// Ok(())
/// }
/// ```
///
/// Dropping a `Child`:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f() -> Result<(), Box<dyn std::error::Error>> {
/// procwire::sys::process::Spawn::new("true").spawn()?;
/// Ok(())
/// }
/// ```
///
/// Dropping a `Registration`:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let lp = procwire::net::event::EventLoop::new()?;
/// let t = procwire::sys::event::Timer::new()?;
/// lp.register(t, procwire::sys::event::Interest::READABLE, |_, _, _| Ok(()))?;
/// Ok(())
/// }
/// ```
///
/// Kept, everything compiles:
///
/// ```no_run
/// #![deny(unused_must_use)]
/// fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let _kept0 = procwire::net::port::Reservation::localhost()?;
/// let _kept1 = procwire::net::port::Reservation::builder(std::net::Ipv4Addr::LOCALHOST.into()).port(0);
/// let _kept2 = procwire::sys::socket::Socket::new(procwire::sys::socket::Domain::IPV4, procwire::sys::socket::Type::STREAM)?;
/// let _kept3 = procwire::sys::shm::Mapping::anonymous(4096)?;
/// let _kept4 = procwire::sys::event::Timer::new()?;
/// let _kept5 = procwire::sys::process::Spawn::new("true");
/// let _kept6 = procwire::sys::process::Spawn::new("true").spawn()?;
/// let lp = procwire::net::event::EventLoop::new()?;
/// let t = procwire::sys::event::Timer::new()?;
/// let _kept7 = lp.register(t, procwire::sys::event::Interest::READABLE, |_, _, _| Ok(()))?;
/// Ok(())
/// }
/// ```
#[cfg(doctest)]
pub struct MustUseDoctests;

/// Options structs are `#[non_exhaustive]`: a struct literal outside the
/// crate does not compile (so a new option is not a breaking change)...
///
/// ```compile_fail
/// let _ = procwire::net::server::ServerOptions {
///     max_input: 1 << 16,
///     ..Default::default()
/// };
/// ```
///
/// ...while `Default` and the setters do:
///
/// ```
/// let o = procwire::net::server::ServerOptions::default().max_input(1 << 16);
/// assert_eq!(o.max_input, 1 << 16);
/// let s = procwire::ipc::ShmOptions::default().ring_size(1 << 16).prefault(false);
/// assert_eq!((s.ring_size, s.prefault), (1 << 16, false));
/// ```
#[cfg(doctest)]
pub struct NonExhaustiveDoctests;
