//! Signals: [`Signal`], a signal number by its C name, and [`SignalPipe`],
//! which installs handlers that write each caught signal's number into a
//! pipe (the self-pipe trick), so a process can wait for signals with the
//! [`Selector`](super::event::Selector) next to its sockets instead of doing
//! work in a handler.
//!
//! The handler only calls `write(2)` on non-blocking pipes and keeps
//! `errno`: it is async-signal-safe. Unlike a signalfd it needs no signal
//! blocked in every thread, so it is right in a process with threads (a
//! test harness, say). The event loop's signals
//! ([`crate::net::event::EventLoop::on_signals`]) are these pipes.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;

use super::error::{errno_ptr, last_errno, Error, Result};
use super::fd;

/// A signal number, printed by its C name.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

impl Signal {
    /// `SIGHUP`.
    pub const HUP: Self = Self(libc::SIGHUP);
    /// `SIGINT` (Ctrl-C).
    pub const INT: Self = Self(libc::SIGINT);
    /// `SIGQUIT`.
    pub const QUIT: Self = Self(libc::SIGQUIT);
    /// `SIGKILL`: can't be caught.
    pub const KILL: Self = Self(libc::SIGKILL);
    /// `SIGUSR1`.
    pub const USR1: Self = Self(libc::SIGUSR1);
    /// `SIGUSR2`.
    pub const USR2: Self = Self(libc::SIGUSR2);
    /// `SIGPIPE`.
    pub const PIPE: Self = Self(libc::SIGPIPE);
    /// `SIGALRM`.
    pub const ALRM: Self = Self(libc::SIGALRM);
    /// `SIGTERM`: the polite request to stop.
    pub const TERM: Self = Self(libc::SIGTERM);
    /// `SIGCHLD`: a child stopped or exited.
    pub const CHLD: Self = Self(libc::SIGCHLD);
    /// `SIGABRT`: what `abort()` raises.
    pub const ABRT: Self = Self(libc::SIGABRT);
    /// `SIGSEGV`.
    pub const SEGV: Self = Self(libc::SIGSEGV);

    /// A signal from its raw number.
    pub const fn from_raw(signo: i32) -> Self {
        Self(signo)
    }

    /// The raw signal number.
    pub const fn as_raw(self) -> i32 {
        self.0
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::HUP => "SIGHUP",
            Self::INT => "SIGINT",
            Self::QUIT => "SIGQUIT",
            Self::KILL => "SIGKILL",
            Self::USR1 => "SIGUSR1",
            Self::USR2 => "SIGUSR2",
            Self::PIPE => "SIGPIPE",
            Self::ALRM => "SIGALRM",
            Self::TERM => "SIGTERM",
            Self::CHLD => "SIGCHLD",
            Self::ABRT => "SIGABRT",
            Self::SEGV => "SIGSEGV",
            _ => return None,
        })
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "signal {}", self.0),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// How many [`SignalPipe`]s may live in one process at once.
pub const MAX_PIPES: usize = 8;

/// A free slot's write end, and a slot that wants nothing (array
/// initialisers: a `const` item may be repeated where an `AtomicI32` can't).
#[allow(clippy::declare_interior_mutable_const)]
const FREE: AtomicI32 = AtomicI32::new(-1);
#[allow(clippy::declare_interior_mutable_const)]
const NOTHING: AtomicU64 = AtomicU64::new(0);

/// Per pipe slot: the write end the handler writes to (-1: free) and the
/// signals it wants (bit `n` for signal `n`). Read by the handler, so only
/// atomics.
static WRITE_FDS: [AtomicI32; MAX_PIPES] = [FREE; MAX_PIPES];
static WANTED: [AtomicU64; MAX_PIPES] = [NOTHING; MAX_PIPES];

/// A signal our handler is installed for: the action it had before, and
/// how many pipes want it.
struct Installed {
    signal: Signal,
    old: libc::sigaction,
    users: usize,
}

// SAFETY: `sigaction` is plain old data (a handler address, flags, a mask);
// it is only moved between threads under the `INSTALLED` lock.
unsafe impl Send for Installed {}

/// The signals our handler is installed for. Taken by `install` and `drop`
/// only, never by the handler.
static INSTALLED: Mutex<Vec<Installed>> = Mutex::new(Vec::new());

fn bit(s: Signal) -> u64 {
    match u32::try_from(s.as_raw()) {
        Ok(n) if n < 64 => 1 << n,
        _ => 0,
    }
}

extern "C" fn on_signal(signo: libc::c_int) {
    let bit = bit(Signal::from_raw(signo));
    // SAFETY: errno access is async-signal-safe; it is restored below.
    let saved = unsafe { *errno_ptr() };
    for (fd, wanted) in WRITE_FDS.iter().zip(&WANTED) {
        let fd = fd.load(Ordering::Acquire);
        if fd >= 0 && wanted.load(Ordering::Relaxed) & bit != 0 {
            let b = signo as u8;
            // SAFETY: `write` is async-signal-safe; the byte lives on this
            // handler's stack. A full pipe drops the byte, which is fine:
            // the reader only needs to learn that the signal came.
            unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
        }
    }
    // SAFETY: as above.
    unsafe { *errno_ptr() = saved };
}

/// Caught signals, delivered as bytes on a pipe; see the module docs.
///
/// Up to [`MAX_PIPES`] may live at once, for the same signals or others:
/// each caught signal is written to every pipe that asked for it. Dropping
/// one stops its deliveries and, once no pipe wants a signal, restores the
/// disposition that signal had before the first `install`.
#[must_use = "dropping a SignalPipe stops its deliveries and may restore the signal's old disposition"]
pub struct SignalPipe {
    read: OwnedFd,
    slot: usize,
    signals: Vec<Signal>,
}

impl SignalPipe {
    /// Installs handlers (`sigaction(2)` with `SA_RESTART`) for `signals`
    /// that write into a new pipe.
    ///
    /// # Errors
    ///
    /// `EBUSY` when [`MAX_PIPES`] pipes live already; `EINVAL` for a
    /// signal number from 64 up (the pipes' signal sets hold 0 to 63), and
    /// from `sigaction` for `SIGKILL`/`SIGSTOP` or a bad number.
    ///
    /// # References
    ///
    /// ```c
    /// int sigaction(int signum, const struct sigaction *act, struct sigaction *oldact);
    /// ```
    ///
    /// - `sigaction(2)`: [Linux](https://man7.org/linux/man-pages/man2/sigaction.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=sigaction&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/sigaction.2.html)
    #[doc(alias = "sigaction")]
    pub fn install(signals: &[Signal]) -> Result<Self> {
        if let Some(&s) = signals.iter().find(|&&s| bit(s) == 0) {
            return Err(Error::new("sigaction", s, libc::EINVAL));
        }
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        let slot = WRITE_FDS
            .iter()
            .position(|fd| fd.load(Ordering::Acquire) < 0)
            .ok_or_else(|| {
                Error::new(
                    "sigaction",
                    format!("{MAX_PIPES} signal pipes installed already"),
                    libc::EBUSY,
                )
            })?;
        let (read, write) = fd::pipe()?;
        fd::set_nonblocking(read.as_fd(), true)?;
        fd::set_nonblocking(write.as_fd(), true)?;
        let mut pipe = Self {
            read,
            slot,
            signals: Vec::new(),
        };
        WANTED[slot].store(
            signals.iter().map(|&s| bit(s)).fold(0, |a, b| a | b),
            Ordering::Relaxed,
        );
        WRITE_FDS[slot].store(write.into_raw_fd(), Ordering::Release);
        for &s in signals {
            if pipe.signals.contains(&s) {
                continue;
            }
            match installed.iter_mut().find(|i| i.signal == s) {
                Some(i) => i.users += 1,
                None => {
                    let handler = on_signal as extern "C" fn(libc::c_int) as *const () as usize;
                    // On failure `pipe` is dropped, which undoes the rest.
                    let old = match set_handler(s, handler) {
                        Ok(old) => old,
                        Err(e) => {
                            drop(installed);
                            return Err(e);
                        }
                    };
                    installed.push(Installed {
                        signal: s,
                        old,
                        users: 1,
                    });
                }
            }
            pipe.signals.push(s);
        }
        Ok(pipe)
    }

    /// The signals this pipe receives.
    pub fn signals(&self) -> &[Signal] {
        &self.signals
    }

    /// Reads the signals caught since the last call, oldest first, without
    /// blocking (an empty vector when none came).
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t read(int fd, void *buf, size_t count);
    /// ```
    ///
    /// - `read(2)`: [Linux](https://man7.org/linux/man-pages/man2/read.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=read&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/read.2.html)
    #[doc(alias = "read")]
    pub fn drain(&self) -> Result<Vec<Signal>> {
        let mut out = Vec::new();
        self.drain_into(|s| out.push(s))?;
        Ok(out)
    }

    /// Calls `f` with each signal caught since the last call, oldest first,
    /// without blocking and without allocating.
    ///
    /// # References
    ///
    /// ```c
    /// ssize_t read(int fd, void *buf, size_t count);
    /// ```
    ///
    /// - `read(2)`: [Linux](https://man7.org/linux/man-pages/man2/read.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=read&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/read.2.html)
    #[doc(alias = "read")]
    pub fn drain_into(&self, mut f: impl FnMut(Signal)) -> Result<()> {
        let mut buf = [0u8; 64];
        loop {
            match fd::read(self.read.as_fd(), &mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => buf[..n]
                    .iter()
                    .for_each(|&b| f(Signal::from_raw(i32::from(b)))),
                Err(e) if e.is_would_block() => return Ok(()),
                Err(e) if e.raw_os_error() == libc::EINTR => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Installs `handler` for `sig`, returning the previous action.
fn set_handler(sig: Signal, handler: usize) -> Result<libc::sigaction> {
    // SAFETY: `sigaction` is plain old data; zeroed is a valid empty value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: `sa.sa_mask` is a live sigset_t owned by this frame.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    restore(sig, &sa)
}

/// Installs the action `sa` for `sig`, returning the previous one.
fn restore(sig: Signal, sa: &libc::sigaction) -> Result<libc::sigaction> {
    // SAFETY: zeroed `sigaction` is a valid value for the kernel to fill.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `sa` is fully initialised (its handler is SIG_DFL, SIG_IGN, a
    // previous handler, or `on_signal`, which is async-signal-safe) and
    // `old` is a live, writable sigaction.
    let rc = unsafe { libc::sigaction(sig.as_raw(), sa, &mut old) };
    if rc == 0 {
        Ok(old)
    } else {
        Err(Error::new("sigaction", sig, last_errno()))
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        for s in &self.signals {
            if let Some(at) = installed.iter().position(|i| i.signal == *s) {
                installed[at].users -= 1;
                if installed[at].users == 0 {
                    let i = installed.swap_remove(at);
                    // Restoring can't fail for a signal we set before.
                    let _ = restore(i.signal, &i.old);
                }
            }
        }
        WANTED[self.slot].store(0, Ordering::Relaxed);
        let w = WRITE_FDS[self.slot].swap(-1, Ordering::AcqRel);
        if w >= 0 {
            // SAFETY: `w` is the write end this value published in
            // `install`; handlers that start after the swap skip the slot.
            drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(w) });
        }
    }
}

impl AsFd for SignalPipe {
    /// The read end: register it for readability, then call
    /// [`SignalPipe::drain`].
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

crate::sys::fd::as_raw_fd_from_as_fd!(SignalPipe);

impl fmt::Debug for SignalPipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalPipe")
            .field("read", &self.read.as_raw_fd())
            .field("signals", &self.signals)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "system calls")]
    fn signal_numbers_the_pipes_cant_hold_are_refused_up_front() {
        for raw in [64, 65, -1] {
            let e = SignalPipe::install(&[Signal::USR1, Signal::from_raw(raw)]).unwrap_err();
            assert_eq!(e.raw_os_error(), libc::EINVAL, "{raw}: {e}");
            assert_eq!(e.call(), "sigaction");
        }
    }
}
