//! Readiness notification: one [`Selector`] over epoll (Linux, Android) or
//! kqueue (macOS, iOS, FreeBSD, OpenBSD, NetBSD, DragonFly), chosen at build
//! time from two files with the same item names.
//!
//! Every backend meets the same contract:
//!
//! - `Selector::new()` makes a close-on-exec selector;
//! - `register(fd, token, interest, mode)` starts watching `fd`, `reregister`
//!   replaces interest and mode, `deregister` stops. `register` is `unsafe`
//!   (as in `polling`): the kernel keeps the file beyond the borrow, so the
//!   caller promises to deregister before the fd is closed, since a
//!   duplicated or inherited file description otherwise stays registered
//!   and keeps reporting. The event loop keeps that promise by owning its
//!   sources;
//! - `wait(&mut events, timeout)` clears `events`, fills it with at most its
//!   capacity, and retries `EINTR` with the time that is left (the one place
//!   where this layer retries it); `None` waits forever, a zero timeout polls;
//! - each [`Event`] carries the [`Token`] given at registration.
//!
//! The selector knows fds and tokens only; handlers, token generations and
//! timers live in the event loop above it.

use std::fmt;

#[cfg_attr(any(target_os = "linux", target_os = "android"), path = "epoll.rs")]
#[cfg_attr(
    any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    ),
    path = "kqueue.rs"
)]
mod selector;

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)))]
compile_error!("procwire supports epoll (Linux, Android) and kqueue (Apple, BSD) targets only");

pub use selector::{Events, Notifier, Selector, Timer};

use super::signal::{Signal, SignalPipe};

/// The value a registration carries back in each of its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub usize);

bitflags::bitflags! {
    /// What readiness a registration asks for.
    #[repr(transparent)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Interest: u8 {
        /// Data to read, a connection to accept, or the peer closed.
        const READABLE = 0b01;
        /// Room to write, or a non-blocking connect finished.
        const WRITABLE = 0b10;
        /// Priority data: TCP urgent (out-of-band) data, a `/proc` or
        /// sysfs file that changed (`EPOLLPRI`). Linux only, as in mio:
        /// kqueue's `EVFILT_EXCEPT` is not on every BSD.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        const PRIORITY = 0b100;
    }
}

/// How a registration reports readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Reported on every wait while the fd is ready.
    Level,
    /// Reported once per change to ready (`EPOLLET` / `EV_CLEAR`): the
    /// handler must drain until `WouldBlock`.
    #[default]
    Edge,
    /// Reported once, then disabled until `reregister` (`EPOLLONESHOT` /
    /// `EV_ONESHOT`).
    Oneshot,
}

/// One readiness report.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    token: Token,
    flags: Flags,
}

bitflags::bitflags! {
    /// What an [`Event`] reports, as the backends fill it in.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    struct Flags: u8 {
        const READABLE = 1;
        const WRITABLE = 1 << 1;
        const ERROR = 1 << 2;
        const READ_CLOSED = 1 << 3;
        const WRITE_CLOSED = 1 << 4;
        const PRIORITY = 1 << 5;
    }
}

impl Event {
    /// An event as the selector would report it, for code that calls a
    /// handler without the selector (a retry after a pause, say).
    pub fn new(token: Token, interest: Interest) -> Self {
        let mut flags = Flags::empty();
        flags.set(Flags::READABLE, interest.contains(Interest::READABLE));
        flags.set(Flags::WRITABLE, interest.contains(Interest::WRITABLE));
        #[cfg(any(target_os = "linux", target_os = "android"))]
        flags.set(Flags::PRIORITY, interest.contains(Interest::PRIORITY));
        Event { token, flags }
    }

    /// The token of the registration this event belongs to.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Reading (or accepting) will make progress.
    pub fn is_readable(&self) -> bool {
        self.flags.contains(Flags::READABLE)
    }

    /// Writing will make progress.
    pub fn is_writable(&self) -> bool {
        self.flags.contains(Flags::WRITABLE)
    }

    /// Priority data is there (`EPOLLPRI`: TCP urgent data, say); only
    /// reported for a registration with [`Interest::PRIORITY`].
    pub fn is_priority(&self) -> bool {
        self.flags.contains(Flags::PRIORITY)
    }

    /// The fd has a pending error (read it with `SO_ERROR`).
    pub fn is_error(&self) -> bool {
        self.flags.contains(Flags::ERROR)
    }

    /// The peer closed its writing half: reads drain, then see end-of-file.
    pub fn is_read_closed(&self) -> bool {
        self.flags.contains(Flags::READ_CLOSED)
    }

    /// Writing can't succeed any more (the peer closed or reset).
    pub fn is_write_closed(&self) -> bool {
        self.flags.contains(Flags::WRITE_CLOSED)
    }

    /// This event with the readiness of `other` added.
    fn merged(&self, other: &Event) -> Event {
        Event {
            token: self.token,
            flags: self.flags | other.flags,
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("token", &self.token)
            .field("readable", &self.is_readable())
            .field("writable", &self.is_writable())
            .field("priority", &self.is_priority())
            .field("error", &self.is_error())
            .field("read_closed", &self.is_read_closed())
            .field("write_closed", &self.is_write_closed())
            .finish()
    }
}

/// Merges reports of the same token into one event each, in the order each
/// token first appears, in one pass (`index` maps a token to its place in
/// `out`; both are cleared first and keep their allocations). kqueue
/// reports an fd's read and write filters as two events; the loop above
/// wants one per registration, as epoll gives.
#[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
fn merge_by_token(
    events: impl Iterator<Item = Event>,
    out: &mut Vec<Event>,
    index: &mut std::collections::HashMap<usize, usize>,
) {
    out.clear();
    index.clear();
    for ev in events {
        match index.get(&ev.token.0) {
            Some(&at) => out[at] = out[at].merged(&ev),
            None => {
                index.insert(ev.token.0, out.len());
                out.push(ev);
            }
        }
    }
}

/// Runs one wait of a backend, retrying `EINTR` with the time that is left:
/// the single place the selector retries it.
fn retry_interrupted(
    timeout: Option<std::time::Duration>,
    mut wait_once: impl FnMut(Option<std::time::Duration>) -> super::Result<()>,
) -> super::Result<()> {
    let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
    let mut left = timeout;
    loop {
        match wait_once(left) {
            Err(e) if e.raw_os_error() == libc::EINTR => {
                if let Some(d) = deadline {
                    left = Some(d.saturating_duration_since(std::time::Instant::now()));
                }
            }
            r => return r,
        }
    }
}

/// Signals delivered through a [`Selector`]: a [`SignalPipe`] whose read end
/// is registered under a token, the same on every backend.
#[must_use = "dropping a SignalSource stops its deliveries and may restore the signal's old disposition"]
pub struct SignalSource {
    pipe: SignalPipe,
}

impl SignalSource {
    /// Installs a signal pipe for `signals` and registers it with
    /// `selector` under `token` (level-triggered, readable while caught
    /// signals wait to be read).
    ///
    /// # Errors
    ///
    /// Those of [`SignalPipe::install`] and of the registration.
    pub fn new(selector: &Selector, signals: &[Signal], token: Token) -> super::Result<Self> {
        let pipe = SignalPipe::install(signals)?;
        // SAFETY: the pipe's read end is private to this source (never lent
        // out, close-on-exec), so when it closes the file has no other fd
        // and the selector drops it.
        unsafe {
            selector.register(
                std::os::fd::AsFd::as_fd(&pipe),
                token,
                Interest::READABLE,
                Mode::Level,
            )?
        };
        Ok(Self { pipe })
    }

    /// Calls `f` with each signal caught since the last call (reading the
    /// pipe until it is empty).
    pub fn read(&self, f: impl FnMut(Signal)) -> super::Result<()> {
        self.pipe.drain_into(f)
    }
}

/// The pipe's read end, readable while caught signals wait to be read.
impl std::os::fd::AsFd for SignalSource {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.pipe)
    }
}

crate::sys::fd::as_raw_fd_from_as_fd!(SignalSource);

impl fmt::Debug for SignalSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalSource")
            .field("pipe", &self.pipe)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(token: usize, flags: Flags) -> Event {
        Event {
            token: Token(token),
            flags,
        }
    }

    #[test]
    fn reports_of_one_token_merge_in_first_seen_order() {
        let input = [
            ev(7, Flags::READABLE),
            ev(3, Flags::WRITABLE),
            ev(7, Flags::WRITABLE | Flags::WRITE_CLOSED),
            ev(9, Flags::READABLE | Flags::READ_CLOSED),
            ev(3, Flags::READABLE),
        ];
        let (mut out, mut index) = (Vec::new(), std::collections::HashMap::new());
        out.push(ev(1, Flags::ERROR));
        merge_by_token(input.into_iter(), &mut out, &mut index);
        assert_eq!(
            out,
            vec![
                ev(7, Flags::READABLE | Flags::WRITABLE | Flags::WRITE_CLOSED),
                ev(3, Flags::READABLE | Flags::WRITABLE),
                ev(9, Flags::READABLE | Flags::READ_CLOSED),
            ],
            "one per token, earlier contents gone"
        );
        merge_by_token(std::iter::empty(), &mut out, &mut index);
        assert!(out.is_empty() && index.is_empty());
    }
}
