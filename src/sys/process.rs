//! Processes: `fork`, reaping children, sending signals, CPU time, and
//! [`Spawn`], which starts a program with chosen fds at chosen numbers and
//! its own pid in a variable (what socket activation needs).
//!
//! `fork` is libc's, so the allocator's and libc's atfork handlers stay right.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use rustix::process::{Pid, WaitOptions};

use super::error::{errno_ptr, last_errno, Context, Error, Result};
use super::signal::Signal;

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
                .map(|s| Self::Signaled(Signal::from_raw(s)))
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
#[must_use = "a Child that is never waited for stays a zombie once it exits"]
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
    ///
    /// # References
    ///
    /// ```c
    /// pid_t waitpid(pid_t pid, int *wstatus, int options);
    /// ```
    ///
    /// - `waitpid(2)`: [Linux](https://man7.org/linux/man-pages/man2/waitpid.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=waitpid&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/waitpid.2.html)
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
    ///
    /// # References
    ///
    /// ```c
    /// pid_t waitpid(pid_t pid, int *wstatus, int options);
    /// ```
    ///
    /// - `waitpid(2)`: [Linux](https://man7.org/linux/man-pages/man2/waitpid.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=waitpid&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/waitpid.2.html)
    #[doc(alias = "waitpid")]
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
    ///
    /// # References
    ///
    /// ```c
    /// int kill(pid_t pid, int sig);
    /// ```
    ///
    /// - `kill(2)`: [Linux](https://man7.org/linux/man-pages/man2/kill.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kill&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kill.2.html)
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
///
/// # References
///
/// ```c
/// pid_t fork(void);
/// ```
///
/// - `fork(2)`: [Linux](https://man7.org/linux/man-pages/man2/fork.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fork&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fork.2.html)
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
///
/// # References
///
/// ```c
/// void _exit(int status);
/// ```
///
/// - `_exit(2)`: [Linux](https://man7.org/linux/man-pages/man2/_exit.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=_exit&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/_exit.2.html)
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
///
/// # References
///
/// ```c
/// int kill(pid_t pid, int sig);
/// ```
///
/// - `kill(2)`: [Linux](https://man7.org/linux/man-pages/man2/kill.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kill&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kill.2.html)
pub fn kill(pid: i32, sig: Signal) -> Result<()> {
    let args = || format!("pid {pid}, {sig}");
    let p = positive_pid(pid).ok_or_else(|| Error::invalid_input("kill", args()))?;
    // rustix only accepts signals it can name; fall back to libc for others.
    match rustix::process::Signal::from_named_raw(sig.as_raw()) {
        Some(s) => rustix::process::kill_process(p, s).ctx("kill", args),
        None => {
            // SAFETY: kill has no memory preconditions.
            if unsafe { libc::kill(pid, sig.as_raw()) } == 0 {
                Ok(())
            } else {
                Err(Error::new("kill", args(), last_errno()))
            }
        }
    }
}

/// Whether process `pid` exists (`kill(pid, 0)`); a zombie still exists.
///
/// # References
///
/// ```c
/// int kill(pid_t pid, int sig);
/// ```
///
/// - `kill(2)`: [Linux](https://man7.org/linux/man-pages/man2/kill.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kill&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kill.2.html)
#[doc(alias = "kill")]
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
///
/// # References
///
/// ```c
/// pid_t getpid(void);
/// ```
///
/// - `getpid(2)`: [Linux](https://man7.org/linux/man-pages/man2/getpid.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getpid&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getpid.2.html)
pub fn getpid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// One fd to place in a child: the parent's `fd` becomes number `target` in
/// the child, inherited across `exec` (close-on-exec cleared).
#[derive(Clone, Copy, Debug)]
struct FdMapping<'a> {
    fd: BorrowedFd<'a>,
    target: RawFd,
}

/// In a child between fork and exec: places each `(source, target)` pair,
/// first copying every source (and `keep`, when not -1) above all sources
/// and targets so no `dup2` overwrites a source still to be placed. The
/// copies are close-on-exec and vanish at exec. Returns the new number of
/// `keep`. Only `fcntl` and `dup2`: async-signal-safe, no allocation.
fn place_fds(
    pairs: &[(RawFd, RawFd)],
    temps: &mut [RawFd],
    keep: RawFd,
) -> std::result::Result<RawFd, i32> {
    let above = pairs
        .iter()
        .map(|&(s, t)| s.max(t))
        .max()
        .unwrap_or(0)
        .max(keep)
        + 1;
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    for (i, &(src, _)) in pairs.iter().enumerate() {
        // SAFETY: fcntl on an fd number; fails cleanly if it isn't open.
        let t = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, above) };
        if t < 0 {
            return Err(errno());
        }
        temps[i] = t;
    }
    let mut kept = keep;
    if keep >= 0 {
        // SAFETY: as above.
        kept = unsafe { libc::fcntl(keep, libc::F_DUPFD_CLOEXEC, above) };
        if kept < 0 {
            return Err(errno());
        }
    }
    for (i, &(_, target)) in pairs.iter().enumerate() {
        // SAFETY: dup2 between fd numbers; it clears close-on-exec on
        // `target`, which is what inheriting it needs.
        if unsafe { libc::dup2(temps[i], target) } < 0 {
            return Err(errno());
        }
    }
    Ok(kept)
}

/// A program to start with `fork` + `execve`, prepared entirely before the
/// fork so the child only makes system calls.
///
/// Beyond what [`std::process::Command`] offers it can place fds at chosen
/// numbers ([`Spawn::fd`]) and set an environment variable to the child's own
/// pid ([`Spawn::env_pid`]) between fork and exec, which is what the systemd
/// socket-activation protocol's `LISTEN_PID` needs. The child starts with an
/// empty signal mask and `SIGPIPE` at its default, whatever the parent did.
/// An `exec` failure comes back as an error naming the program, and the
/// failed child is reaped.
#[derive(Debug)]
#[must_use = "a Spawn starts nothing until .spawn()"]
pub struct Spawn<'a> {
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    env: Vec<(std::ffi::OsString, Option<std::ffi::OsString>)>,
    clear_env: bool,
    fds: Vec<FdMapping<'a>>,
    pid_env: Option<std::ffi::OsString>,
}

impl<'a> Spawn<'a> {
    /// Starts building a spawn of `program` (looked up in `PATH` when it has
    /// no `/`). `argv[0]` is `program` as given.
    pub fn new(program: impl AsRef<std::ffi::OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            clear_env: false,
            fds: Vec::new(),
            pid_env: None,
        }
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable in the child.
    pub fn env(
        &mut self,
        key: impl AsRef<std::ffi::OsStr>,
        value: impl AsRef<std::ffi::OsStr>,
    ) -> &mut Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts the child with an empty environment plus what `env` adds.
    pub fn env_clear(&mut self) -> &mut Self {
        self.clear_env = true;
        self.env.clear();
        self
    }

    /// Places `fd` at number `target` in the child, inherited across exec.
    /// Targets 0, 1 and 2 replace stdio.
    pub fn fd(&mut self, fd: BorrowedFd<'a>, target: RawFd) -> &mut Self {
        self.fds.push(FdMapping { fd, target });
        self
    }

    /// Sets environment variable `key` to the child's own pid, written in
    /// the child between fork and exec (`LISTEN_PID` for socket activation).
    pub fn env_pid(&mut self, key: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.pid_env = Some(key.as_ref().to_owned());
        self
    }

    /// The program as given.
    pub fn program(&self) -> &std::ffi::OsStr {
        &self.program
    }

    /// Forks and execs the child.
    ///
    /// # Errors
    ///
    /// `ENOENT` (call `spawn`) when the program is not found, `EINVAL` for a
    /// NUL byte in an argument or a repeated fd target, the errno of `fork`,
    /// or the errno with which `execve` failed in the child (call `execve`).
    ///
    /// # References
    ///
    /// ```c
    /// pid_t fork(void);
    /// int execve(const char *pathname, char *const argv[], char *const envp[]);
    /// ```
    ///
    /// - `fork(2)`: [Linux](https://man7.org/linux/man-pages/man2/fork.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=fork&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/fork.2.html)
    /// - `execve(2)`: [Linux](https://man7.org/linux/man-pages/man2/execve.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=execve&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/execve.2.html)
    #[doc(alias = "fork")]
    #[doc(alias = "execve")]
    pub fn spawn(&self) -> Result<Child> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;

        let prog = self.program.to_string_lossy().into_owned();
        let bad = |what: &str| Error::invalid_input("spawn", format!("{prog}: {what}"));
        let cstr =
            |s: &[u8]| CString::new(s).map_err(|_| bad("NUL byte in an argument or variable"));

        for (i, m) in self.fds.iter().enumerate() {
            if m.target < 0 || self.fds[..i].iter().any(|o| o.target == m.target) {
                return Err(bad(&format!("fd target {}", m.target)));
            }
        }
        let path = resolve_program(&self.program, &self.env, self.clear_env)
            .ok_or_else(|| Error::new("spawn", &prog, libc::ENOENT))?;
        let path = cstr(path.as_os_str().as_bytes())?;

        let mut argv = vec![cstr(self.program.as_bytes())?];
        for a in &self.args {
            argv.push(cstr(a.as_bytes())?);
        }

        // The final environment: inherited (unless cleared), then the
        // changes in order; the pid variable is filled in by the child.
        let mut vars: Vec<(std::ffi::OsString, std::ffi::OsString)> = if self.clear_env {
            Vec::new()
        } else {
            std::env::vars_os().collect()
        };
        for (k, v) in &self.env {
            vars.retain(|(ek, _)| ek != k);
            if let Some(v) = v {
                vars.push((k.clone(), v.clone()));
            }
        }
        if let Some(k) = &self.pid_env {
            vars.retain(|(ek, _)| ek != k);
        }
        let mut envs = Vec::with_capacity(vars.len() + 1);
        for (k, v) in &vars {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envs.push(cstr(&kv)?);
        }
        // "KEY=" followed by room for any pid and the NUL.
        let mut pid_var: Option<(Vec<u8>, usize)> = match &self.pid_env {
            Some(k) => {
                let mut b = k.as_bytes().to_vec();
                if b.contains(&0) || b.contains(&b'=') {
                    return Err(bad("bad pid variable name"));
                }
                b.push(b'=');
                let at = b.len();
                b.resize(at + 24, 0);
                Some((b, at))
            }
            None => None,
        };

        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = envs.iter().map(|e| e.as_ptr()).collect();
        if let Some((b, _)) = &pid_var {
            envp.push(b.as_ptr().cast());
        }
        envp.push(std::ptr::null());

        let pairs: Vec<(RawFd, RawFd)> = self
            .fds
            .iter()
            .map(|m| (m.fd.as_raw_fd(), m.target))
            .collect();
        let mut temps: Vec<RawFd> = vec![-1; pairs.len()];
        let (err_read, err_write) = super::fd::pipe()?;
        let err_write_raw = err_write.as_raw_fd();
        let pid_buf: Option<(*mut u8, usize)> =
            pid_var.as_mut().map(|(b, at)| (b.as_mut_ptr(), *at));

        // SAFETY: after the fork the child only runs `child_exec`, which
        // makes async-signal-safe system calls on memory prepared above and
        // never returns.
        match unsafe { fork() }? {
            Fork::Child => {
                // SAFETY: every pointer refers to buffers prepared above that
                // the child's copy of memory still holds.
                unsafe {
                    child_exec(
                        &path,
                        &argv_ptrs,
                        &envp,
                        &pairs,
                        &mut temps,
                        err_write_raw,
                        pid_buf,
                    )
                }
            }
            Fork::Parent(mut child) => {
                drop(err_write);
                let mut b = [0u8; 4];
                let mut got = 0;
                while got < 4 {
                    match super::fd::read(err_read.as_fd(), &mut b[got..]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.raw_os_error() == libc::EINTR => continue,
                        Err(e) => return Err(e),
                    }
                }
                if got == 0 {
                    return Ok(child);
                }
                // exec failed: reap the child, report its errno.
                let _ = child.wait();
                let errno = if got == 4 {
                    i32::from_ne_bytes(b)
                } else {
                    libc::EIO
                };
                Err(Error::new("execve", prog, errno))
            }
        }
    }
}

/// Finds the file `program` names: itself when it has a `/`, else the first
/// executable of that name on `PATH` (the child's `PATH` when it is set).
fn resolve_program(
    program: &std::ffi::OsStr,
    env: &[(std::ffi::OsString, Option<std::ffi::OsString>)],
    clear_env: bool,
) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if program.as_bytes().contains(&b'/') {
        return Some(program.into());
    }
    let child_path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let path = match child_path {
        Some(p) => p?,
        None if clear_env => return None,
        None => std::env::var_os("PATH")?,
    };
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok() && p.is_file())
}

/// The child's side of [`Spawn::spawn`]: signal state, fds, pid variable,
/// `execve`; on failure writes the errno to the error pipe and `_exit`s.
///
/// # Safety
///
/// Must run in a freshly forked child, with every pointer valid and the
/// arrays null-terminated as `Spawn::spawn` prepares them.
unsafe fn child_exec(
    path: &std::ffi::CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    pairs: &[(RawFd, RawFd)],
    temps: &mut [RawFd],
    err_fd: RawFd,
    pid_buf: Option<(*mut u8, usize)>,
) -> ! {
    let fail = |fd: RawFd, errno: i32| -> ! {
        let b = errno.to_ne_bytes();
        // SAFETY: write of a stack buffer, then _exit: async-signal-safe.
        unsafe {
            libc::write(fd, b.as_ptr().cast(), 4);
            libc::_exit(127)
        }
    };
    // SAFETY: only async-signal-safe calls on memory that
    // exists in this process (a stack sigset, the prepared buffers).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);

        let err_fd = match place_fds(pairs, temps, err_fd) {
            Ok(fd) => fd,
            Err(errno) => fail(err_fd, errno),
        };
        if let Some((buf, at)) = pid_buf {
            // Decimal digits of our pid, then NUL, after "KEY=".
            let (digits, n) = super::decimal(libc::getpid() as u32);
            for (i, d) in digits[..n].iter().enumerate() {
                *buf.add(at + i) = *d;
            }
            *buf.add(at + n) = 0;
        }
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(err_fd, *errno_ptr())
    }
}

/// This process's limit on open descriptors (`getrlimit(RLIMIT_NOFILE)`):
/// `(soft, hard)`, `None` meaning unlimited.
///
/// # References
///
/// ```c
/// int getrlimit(int resource, struct rlimit *rlim);
/// ```
///
/// - `getrlimit(2)`: [Linux](https://man7.org/linux/man-pages/man2/getrlimit.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getrlimit&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getrlimit.2.html)
#[doc(alias = "getrlimit")]
pub fn open_files_limit() -> (Option<u64>, Option<u64>) {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    (l.current, l.maximum)
}

/// Sets the soft limit on open descriptors (`setrlimit(RLIMIT_NOFILE)`),
/// keeping the hard limit.
///
/// # Errors
///
/// `EINVAL` when `soft` is above the hard limit.
///
/// # References
///
/// ```c
/// int setrlimit(int resource, const struct rlimit *rlim);
/// ```
///
/// - `setrlimit(2)`: [Linux](https://man7.org/linux/man-pages/man2/setrlimit.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=setrlimit&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/setrlimit.2.html)
#[doc(alias = "setrlimit")]
pub fn set_open_files_limit(soft: u64) -> Result<()> {
    let (_, hard) = open_files_limit();
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(soft),
            maximum: hard,
        },
    )
    .ctx("setrlimit", || format!("RLIMIT_NOFILE, soft {soft}"))
}

/// The CPU time (user plus system) this process has used so far
/// (`getrusage(RUSAGE_SELF)`).
///
/// # References
///
/// ```c
/// int getrusage(int who, struct rusage *usage);
/// ```
///
/// - `getrusage(2)`: [Linux](https://man7.org/linux/man-pages/man2/getrusage.2.html), [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=getrusage&sektion=2), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/getrusage.2.html)
#[doc(alias = "getrusage")]
pub fn own_cpu_time() -> Result<std::time::Duration> {
    // SAFETY: `rusage` is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a live, writable `rusage` the kernel fills in.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Err(Error::new("getrusage", "RUSAGE_SELF", last_errno()));
    }
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec.max(0) as u64)
            + std::time::Duration::from_micros(t.tv_usec.clamp(0, 999_999) as u64)
    };
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// The CPU time (user plus system) process `pid` has used so far, from
/// `/proc/<pid>/stat` in clock ticks of `sysconf(_SC_CLK_TCK)` (Linux,
/// Android).
///
/// # Errors
///
/// `ENOENT` for a process that is gone (as the read reports it), `EINVAL`
/// for a stat line that doesn't parse; `ENOSYS` on other systems.
pub fn cpu_time_of(pid: i32) -> Result<std::time::Duration> {
    let path = format!("/proc/{pid}/stat");
    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return Err(Error::new("cpu_time_of", path, libc::ENOSYS));
    }
    let stat = std::fs::read_to_string(&path)
        .map_err(|e| Error::new("read", path.clone(), e.raw_os_error().unwrap_or(libc::EIO)))?;
    parse_stat_cpu(&stat).ok_or_else(|| Error::new("cpu_time_of", path, libc::EINVAL))
}

/// utime + stime of a `/proc/<pid>/stat` line: fields 14 and 15, counted
/// after the command name (which may hold spaces and parentheses).
fn parse_stat_cpu(stat: &str) -> Option<std::time::Duration> {
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(std::time::Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / hz,
    ))
}

#[cfg(test)]
mod cpu_time_tests {
    use super::*;

    #[test]
    fn stat_lines_parse_after_the_command_name() {
        // SAFETY: as above.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let line = "42 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 300 100 0 0 20 0 1";
        assert_eq!(
            parse_stat_cpu(line),
            Some(std::time::Duration::from_nanos(400 * 1_000_000_000 / hz))
        );
        assert_eq!(parse_stat_cpu("42 (a) S 1 2"), None);
        assert_eq!(parse_stat_cpu("no parenthesis 1 2 3"), None);
        assert_eq!(parse_stat_cpu("42 (a) S 1 2 3 4 5 6 7 8 9 10 x 100"), None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "system calls")]
    fn this_process_has_used_some_cpu() {
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(own_cpu_time().unwrap() > std::time::Duration::ZERO);
        if cfg!(target_os = "linux") {
            let of = cpu_time_of(getpid()).unwrap();
            assert!(of > std::time::Duration::ZERO);
            let e = cpu_time_of(i32::MAX).unwrap_err();
            assert_eq!(e.raw_os_error(), libc::ENOENT, "{e}");
        }
    }
}
