//! Signals: [`Signal`], a signal number by its C name, and [`SignalPipe`],
//! which installs handlers that write each caught signal's number into a
//! pipe (the self-pipe trick), so a process can wait for signals with the
//! [`Selector`](super::event::Selector) next to its sockets instead of doing
//! work in a handler.
//!
//! The handler only calls `write(2)` on a non-blocking pipe and keeps
//! `errno`: it is async-signal-safe. One pipe serves the whole process.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

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

/// The write end the handler writes to; -1 while no pipe is installed.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signo: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: errno access and `write` are async-signal-safe; the byte
        // lives on this handler's stack. A full pipe drops the byte, which is
        // fine: the reader only needs to learn that the signal came.
        unsafe {
            let saved = *errno_ptr();
            let b = signo as u8;
            libc::write(fd, (&b as *const u8).cast(), 1);
            *errno_ptr() = saved;
        }
    }
}

/// Caught signals, delivered as bytes on a pipe; see the module docs.
///
/// Dropping it restores the dispositions its signals had before and closes
/// the pipe.
pub struct SignalPipe {
    read: OwnedFd,
    /// Each caught signal with the action it had before `install`.
    signals: Vec<(Signal, libc::sigaction)>,
}

impl SignalPipe {
    /// Installs handlers (`sigaction(2)` with `SA_RESTART`) for `signals`
    /// that write into a new pipe.
    ///
    /// # Errors
    ///
    /// `EBUSY` when a `SignalPipe` is already installed in this process;
    /// `EINVAL` from `sigaction` for `SIGKILL`/`SIGSTOP` or a bad number.
    #[doc(alias = "sigaction")]
    pub fn install(signals: &[Signal]) -> Result<Self> {
        let (read, write) = fd::pipe()?;
        fd::set_nonblocking(read.as_fd(), true)?;
        fd::set_nonblocking(write.as_fd(), true)?;
        let raw_write = write.into_raw_fd();
        if WRITE_FD
            .compare_exchange(-1, raw_write, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            // SAFETY: `raw_write` came from `into_raw_fd` above and was not
            // published; we still own it.
            drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw_write) });
            return Err(Error::new(
                "sigaction",
                "signal pipe installed already",
                libc::EBUSY,
            ));
        }
        let mut pipe = Self {
            read,
            signals: Vec::new(),
        };
        for &s in signals {
            let handler = on_signal as extern "C" fn(libc::c_int) as *const () as usize;
            let old = set_handler(s, handler)?;
            pipe.signals.push((s, old));
        }
        Ok(pipe)
    }

    /// Reads the signals caught since the last call, oldest first, without
    /// blocking (an empty vector when none came).
    pub fn drain(&self) -> Result<Vec<Signal>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match fd::read(self.read.as_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend(buf[..n].iter().map(|&b| Signal::from_raw(i32::from(b)))),
                Err(e) if e.is_would_block() => break,
                Err(e) if e.raw_os_error() == libc::EINTR => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
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
        for (s, old) in &self.signals {
            // Restoring can't fail for a signal we set before.
            let _ = restore(*s, old);
        }
        let w = WRITE_FD.swap(-1, Ordering::SeqCst);
        if w >= 0 {
            // SAFETY: `w` is the write end this value published in
            // `install`; no handler can use it after the swap above.
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

impl fmt::Debug for SignalPipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalPipe")
            .field("read", &self.read.as_raw_fd())
            .field(
                "signals",
                &self.signals.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            )
            .finish()
    }
}
