//! Processes: `fork`, reaping children, signals, and spawning a
//! [`std::process::Command`] with chosen fds placed at chosen numbers (what
//! socket activation needs).
//!
//! `fork` is libc's, so the allocator's and libc's atfork handlers stay right.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::{Pid, WaitOptions};

use super::error::{last_errno, Context, Error, Result};

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

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It called `exit` (or returned from `main`) with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(Signal),
}

impl ExitStatus {
    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self == Self::Exited(0)
    }

    fn from_wait(status: rustix::process::WaitStatus) -> Option<Self> {
        if let Some(code) = status.exit_status() {
            Some(Self::Exited(code))
        } else {
            status
                .terminating_signal()
                .map(|s| Self::Signaled(Signal(s)))
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(c) => write!(f, "exit code {c}"),
            Self::Signaled(s) => write!(f, "killed by {s}"),
        }
    }
}

/// The result of [`fork`].
#[derive(Debug)]
pub enum Fork {
    /// In the parent: the new child.
    Parent(Child),
    /// In the child.
    Child,
}

/// A child process to be reaped with [`Child::wait`] or [`Child::try_wait`].
///
/// Dropping a `Child` neither kills nor reaps it: an exited child stays a
/// zombie until someone waits for it, as with `std::process::Child`.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    status: Option<ExitStatus>,
}

impl Child {
    /// Wraps the pid of a child of this process.
    ///
    /// Returns `None` for a pid that is not positive.
    pub fn from_pid(pid: i32) -> Option<Self> {
        positive_pid(pid).map(|pid| Self { pid, status: None })
    }

    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw_nonzero().get()
    }

    /// Blocks until the child ends and reaps it (`waitpid(2)`); `EINTR` is
    /// retried here. Calling it again returns the same status.
    ///
    /// # Errors
    ///
    /// `ECHILD` when the pid is not a child of this process (or someone else
    /// reaped it).
    #[doc(alias = "waitpid")]
    pub fn wait(&mut self) -> Result<ExitStatus> {
        loop {
            match self.wait_with(WaitOptions::empty()) {
                Ok(Some(s)) => return Ok(s),
                Ok(None) => continue,
                Err(e) if e.raw_os_error() == libc::EINTR => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reaps the child if it has ended (`waitpid(WNOHANG)`), without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.wait_with(WaitOptions::NOHANG)
    }

    fn wait_with(&mut self, opts: WaitOptions) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let pid = self.pid;
        let r = rustix::process::waitpid(Some(pid), opts)
            .ctx("waitpid", || format!("pid {}", pid.as_raw_nonzero()))?;
        // Stopped/continued reports (only with WUNTRACED/WCONTINUED, which we
        // never pass) would map to `None` and be waited for again.
        let status = r.and_then(|(_, st)| ExitStatus::from_wait(st));
        self.status = status;
        Ok(status)
    }

    /// Sends `sig` to the child. After it was reaped this is an `ESRCH` error
    /// rather than a signal to whatever process reused the pid.
    pub fn kill(&self, sig: Signal) -> Result<()> {
        if self.status.is_some() {
            return Err(Error::new(
                "kill",
                format!("pid {}, {sig}", self.pid()),
                libc::ESRCH,
            ));
        }
        kill(self.pid(), sig)
    }

    /// The status, if [`Child::wait`] or [`Child::try_wait`] reaped it.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }
}

/// Creates a child process (libc's `fork(2)`).
///
/// # Safety
///
/// In a multi-threaded parent (any test harness, anything that started a
/// thread) the child has only the calling thread, and locks that other
/// threads held (the allocator's, stdio's, the environment's) stay locked
/// forever. Until it calls `exec` or [`exit_immediately`], the child may
/// therefore only do async-signal-safe work: raw system calls, reads and
/// writes of memory that already exists (a shared mapping, a stack buffer),
/// atomics. It must not allocate, lock, print through `std::io`, read the
/// environment, or return into code that does (unwinding or returning from a
/// test function included): it ends with `exit_immediately`.
///
/// # Errors
///
/// `EAGAIN` when the process limit is reached, `ENOMEM`.
pub unsafe fn fork() -> Result<Fork> {
    // SAFETY: the caller upholds the contract above for the child side.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(Error::new("fork", "", last_errno())),
        0 => Ok(Fork::Child),
        pid => Child::from_pid(pid)
            .map(Fork::Parent)
            .ok_or_else(|| Error::new("fork", format!("returned pid {pid}"), libc::EINVAL)),
    }
}

/// Ends this process at once with `code` (`_exit(2)`): no destructors, no
/// atexit handlers, no stdio flush. Async-signal-safe, so it is how a forked
/// child ends.
#[doc(alias = "_exit")]
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Sends `sig` to process `pid` (`kill(2)`).
///
/// # Errors
///
/// `ESRCH` when no such process exists, `EPERM` when it isn't ours.
pub fn kill(pid: i32, sig: Signal) -> Result<()> {
    let args = || format!("pid {pid}, {sig}");
    let p = positive_pid(pid).ok_or_else(|| Error::invalid_input("kill", args()))?;
    // rustix only accepts signals it can name; fall back to libc for others.
    match rustix::process::Signal::from_named_raw(sig.0) {
        Some(s) => rustix::process::kill_process(p, s).ctx("kill", args),
        None => {
            // SAFETY: kill has no memory preconditions.
            if unsafe { libc::kill(pid, sig.0) } == 0 {
                Ok(())
            } else {
                Err(Error::new("kill", args(), last_errno()))
            }
        }
    }
}

/// Whether process `pid` exists (`kill(pid, 0)`); a zombie still exists.
pub fn process_exists(pid: i32) -> bool {
    positive_pid(pid).is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

/// A `Pid` for a positive number only (rustix asserts on negative ones).
fn positive_pid(pid: i32) -> Option<Pid> {
    if pid > 0 {
        Pid::from_raw(pid)
    } else {
        None
    }
}

/// This process's id (`getpid(2)`).
pub fn getpid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// One fd to place in a child: the parent's `fd` becomes number `target` in
/// the child, inherited across `exec` (close-on-exec cleared).
#[derive(Clone, Copy, Debug)]
pub struct FdMapping<'a> {
    /// The parent's descriptor.
    pub fd: BorrowedFd<'a>,
    /// The number it gets in the child.
    pub target: RawFd,
}

/// Spawns `cmd` with each [`FdMapping`] in `fds` placed at its target number
/// in the child, the way socket activation needs (fds from 3).
///
/// All other fds this crate creates stay close-on-exec, so the child gets
/// exactly stdio plus these. The parent's fds are not changed. The
/// rearrangement runs in the child between fork and exec and uses only
/// `fcntl` and `dup2`, which are async-signal-safe; a source fd that sits at
/// another mapping's target is moved out of the way first.
///
/// # Errors
///
/// `EINVAL` for a negative or repeated target; otherwise the error of
/// `fork`/`exec` (for example `ENOENT` naming the program).
pub fn spawn_with_fds(cmd: &mut Command, fds: &[FdMapping<'_>]) -> Result<std::process::Child> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    for (i, m) in fds.iter().enumerate() {
        if m.target < 0 || fds[..i].iter().any(|o| o.target == m.target) {
            return Err(Error::invalid_input(
                "spawn",
                format!("{program}: fd target {}", m.target),
            ));
        }
    }
    let pairs: Vec<(RawFd, RawFd)> = fds.iter().map(|m| (m.fd.as_raw_fd(), m.target)).collect();
    let above = pairs.iter().map(|&(s, t)| s.max(t)).max().unwrap_or(0) + 1;
    let mut temps: Vec<RawFd> = vec![-1; pairs.len()];
    // SAFETY: the closure runs in the child between fork and exec. It only
    // calls `fcntl` and `dup2` (async-signal-safe) and writes into `temps`,
    // which was allocated in the parent: it neither allocates nor locks.
    unsafe {
        cmd.pre_exec(move || {
            // Step 1: copy every source above all sources and targets, so no
            // later dup2 can overwrite a source still to be placed. The
            // copies are close-on-exec and vanish at exec.
            for (i, &(src, _)) in pairs.iter().enumerate() {
                let t = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, above);
                if t < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                temps[i] = t;
            }
            // Step 2: place each at its target; dup2 clears close-on-exec.
            for (i, &(_, target)) in pairs.iter().enumerate() {
                if libc::dup2(temps[i], target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().ctx("spawn", || program)
}
