//! `libprocwire_preload.so`: preloaded into an unmodified program
//! (`LD_PRELOAD`), it moves the bytes of the Unix-domain stream connections
//! made to the socket paths named in `PROCWIRE_ACCEL` (`:`-separated) onto
//! procwire's shared-memory rings, while the program's fd stays the real
//! connected socket (`procwire::ipc::accel` has the protocol).
//!
//! This is the *safe mode*: the kernel's readiness of each accelerated
//! socket mirrors its rings (doorbells, filler bytes), so the program's own
//! `epoll`, `poll` and `select` stay correct without being wrapped.
//!
//! With `PROCWIRE_ACCEL` unset, or naming no socket the program uses, every
//! wrapper is a pass-through: one atomic load, then the program's own libc
//! function. `PROCWIRE_ACCEL_REPORT=FILE` appends one line per process at
//! exit with what was accelerated.
//!
//! The rules a preload must keep (they are why this file looks as it does):
//! the real functions are found once, in the constructor; the pass-through
//! path takes no lock, allocates nothing and touches no thread-local; errno
//! is set only where -1 is returned; unwinding out of an exported function
//! aborts the process (Rust 1.81+), so a half-done ring operation is never
//! redone on the socket.

#![cfg(target_os = "linux")]

mod epoll;
mod real;
mod table;

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use procwire::ipc::accel::{self, Accel, Attach, Flags};
use procwire::sys::interpose::ffi::{
    c_char, c_int, c_void, fd_set, iovec, msghdr, nfds_t, pollfd, sigset_t, size_t, sockaddr,
    sockaddr_un, socklen_t, ssize_t, timespec, timeval, AF_UNIX, EAGAIN, EINVAL, FIOCLEX, FIONBIO,
    FIONCLEX, FIONREAD, F_DUPFD, F_DUPFD_CLOEXEC, MSG_DONTWAIT, MSG_OOB, MSG_PEEK, POLLIN,
    POLLRDNORM, SHUT_RDWR, SHUT_WR, SOCK_STREAM,
};
use procwire::sys::interpose::{self};

use table::{Entry, State};

/// Whether `PROCWIRE_ACCEL` named at least one path.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// What the report line counts.
static ACCELERATED: AtomicU64 = AtomicU64::new(0);
static PLAIN: AtomicU64 = AtomicU64::new(0);
static DOWNGRADED: AtomicU64 = AtomicU64::new(0);
static BYTES_SENT: AtomicU64 = AtomicU64::new(0);
static BYTES_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// The configuration read by the constructor.
struct Config {
    paths: Vec<std::path::PathBuf>,
    report: Option<std::path::PathBuf>,
    ring: usize,
}

static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();

/// `fork`s this process made, or that made it (counted in the parent
/// before each, so both processes see the count): an entry made before
/// the last of them may be shared with another process.
static FORKS: AtomicU32 = AtomicU32::new(0);

extern "C" fn count_fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// How many `fork`s this process has seen (see [`FORKS`]).
pub(crate) fn forks() -> u32 {
    FORKS.load(Ordering::Relaxed)
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = fini;

extern "C" fn init() {
    real::resolve();
    interpose::remember_pid();
    // Ring locks hold the thread id, cached per thread: a forked child's
    // thread has a new one.
    let _ = interpose::at_fork_child(interpose::forked);
    // Connections that a fork shared: see `forks`.
    let _ = interpose::at_fork_prepare(count_fork);
    let paths: Vec<std::path::PathBuf> = std::env::var_os("PROCWIRE_ACCEL")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let report = std::env::var_os("PROCWIRE_ACCEL_REPORT")
        .filter(|v| !v.is_empty())
        .map(Into::into);
    let ring = std::env::var("PROCWIRE_ACCEL_RING")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|r| r.is_power_of_two() && (accel::MIN_RING..=accel::MAX_RING).contains(r))
        .unwrap_or(accel::DEFAULT_RING);
    let on = !paths.is_empty();
    // Fast mode unless told otherwise; a value this library does not know
    // is said once on stderr, and the safe mode is taken.
    let fast = match std::env::var_os("PROCWIRE_ACCEL_MODE") {
        None => true,
        Some(v) if v == "fast" || v.is_empty() => true,
        Some(v) if v == "safe" => false,
        Some(v) => {
            if on {
                // Before the table exists, so `write` passes through.
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!(
                        "procwire-preload: PROCWIRE_ACCEL_MODE={} is neither fast nor safe; using safe\n",
                        v.to_string_lossy()
                    )
                    .as_bytes(),
                );
            }
            false
        }
    };
    epoll::set_fast(fast);
    if let Some(v) = std::env::var_os("PROCWIRE_SPIN_US").filter(|v| !v.is_empty()) {
        match v.to_str().and_then(|t| t.parse::<u32>().ok()) {
            Some(us) => epoll::set_spin_us(us.min(1_000_000)),
            None if on => {
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!(
                        "procwire-preload: PROCWIRE_SPIN_US={} is not a number of microseconds; not spinning\n",
                        v.to_string_lossy()
                    )
                    .as_bytes(),
                );
            }
            None => {}
        }
    }
    let _ = CONFIG.set(Config {
        paths,
        report,
        ring,
    });
    if on && table::init() {
        ENABLED.store(true, Ordering::Release);
    }
}

extern "C" fn fini() {
    if !ENABLED.load(Ordering::Acquire) {
        return;
    }
    table::closing_all();
    // From here every wrapper passes through: the report's own file must
    // never meet an entry.
    ENABLED.store(false, Ordering::Release);
    write_report();
}

/// Appends this process image's line to the report (at exit, and before
/// an `exec`, which ends the image without running `fini`); the counts
/// start again from zero, so an `exec` that fails and a later exit don't
/// count anything twice.
fn write_report() {
    let Some(path) = CONFIG.get().and_then(|c| c.report.as_ref()) else {
        return;
    };
    let program = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    let line = format!(
        "pid={} program={} accelerated={} plain={} downgraded={} bytes_sent={} bytes_received={}\n",
        procwire::sys::process::getpid(),
        program.trim(),
        ACCELERATED.swap(0, Ordering::Relaxed),
        PLAIN.swap(0, Ordering::Relaxed),
        DOWNGRADED.swap(0, Ordering::Relaxed),
        BYTES_SENT.swap(0, Ordering::Relaxed),
        BYTES_RECEIVED.swap(0, Ordering::Relaxed),
    );
    // One `write` of the whole line to an O_APPEND file: lines of
    // processes that exit together don't interleave. `std::fs` goes
    // through `open` and `write`, wrapped here: callers make sure no
    // entry can match (at exit every wrapper is a pass-through; before an
    // exec the report file's fd is new and purged).
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        use std::io::Write;
        let _ = f.write_all(line.as_bytes());
    }
}

/// Whether `PROCWIRE_ACCEL` named a path (and the fd table is there).
#[inline]
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The program's fd, borrowed for one call.
pub(crate) fn fd_of(fd: c_int) -> BorrowedFd<'static> {
    // SAFETY: the program passed `fd` to the call being wrapped and holds it
    // open for that call; the borrow does not outlive the call.
    unsafe { interpose::borrow(fd) }
}

/// Defines the wrapper of a call on one fd that this library answers for
/// only where the fd is accelerated (or pending): there, the given
/// function; anywhere else the program's own. The wrapper's own work is
/// out of line, so that its pass-through has no stack frame and ends in a
/// jump to libc's function, which returns straight to the program.
macro_rules! data_call {
    ($(#[$doc:meta])* $name:ident($fd:ident: c_int $(, $arg:ident: $t:ty)*) -> $r:ty = $slow:ident;) => {
        #[doc = concat!("The program's `", stringify!($name), "`, looked at by this library first.")]
        $(#[$doc])*
        ///
        /// # Safety
        ///
        #[doc = concat!("As for libc's `", stringify!($name), "`: the program's pointers are valid for what the call reads and writes.")]
        #[no_mangle]
        pub unsafe extern "C" fn $name($fd: c_int $(, $arg: $t)*) -> $r {
            if let Some(e) = data_entry($fd) {
                // SAFETY: the program's arguments.
                return unsafe { $slow(e, $fd $(, $arg)*) };
            }
            // SAFETY: the program's arguments.
            unsafe { real::$name($fd $(, $arg)*) }
        }
    };
}

/// The result of a call made on an accelerated fd, in C form.
fn ret(r: procwire::sys::Result<usize>) -> ssize_t {
    match r {
        Ok(n) => n as ssize_t,
        Err(e) => {
            interpose::set_errno(e.raw_os_error());
            -1
        }
    }
}

/// The entry of an fd on which data calls need this library.
#[inline]
fn data_entry(fd: c_int) -> Option<&'static Entry> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let e = table::get(fd)?;
    match e.state() {
        State::Accel | State::Pending => Some(e),
        _ => None,
    }
}

/// Whether `path` (a Unix socket path a program connects to or listens on)
/// is one of `PROCWIRE_ACCEL`'s: the same file (device and inode).
fn listed(path: &std::path::Path) -> Option<(u64, u64)> {
    let cfg = CONFIG.get()?;
    let target = interpose::dev_ino(path).ok()?;
    cfg.paths
        .iter()
        .any(|p| interpose::dev_ino(p).ok() == Some(target))
        .then_some(target)
}

/// The path of a `sockaddr_un` the program passed, if it is a path.
///
/// # Safety
///
/// `addr` is null or valid for `len` bytes.
unsafe fn unix_path(addr: *const sockaddr, len: socklen_t) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if addr.is_null() || (len as usize) <= 2 {
        return None;
    }
    // SAFETY: the program gives `len` readable bytes at `addr`.
    let bytes = unsafe { std::slice::from_raw_parts(addr.cast::<u8>(), len as usize) };
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]);
    if family != AF_UNIX as u16 || bytes[2] == 0 {
        return None;
    }
    let path = &bytes[2..];
    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
    Some(std::ffi::OsStr::from_bytes(&path[..end]).into())
}

/// Whether `fd` is a Unix-domain stream socket.
fn unix_stream(fd: BorrowedFd<'_>) -> bool {
    interpose::socket_domain(fd).ok() == Some(AF_UNIX)
        && interpose::socket_type(fd).ok() == Some(SOCK_STREAM)
}

// ---------------------------------------------------------------- lifecycle

/// The program's `listen`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `listen`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    // SAFETY: the program's arguments, passed on.
    let r = unsafe { real::listen(fd, backlog) };
    if r == 0 && ENABLED.load(Ordering::Relaxed) {
        let errno = interpose::errno();
        mark_listener(fd);
        interpose::set_errno(errno);
    }
    r
}

fn mark_listener(fd: c_int) {
    let sock = fd_of(fd);
    if !unix_stream(sock) {
        return;
    }
    let Ok(Some(name)) = interpose::local_unix_name(sock) else {
        return;
    };
    if name.first() == Some(&0) {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(&name));
    let Some((dev, ino)) = listed(path) else {
        return;
    };
    // The marker lives as long as this process (close-on-exec); a second
    // listen on the same file finds it taken, which is as good.
    if let Ok(marker) = interpose::abstract_marker(&accel::listener_marker(dev, ino)) {
        std::mem::forget(marker);
    }
    table::install(fd, Entry::listener());
}

/// The program's `connect`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `connect`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let announced = ENABLED.load(Ordering::Relaxed) && {
        // SAFETY: the program's address, read within its length.
        let path = unsafe { unix_path(addr, len) };
        path.is_some_and(|p| announce(fd, &p))
    };
    // SAFETY: the program's arguments, passed on.
    let r = unsafe { real::connect(fd, addr, len) };
    if r == 0 && announced {
        table::install(fd, Entry::pending());
    }
    r
}

/// Binds a client socket to an announcement name when the listener of
/// `path` takes part; whether it is announced now.
fn announce(fd: c_int, path: &std::path::Path) -> bool {
    let errno = interpose::errno();
    let sock = fd_of(fd);
    let done = (|| {
        let (dev, ino) = listed(path)?;
        if !unix_stream(sock) {
            return None;
        }
        match interpose::local_unix_name(sock).ok()? {
            // Announced by an earlier try of this connect.
            Some(name) if accel::is_announcement(&name) => return Some(()),
            Some(_) => return None,
            None => {}
        }
        if !interpose::abstract_name_taken(&accel::listener_marker(dev, ino)) {
            return None;
        }
        let name = accel::client_announcement().ok()?;
        interpose::bind_abstract(sock, &name).ok()
    })()
    .is_some();
    interpose::set_errno(errno);
    done
}

/// The program's `accept`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `accept`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the program's arguments.
    unsafe { accept_common(fd, addr, len, 0, false) }
}

/// The program's `accept4`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `accept4`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the program's arguments.
    unsafe { accept_common(fd, addr, len, flags, true) }
}

/// `accept`/`accept4` of a listener this library looks after: the
/// peer's address is read here, and an announced client is offered a
/// segment before the program sees the new fd.
///
/// # Safety
///
/// As for `accept4`: `addr` and `len` are null or valid.
unsafe fn accept_common(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
    four: bool,
) -> c_int {
    let listener = ENABLED.load(Ordering::Relaxed)
        && table::get(fd).is_some_and(|e| e.state() == State::Listener);
    if !listener {
        // SAFETY: the program's arguments, passed on.
        let r = unsafe {
            if four {
                real::accept4(fd, addr, len, flags)
            } else {
                real::accept(fd, addr, len)
            }
        };
        if r >= 0 && ENABLED.load(Ordering::Relaxed) {
            table::purge(r);
        }
        return r;
    }
    // SAFETY: all-zero is a valid `sockaddr_un`.
    let mut peer: sockaddr_un = unsafe { std::mem::zeroed() };
    let mut plen = std::mem::size_of::<sockaddr_un>() as socklen_t;
    // SAFETY: `peer` has `plen` writable bytes.
    let r = unsafe { real::accept4(fd, (&raw mut peer).cast(), &mut plen, flags) };
    if r < 0 {
        return r;
    }
    let errno = interpose::errno();
    table::purge(r);
    // SAFETY: the kernel wrote `plen` bytes of `peer` (at most its size).
    let name = unsafe {
        std::slice::from_raw_parts(
            (&raw const peer).cast::<u8>().add(2),
            (plen as usize)
                .saturating_sub(2)
                .min(std::mem::size_of_val(&peer.sun_path)),
        )
    };
    if accel::is_announcement(name) {
        let ring = CONFIG.get().map_or(accel::DEFAULT_RING, |c| c.ring);
        match Accel::offer(fd_of(r), ring) {
            Ok(a) => {
                ACCELERATED.fetch_add(1, Ordering::Relaxed);
                table::install(r, Entry::accelerated(a));
                // The program sees an unnamed peer, as without us.
                plen = 2;
            }
            Err(_) => {
                PLAIN.fetch_add(1, Ordering::Relaxed);
            }
        }
    } else {
        PLAIN.fetch_add(1, Ordering::Relaxed);
    }
    if !addr.is_null() && !len.is_null() {
        // SAFETY: the program gives `*len` writable bytes at `addr`.
        unsafe {
            let room = (*len as usize).min(plen as usize);
            std::ptr::copy_nonoverlapping((&raw const peer).cast::<u8>(), addr.cast::<u8>(), room);
            *len = plen;
        }
    }
    interpose::set_errno(errno);
    r
}

/// Whether a change to the fds `a` or `b` concerns the table: either has
/// an entry, and the caller is not a `vfork` child (which shares its
/// parent's memory, table included, and passes through).
fn tracked(a: c_int, b: c_int) -> bool {
    ENABLED.load(Ordering::Relaxed)
        && (table::get(a).is_some() || table::get(b).is_some())
        && !interpose::in_vfork_child()
}

/// The program's `close`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `close`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if tracked(fd, fd) {
        table::remove(fd);
    }
    // SAFETY: the program's argument.
    unsafe { real::close(fd) }
}

/// The program's `close_range`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `close_range`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: u32, last: u32, flags: c_int) -> c_int {
    // SAFETY: the program's arguments.
    let r = unsafe { real::close_range(first, last, flags) };
    // CLOSE_RANGE_CLOEXEC (4) only marks them.
    if r == 0 && ENABLED.load(Ordering::Relaxed) && flags & 4 == 0 && !interpose::in_vfork_child() {
        table::remove_range(first, last);
    }
    r
}

/// The program's `dup`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `dup`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: the program's argument.
    let r = unsafe { real::dup(fd) };
    if r >= 0 && tracked(fd, r) {
        table::share(fd, r);
    }
    r
}

/// The program's `dup2`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `dup2`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    // SAFETY: the program's arguments.
    let r = unsafe { real::dup2(fd, to) };
    if r >= 0 && fd != to && tracked(fd, r) {
        table::share(fd, r);
    }
    r
}

/// The program's `dup3`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `dup3`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    // SAFETY: the program's arguments.
    let r = unsafe { real::dup3(fd, to, flags) };
    if r >= 0 && tracked(fd, r) {
        table::share(fd, r);
    }
    r
}

/// `fcntl` is variadic in C; its one optional argument is an `int` or a
/// pointer, which the x86-64 and AArch64 Linux calling conventions pass
/// in the register a third fixed argument uses, so it is taken as a
/// machine word and passed on unchanged.
///
/// # Safety
///
/// As for libc's `fcntl`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: the program's arguments.
    let r = unsafe { real::fcntl(fd, cmd, arg) };
    after_fcntl(fd, cmd, r)
}

/// The program's `fcntl64`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `fcntl64`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: the program's arguments.
    let r = unsafe { real::fcntl64(fd, cmd, arg) };
    after_fcntl(fd, cmd, r)
}

fn after_fcntl(fd: c_int, cmd: c_int, r: c_int) -> c_int {
    if r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && tracked(fd, r) {
        table::share(fd, r);
    }
    r
}

data_call! {
    shutdown(fd: c_int, how: c_int) -> c_int = slow_shutdown;
}

/// [`shutdown`] on an fd this library looks after (see [`data_call`]).
///
/// # Safety
///
/// As for [`shutdown`].
#[inline(never)]
unsafe fn slow_shutdown(e: &'static Entry, fd: c_int, how: c_int) -> c_int {
    if how == SHUT_WR || how == SHUT_RDWR {
        if let Conn::Accel(a) = attached(e, fd, false) {
            // Writes after this fail as the socket's would; the kernel's
            // shutdown below is the end-of-file the peer reads once its
            // ring is empty.
            a.shut_write();
        }
    }
    // SAFETY: the program's arguments.
    unsafe { real::shutdown(fd, how) }
}

data_call! {
    /// `ioctl` is variadic in C; see [`fcntl`] for why its argument is a word.
    ioctl(fd: c_int, req: usize, arg: usize) -> c_int = slow_ioctl;
}

/// [`ioctl`] on an fd this library looks after (see [`data_call`]).
///
/// # Safety
///
/// As for [`ioctl`].
#[inline(never)]
unsafe fn slow_ioctl(e: &'static Entry, fd: c_int, req: usize, arg: usize) -> c_int {
    if req == FIONREAD as usize && arg != 0 {
        if let Conn::Accel(a) = attached(e, fd, false) {
            if let Some(n) = a.readable() {
                // SAFETY: FIONREAD's argument is the program's `int *`.
                unsafe { *(arg as *mut c_int) = n.min(c_int::MAX as usize) as c_int };
                return 0;
            }
        }
    } else if ![FIONBIO as usize, FIOCLEX as usize, FIONCLEX as usize].contains(&req) {
        // A request this library can't answer for the rings: the
        // socket's own, once it is whole again.
        leave_fd(e, fd);
    }
    // SAFETY: the program's arguments.
    unsafe { real::ioctl(fd, req, arg) }
}

// ------------------------------------------------------------------ waits
//
// Safe mode leaves readiness to the kernel, with one exception: a socket
// woken only by a non-data byte (the server's hello, which a pending client
// takes off when it attaches, or a doorbell for bytes already read) is not
// readable, and a program that polls a blocking fd and then reads would
// block where the socket alone never would. So a wait that involves a
// pending or accelerated fd attaches pending clients first, and takes
// readable-without-data fds out of the answer, waiting again when nothing
// else is left. Waits that involve no such fd are pass-throughs.

/// Whether an fd the kernel called readable has bytes for the program (or
/// end-of-file); `true` for any fd this library does not look after.
fn really_readable(fd: c_int) -> bool {
    let Some(e) = data_entry(fd) else { return true };
    match attached(e, fd, false) {
        Conn::Accel(a) => a.poll_readable(fd_of(fd)).unwrap_or(true),
        Conn::Plain | Conn::Wait(_) => true,
    }
}

/// Fast mode: whether accelerated `fd`'s ring has bytes for a `poll` or
/// `select` that asks for reading. A wait that asks only the kernel must
/// look here: fast mode may have taken the doorbell off while the program
/// was awake ([`Accel::disarm_lazy`]). The first such look also keeps the
/// connection's arms from then on ([`Accel::kernel_waits`]), so the
/// kernel's readiness mirrors the ring again.
///
/// [`Accel::disarm_lazy`]: procwire::ipc::accel::Accel::disarm_lazy
/// [`Accel::kernel_waits`]: procwire::ipc::accel::Accel::kernel_waits
fn ring_ready(fd: c_int) -> bool {
    if !epoll::fast() {
        return false;
    }
    let Some(a) = data_entry(fd)
        .filter(|e| e.state() == State::Accel)
        .and_then(|e| e.accel())
    else {
        return false;
    };
    if a.needs_kernel_look() {
        return a.kernel_waits(fd_of(fd)).unwrap_or(true);
    }
    a.ring_readable() == Some(true)
}

/// Accelerated `fd` goes where only the kernel watches it (an epoll set
/// this library does not answer for): its arms stay from now on. `true`
/// if its ring holds bytes whose doorbell fast mode took off, which the
/// kernel does not know of (the caller answers for them until they are
/// read); the next bytes ring as in safe mode.
pub(crate) fn kernel_watch(fd: c_int) -> bool {
    let Some(e) = data_entry(fd).filter(|e| e.state() == State::Accel) else {
        return false;
    };
    let Some(a) = e.accel() else { return false };
    if !a.needs_kernel_look() {
        return false;
    }
    let sock = fd_of(fd);
    if let Ok(false) = a.kernel_waits(sock) {
        return false;
    }
    let mut one = [0u8; 1];
    // Nothing on the socket: the kernel would not say readable. (A byte,
    // end-of-file or an error: it says so.)
    matches!(interpose::recv(sock, &mut one, MSG_PEEK | MSG_DONTWAIT), Err(e) if e.is_would_block())
}

/// Attaches every pending client among `fds` that can attach now.
fn attach_pending(fds: impl Iterator<Item = c_int>) {
    for fd in fds {
        // A managed epoll set that is polled answers as the kernel does.
        epoll::nested(fd);
        if let Some(e) = data_entry(fd) {
            if e.state() == State::Pending {
                let _ = attached(e, fd, false);
            }
        }
    }
}

/// What is left of a wait that started with `timeout` (`None`: forever).
fn remaining(deadline: Option<std::time::Instant>) -> Option<std::time::Duration> {
    deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()))
}

/// Takes fds woken without data out of a `poll` answer; how many are left.
fn filter_poll(set: &mut [pollfd], r: c_int) -> c_int {
    let mut n = r;
    for p in set.iter_mut() {
        if p.fd < 0 || p.revents & (POLLIN | POLLRDNORM) == 0 {
            continue;
        }
        if !really_readable(p.fd) {
            p.revents &= !(POLLIN | POLLRDNORM);
            if p.revents == 0 {
                n -= 1;
            }
        }
    }
    n
}

/// Whether an entry of a `poll` set that asks for reading has ring bytes
/// ([`ring_ready`]): then the wait must not block.
fn any_ring_ready(set: &[pollfd]) -> bool {
    let mut any = false;
    for p in set
        .iter()
        .filter(|p| p.fd >= 0 && p.events & (POLLIN | POLLRDNORM) != 0)
    {
        // Every one is looked at: the first look keeps its arms.
        any |= ring_ready(p.fd);
    }
    any
}

/// Adds the readability of ring bytes to a `poll` answer that counted `n`
/// entries (when `from_rings`); the new count.
fn with_rings(set: &mut [pollfd], n: c_int, from_rings: bool) -> c_int {
    if !from_rings {
        return n;
    }
    let mut n = n;
    for p in set.iter_mut().filter(|p| p.fd >= 0) {
        let want = p.events & (POLLIN | POLLRDNORM);
        if want != 0 && p.revents & want != want && ring_ready(p.fd) {
            if p.revents == 0 {
                n += 1;
            }
            p.revents |= want;
        }
    }
    n
}

/// The program's `poll`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `poll`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    if ENABLED.load(Ordering::Relaxed) && table::live() && !fds.is_null() {
        // SAFETY: the program's arguments.
        return unsafe { slow_poll(fds, nfds, timeout) };
    }
    // SAFETY: the program's arguments.
    unsafe { real::poll(fds, nfds, timeout) }
}

/// [`poll`] while this library looks after some fds: out of line (see
/// [`data_call`]).
///
/// # Safety
///
/// As for [`poll`].
#[inline(never)]
unsafe fn slow_poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    // SAFETY: the program gives `nfds` pollfds at `fds`.
    let set = unsafe { std::slice::from_raw_parts_mut(fds, nfds as usize) };
    attach_pending(set.iter().map(|p| p.fd));
    let deadline = (timeout >= 0)
        .then(|| std::time::Instant::now() + std::time::Duration::from_millis(timeout as u64));
    loop {
        let from_rings = any_ring_ready(set);
        let t = match remaining(deadline) {
            _ if from_rings => 0,
            None => -1,
            Some(d) => d.as_millis().min(c_int::MAX as u128) as c_int,
        };
        // SAFETY: the program's arguments.
        let r = unsafe { real::poll(fds, nfds, t) };
        if r < 0 || (r == 0 && !from_rings) {
            return r;
        }
        let errno = interpose::errno();
        let kept = filter_poll(set, r);
        let n = with_rings(set, kept, from_rings);
        interpose::set_errno(errno);
        if n > 0 || remaining(deadline).is_some_and(|d| d.is_zero()) {
            return n;
        }
    }
}

/// The program's `ppoll`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `ppoll`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    nfds: nfds_t,
    ts: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    if ENABLED.load(Ordering::Relaxed) && table::live() && !fds.is_null() {
        // SAFETY: the program's arguments.
        return unsafe { slow_ppoll(fds, nfds, ts, mask) };
    }
    // SAFETY: the program's arguments.
    unsafe { real::ppoll(fds, nfds, ts, mask) }
}

/// [`ppoll`] while this library looks after some fds: out of line (see
/// [`data_call`]).
///
/// # Safety
///
/// As for [`ppoll`].
#[inline(never)]
unsafe fn slow_ppoll(
    fds: *mut pollfd,
    nfds: nfds_t,
    ts: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: the program gives `nfds` pollfds at `fds`.
    let set = unsafe { std::slice::from_raw_parts_mut(fds, nfds as usize) };
    attach_pending(set.iter().map(|p| p.fd));
    // SAFETY: a non-null timeout is the program's timespec.
    let deadline = (!ts.is_null()).then(|| unsafe {
        std::time::Instant::now()
            + std::time::Duration::new(
                (*ts).tv_sec.max(0) as u64,
                (*ts).tv_nsec.clamp(0, 999_999_999) as u32,
            )
    });
    loop {
        let from_rings = any_ring_ready(set);
        let left = if from_rings {
            Some(std::time::Duration::ZERO)
        } else {
            remaining(deadline)
        };
        let left = left.map(|d| timespec {
            tv_sec: d.as_secs() as _,
            tv_nsec: d.subsec_nanos() as _,
        });
        let tp = left
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const timespec);
        // SAFETY: the program's arguments, with the time left.
        let r = unsafe { real::ppoll(fds, nfds, tp, mask) };
        if r < 0 || (r == 0 && !from_rings) {
            return r;
        }
        let errno = interpose::errno();
        let kept = filter_poll(set, r);
        let n = with_rings(set, kept, from_rings);
        interpose::set_errno(errno);
        if n > 0 || remaining(deadline).is_some_and(|d| d.is_zero()) {
            return n;
        }
    }
}

/// The bits of an `fd_set` (glibc: an array of `long`).
fn fd_bits(set: *mut fd_set) -> *mut u64 {
    set.cast::<u64>()
}

fn fd_isset(set: *const fd_set, fd: usize) -> bool {
    // SAFETY: `fd < nfds <= FD_SETSIZE`, inside the set's 16 words.
    unsafe { *set.cast::<u64>().add(fd / 64) & (1 << (fd % 64)) != 0 }
}

fn fd_clear(set: *mut fd_set, fd: usize) {
    // SAFETY: as in `fd_isset`.
    unsafe { *fd_bits(set).add(fd / 64) &= !(1 << (fd % 64)) }
}

fn fd_set_bit(set: *mut fd_set, fd: usize) {
    // SAFETY: as in `fd_isset`.
    unsafe { *fd_bits(set).add(fd / 64) |= 1 << (fd % 64) }
}

const FD_SETSIZE: usize = 1024;

/// The program's `select`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `select`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn select(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    tv: *mut timeval,
) -> c_int {
    if ENABLED.load(Ordering::Relaxed) && table::live() && !r.is_null() && nfds > 0 {
        // SAFETY: the program's arguments.
        return unsafe { slow_select(nfds, r, w, e, tv) };
    }
    // SAFETY: the program's arguments.
    unsafe { real::select(nfds, r, w, e, tv) }
}

/// [`select`] while this library looks after some fds: out of line (see
/// [`data_call`]).
///
/// # Safety
///
/// As for [`select`].
#[inline(never)]
unsafe fn slow_select(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    tv: *mut timeval,
) -> c_int {
    // SAFETY: a non-null timeout is the program's timeval.
    let wait = (!tv.is_null()).then(|| unsafe {
        std::time::Duration::from_micros(
            ((*tv).tv_sec.max(0) as u64) * 1_000_000 + (*tv).tv_usec.max(0) as u64,
        )
    });
    // SAFETY: the program's sets; each round's timeout is `tv` with the
    // time left (Linux writes what is left into it anyway).
    unsafe {
        select_rounds(nfds, [r, w, e], wait, |left| {
            let mut zero = timeval {
                tv_sec: 0,
                tv_usec: 0,
            };
            let t = match (left, tv.is_null()) {
                (Some(d), false) => {
                    (*tv).tv_sec = d.as_secs() as _;
                    (*tv).tv_usec = d.subsec_micros() as _;
                    tv
                }
                // A look without waiting where the program waits forever.
                (Some(_), true) => &mut zero,
                (None, _) => tv,
            };
            real::select(nfds, r, w, e, t)
        })
    }
}

/// The program's `pselect`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `pselect`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    ts: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    if ENABLED.load(Ordering::Relaxed) && table::live() && !r.is_null() && nfds > 0 {
        // SAFETY: the program's arguments.
        return unsafe { slow_pselect(nfds, r, w, e, ts, mask) };
    }
    // SAFETY: the program's arguments.
    unsafe { real::pselect(nfds, r, w, e, ts, mask) }
}

/// [`pselect`] while this library looks after some fds: out of line (see
/// [`data_call`]).
///
/// # Safety
///
/// As for [`pselect`].
#[inline(never)]
unsafe fn slow_pselect(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    ts: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: a non-null timeout is the program's timespec.
    let wait = (!ts.is_null()).then(|| unsafe {
        std::time::Duration::new(
            (*ts).tv_sec.max(0) as u64,
            (*ts).tv_nsec.clamp(0, 999_999_999) as u32,
        )
    });
    // SAFETY: the program's sets and mask, with the time left.
    unsafe {
        select_rounds(nfds, [r, w, e], wait, |left| {
            let t = left.map(|d| timespec {
                tv_sec: d.as_secs() as _,
                tv_nsec: d.subsec_nanos() as _,
            });
            let tp = t
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const timespec);
            real::pselect(nfds, r, w, e, tp, mask)
        })
    }
}

/// `select`'s rounds: attaches pending clients in the read set, waits
/// (`call` with the time left, `None` forever), and takes out fds woken
/// without data, waiting again with the program's sets if none is left.
///
/// # Safety
///
/// `sets` are null or the program's `fd_set`s; `nfds > 0`; `sets[0]` is
/// not null.
unsafe fn select_rounds(
    nfds: c_int,
    sets: [*mut fd_set; 3],
    wait: Option<std::time::Duration>,
    mut call: impl FnMut(Option<std::time::Duration>) -> c_int,
) -> c_int {
    let r = sets[0];
    let n = (nfds as usize).min(FD_SETSIZE);
    attach_pending((0..n).filter(|&fd| fd_isset(r, fd)).map(|fd| fd as c_int));
    // SAFETY: the program's sets (each FD_SETSIZE bits), copied to wait again.
    let saved = unsafe { sets.map(|s| (!s.is_null()).then(|| std::ptr::read(s))) };
    let deadline = wait.map(|d| std::time::Instant::now() + d);
    loop {
        // Fast mode: ring bytes the kernel may not know of (see
        // `ring_ready`); every fd is looked at, as the first look keeps
        // its arms.
        let mut from_rings = false;
        for fd in (0..n).filter(|&fd| fd_isset(r, fd)) {
            from_rings |= ring_ready(fd as c_int);
        }
        let got = call(if from_rings {
            Some(std::time::Duration::ZERO)
        } else {
            remaining(deadline)
        });
        if got < 0 || (got == 0 && !from_rings) {
            return got;
        }
        let errno = interpose::errno();
        let mut left = got;
        for fd in 0..n {
            if fd_isset(r, fd) && !really_readable(fd as c_int) {
                fd_clear(r, fd);
                // select counts each set bit: one less.
                left -= 1;
            }
        }
        if from_rings {
            for fd in 0..n {
                let asked = saved[0].as_ref().is_some_and(|s| fd_isset(s, fd));
                if asked && !fd_isset(r, fd) && ring_ready(fd as c_int) {
                    fd_set_bit(r, fd);
                    left += 1;
                }
            }
        }
        interpose::set_errno(errno);
        if left > 0 {
            return left;
        }
        if remaining(deadline).is_some_and(|d| d.is_zero()) {
            return 0;
        }
        // SAFETY: restore the program's sets, then wait again.
        unsafe {
            for (s, v) in sets.into_iter().zip(saved.iter()) {
                if let Some(v) = v {
                    std::ptr::write(s, std::ptr::read(v));
                }
            }
        }
    }
}

// Calls that make fds: an entry their number still has is stale (its fd
// was closed behind this library's back, by a raw system call say).

fn fresh_fd(r: c_int) -> c_int {
    if r >= 0 && ENABLED.load(Ordering::Relaxed) {
        table::purge(r);
    }
    r
}

fn fresh_pair(r: c_int, fds: *mut c_int) -> c_int {
    if r == 0 && !fds.is_null() && ENABLED.load(Ordering::Relaxed) {
        // SAFETY: the call filled the program's two ints.
        unsafe {
            table::purge(*fds);
            table::purge(*fds.add(1));
        }
    }
    r
}

/// The program's `socket`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `socket`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int {
    // SAFETY: the program's arguments.
    fresh_fd(unsafe { real::socket(domain, ty, proto) })
}

/// The program's `socketpair`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `socketpair`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    ty: c_int,
    proto: c_int,
    sv: *mut c_int,
) -> c_int {
    // SAFETY: the program's arguments.
    fresh_pair(unsafe { real::socketpair(domain, ty, proto, sv) }, sv)
}

/// `open` is variadic in C; see [`fcntl`] for why its mode is a word.
///
/// # Safety
///
/// As for libc's `open`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: usize) -> c_int {
    // SAFETY: the program's arguments.
    fresh_fd(unsafe { real::open(path, flags, mode) })
}

/// The program's `open64`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `open64`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: usize) -> c_int {
    // SAFETY: the program's arguments.
    fresh_fd(unsafe { real::open64(path, flags, mode) })
}

/// The program's `openat`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `openat`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn openat(
    dir: c_int,
    path: *const c_char,
    flags: c_int,
    mode: usize,
) -> c_int {
    // SAFETY: the program's arguments.
    fresh_fd(unsafe { real::openat(dir, path, flags, mode) })
}

/// The program's `pipe`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `pipe`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
    // SAFETY: the program's arguments.
    fresh_pair(unsafe { real::pipe(fds) }, fds)
}

/// The program's `pipe2`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `pipe2`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    // SAFETY: the program's arguments.
    fresh_pair(unsafe { real::pipe2(fds, flags) }, fds)
}

// -------------------------------------------------------------------- epoll
//
// Fast mode answers for accelerated members of epoll sets (`epoll.rs`);
// in safe mode, or on a set with no member, these are pass-throughs.

/// The program's `epoll_create`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `epoll_create`.
#[no_mangle]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    // SAFETY: the program's arguments.
    let r = fresh_fd(unsafe { real::epoll_create(size) });
    if epoll::fast() {
        epoll::created(r)
    } else {
        r
    }
}

/// The program's `epoll_create1`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `epoll_create1`.
#[no_mangle]
pub unsafe extern "C" fn epoll_create1(flags: c_int) -> c_int {
    // SAFETY: the program's arguments.
    let r = fresh_fd(unsafe { real::epoll_create1(flags) });
    if epoll::fast() {
        epoll::created(r)
    } else {
        r
    }
}

/// The program's `epoll_ctl`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `epoll_ctl`.
#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut procwire::sys::interpose::ffi::epoll_event,
) -> c_int {
    if ENABLED.load(Ordering::Relaxed) && epoll::fast() && epoll::ctl_needed(epfd, op, fd) {
        // SAFETY: the program's arguments.
        return unsafe { epoll::ctl(epfd, op, fd, ev) };
    }
    // SAFETY: the program's arguments.
    unsafe { real::epoll_ctl(epfd, op, fd, ev) }
}

/// A wait on a set this library answers for ([`epoll_wait`],
/// [`epoll_pwait`], [`epoll_pwait2`]): out of line (see [`data_call`]). Where
/// the set turns out not to be one after all, the program's own call
/// (`epoll_wait` is `epoll_pwait` without a mask).
///
/// # Safety
///
/// As for libc's `epoll_pwait2`: `ev` valid for `max` events, `mask` null
/// or a signal set, a `Ts` timeout null or a timespec.
#[inline(never)]
unsafe fn slow_epoll_wait(
    epfd: c_int,
    ev: *mut procwire::sys::interpose::ffi::epoll_event,
    max: c_int,
    timeout: epoll::Timeout,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: the program's arguments.
    if let Some(r) = unsafe { epoll::wait(epfd, ev, max, timeout, mask) } {
        return r;
    }
    match timeout {
        // SAFETY: the program's arguments.
        epoll::Timeout::Ms(ms) => unsafe { real::epoll_pwait(epfd, ev, max, ms, mask) },
        // SAFETY: the program's arguments.
        epoll::Timeout::Ts(ts) => unsafe { real::epoll_pwait2(epfd, ev, max, ts, mask) },
    }
}

/// The program's `epoll_wait`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `epoll_wait`.
#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    ev: *mut procwire::sys::interpose::ffi::epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    if ENABLED.load(Ordering::Relaxed) && epoll::fast() && epoll::wait_needed(epfd) {
        // SAFETY: the program's arguments.
        return unsafe {
            slow_epoll_wait(epfd, ev, max, epoll::Timeout::Ms(timeout), std::ptr::null())
        };
    }
    // SAFETY: the program's arguments.
    unsafe { real::epoll_wait(epfd, ev, max, timeout) }
}

/// The program's `epoll_pwait`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `epoll_pwait`.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    ev: *mut procwire::sys::interpose::ffi::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const sigset_t,
) -> c_int {
    if ENABLED.load(Ordering::Relaxed) && epoll::fast() && epoll::wait_needed(epfd) {
        // SAFETY: the program's arguments.
        return unsafe { slow_epoll_wait(epfd, ev, max, epoll::Timeout::Ms(timeout), mask) };
    }
    // SAFETY: the program's arguments.
    unsafe { real::epoll_pwait(epfd, ev, max, timeout, mask) }
}

/// The program's `epoll_pwait2`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `epoll_pwait2`.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    ev: *mut procwire::sys::interpose::ffi::epoll_event,
    max: c_int,
    ts: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    if ENABLED.load(Ordering::Relaxed) && epoll::fast() && epoll::wait_needed(epfd) {
        // SAFETY: the program's arguments.
        return unsafe { slow_epoll_wait(epfd, ev, max, epoll::Timeout::Ts(ts), mask) };
    }
    // SAFETY: the program's arguments.
    unsafe { real::epoll_pwait2(epfd, ev, max, ts, mask) }
}

// --------------------------------------------------------------------- data

/// What an fd's entry says for a data call.
pub(crate) enum Conn {
    /// Accelerated.
    Accel(&'static Accel),
    /// Plain: the program's own call.
    Plain,
    /// The client is still pending and the call would have to wait for the
    /// server's first bytes: fail with this errno (`EAGAIN`, `EINTR`).
    Wait(i32),
}

/// The connection of an fd, attaching first when the client is still
/// pending. `block`: wait (in the fd's mode) for the server's first bytes,
/// as a read must before it can tell a hello from data.
pub(crate) fn attached(e: &'static Entry, fd: c_int, block: bool) -> Conn {
    if let Some(a) = e.accel() {
        return Conn::Accel(a);
    }
    if e.state() != State::Pending {
        return Conn::Plain;
    }
    let _g = e.lock();
    if let Some(a) = e.accel() {
        return Conn::Accel(a);
    }
    if e.state() != State::Pending {
        return Conn::Plain;
    }
    match accel::try_attach(fd_of(fd), e.plain_written(), block) {
        Ok(Attach::Attached(a)) => {
            ACCELERATED.fetch_add(1, Ordering::Relaxed);
            Conn::Accel(e.set_accel(a))
        }
        Ok(Attach::Plain) => {
            PLAIN.fetch_add(1, Ordering::Relaxed);
            e.set_plain();
            Conn::Plain
        }
        Ok(Attach::NotYet) => Conn::Wait(EAGAIN),
        Err(err) => Conn::Wait(err.raw_os_error()),
    }
}

/// A read of any kind on an fd with an entry; `None`: make the program's
/// own call.
fn accel_recv(
    e: &'static Entry,
    fd: c_int,
    bufs: &mut [&mut [u8]],
    flags: c_int,
) -> Option<ssize_t> {
    if flags & MSG_OOB != 0 {
        // Out-of-band data is the socket's alone.
        leave_fd(e, fd);
        return None;
    }
    let f = Flags::from_bits(flags);
    let a = match attached(e, fd, !f.dontwait) {
        Conn::Accel(a) => a,
        Conn::Plain => return None,
        Conn::Wait(errno) => {
            interpose::set_errno(errno);
            return Some(-1);
        }
    };
    let r = a.recv(fd_of(fd), bufs, f);
    if let Ok(n) = r {
        if !f.peek {
            BYTES_RECEIVED.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    note_plain(e, a);
    Some(ret(r))
}

/// Once a downgrade finished for this process, the fd's calls are the
/// program's own again.
fn note_plain(e: &Entry, a: &Accel) {
    if a.first_time_plain() {
        DOWNGRADED.fetch_add(1, Ordering::Relaxed);
        e.set_plain();
    }
}

/// How long a side that leaves the ring waits for its peer's answer (and
/// a pending client for the server's hello).
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// The fd goes where only the socket is read (an `exec`, a descriptor
/// passed away, `splice` from it, an `ioctl` this library does not know):
/// the connection goes back to the plain socket first, whole. A pending
/// client waits (at most [`PATIENCE`]) for the server's hello so that no
/// hello reaches the program that gets the fd.
fn leave_fd(e: &'static Entry, fd: c_int) {
    let errno = interpose::errno();
    let sock = fd_of(fd);
    if e.state() == State::Pending {
        let _ = procwire::sys::fd::wait_readable(sock, Some(PATIENCE));
    }
    match attached(e, fd, false) {
        Conn::Accel(a) => {
            if a.leave(sock, PATIENCE).is_err() {
                // The peer never answered (or broke the segment): the bytes
                // can't be put in order, so the connection ends here, loudly,
                // rather than going on with a hole in it.
                // SAFETY: the program's fd.
                unsafe { real::shutdown(fd, SHUT_RDWR) };
            }
            if a.counted_plain() {
                DOWNGRADED.fetch_add(1, Ordering::Relaxed);
            }
            e.set_plain();
        }
        // No hello in time: the connection stays plain from here.
        Conn::Wait(_) => e.set_plain(),
        Conn::Plain => {}
    }
    interpose::set_errno(errno);
}

/// Bytes are about to go on the socket behind this library's back
/// (ancillary data, `sendfile`, `splice` to it): the direction this side
/// writes goes back to the socket first, after the ring's bytes. `false`:
/// the call would block on that (the fd is non-blocking) or failed, with
/// errno set.
fn downgrade_out(e: &'static Entry, fd: c_int, dontwait: bool) -> bool {
    if e.state() == State::Pending {
        leave_fd(e, fd);
        return true;
    }
    let Conn::Accel(a) = attached(e, fd, false) else {
        return true;
    };
    let errno = interpose::errno();
    let sock = fd_of(fd);
    match a
        .downgrade_tx(sock)
        .and_then(|()| a.flush_tx(sock, !dontwait))
    {
        Ok(()) => {
            note_plain(e, a);
            interpose::set_errno(errno);
            true
        }
        Err(err) => {
            interpose::set_errno(err.raw_os_error());
            false
        }
    }
}

/// A write of any kind on an fd with an entry; `None`: make the
/// program's own call (the connection is plain, or the client is still
/// pending, whose bytes then go on the socket and are counted).
fn accel_send(
    e: &'static Entry,
    fd: c_int,
    bufs: &[&[u8]],
    flags: c_int,
    plain: impl FnOnce() -> ssize_t,
) -> ssize_t {
    if flags & MSG_OOB != 0 {
        leave_fd(e, fd);
        return plain();
    }
    if let Conn::Accel(a) = attached(e, fd, false) {
        let r = a.send(fd_of(fd), bufs, Flags::from_bits(flags));
        if let Ok(n) = r {
            BYTES_SENT.fetch_add(n as u64, Ordering::Relaxed);
        }
        note_plain(e, a);
        return ret(r);
    }
    if e.state() != State::Pending {
        return plain();
    }
    // Pending: the bytes go on the socket, counted under the entry's lock
    // so that an attach never misses them.
    let _g = e.lock();
    if e.accel().is_some() {
        drop(_g);
        return accel_send(e, fd, bufs, flags, plain);
    }
    let n = plain();
    if n > 0 {
        e.add_plain_written(n as u64);
    }
    n
}

/// The program's iovecs as slices.
///
/// # Safety
///
/// `iov` is valid for `cnt` iovecs, each naming memory valid for the call.
unsafe fn iov_slices<'a>(iov: *const iovec, cnt: c_int) -> Option<Vec<&'a mut [u8]>> {
    if cnt < 0 || (cnt > 0 && iov.is_null()) {
        return None;
    }
    // SAFETY: the program gives `cnt` iovecs at `iov`.
    let v = unsafe { std::slice::from_raw_parts(iov, cnt as usize) };
    Some(
        v.iter()
            .map(|i| {
                if i.iov_len == 0 || i.iov_base.is_null() {
                    &mut [][..]
                } else {
                    // SAFETY: each iovec names `iov_len` bytes of the
                    // program's memory, valid for the call.
                    unsafe { std::slice::from_raw_parts_mut(i.iov_base.cast::<u8>(), i.iov_len) }
                }
            })
            .collect(),
    )
}

fn einval() -> ssize_t {
    interpose::set_errno(EINVAL);
    -1
}

/// The program's buffer as a slice.
///
/// # Safety
///
/// `buf` is null or valid for writes of `n` bytes for the call.
unsafe fn buf_mut<'a>(buf: *mut c_void, n: size_t) -> &'a mut [u8] {
    if n == 0 || buf.is_null() {
        &mut []
    } else {
        // SAFETY: the program gives `n` writable bytes at `buf`.
        unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n) }
    }
}

/// The program's buffer as a slice.
///
/// # Safety
///
/// `buf` is null or valid for reads of `n` bytes for the call.
unsafe fn buf_ref<'a>(buf: *const c_void, n: size_t) -> &'a [u8] {
    if n == 0 || buf.is_null() {
        &[]
    } else {
        // SAFETY: the program gives `n` readable bytes at `buf`.
        unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), n) }
    }
}

data_call! {
    read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t = slow_read;
}

/// [`read`] on an fd this library looks after (see [`data_call`]).
///
/// # Safety
///
/// As for [`read`].
#[inline(never)]
unsafe fn slow_read(e: &'static Entry, fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    // SAFETY: the program's buffer.
    let mut b = [unsafe { buf_mut(buf, n) }];
    if let Some(r) = accel_recv(e, fd, &mut b, 0) {
        return r;
    }
    // SAFETY: the program's arguments.
    unsafe { real::read(fd, buf, n) }
}

/// The program's `__read_chk`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `__read_chk`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen {
        // FORTIFY's own verdict on an overflow.
        std::process::abort();
    }
    // SAFETY: the program's arguments.
    unsafe { read(fd, buf, n) }
}

data_call! {
    recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t = slow_recv;
}

/// [`recv`] on an fd this library looks after (see [`data_call`]).
///
/// # Safety
///
/// As for [`recv`].
#[inline(never)]
unsafe fn slow_recv(
    e: &'static Entry,
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: the program's buffer.
    let mut b = [unsafe { buf_mut(buf, n) }];
    if let Some(r) = accel_recv(e, fd, &mut b, flags) {
        return r;
    }
    // SAFETY: the program's arguments.
    unsafe { real::recv(fd, buf, n, flags) }
}

/// The program's `__recv_chk`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `__recv_chk`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    if n > buflen {
        std::process::abort();
    }
    // SAFETY: the program's arguments.
    unsafe { recv(fd, buf, n, flags) }
}

data_call! {
    recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t = slow_recvfrom;
}

/// [`recvfrom`] on an fd this library looks after (see [`data_call`]).
///
/// # Safety
///
/// As for [`recvfrom`].
#[inline(never)]
unsafe fn slow_recvfrom(
    e: &'static Entry,
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    // SAFETY: the program's buffer.
    let mut b = [unsafe { buf_mut(buf, n) }];
    if let Some(r) = accel_recv(e, fd, &mut b, flags) {
        if r >= 0 && !len.is_null() {
            // A connected stream socket reports no address.
            // SAFETY: the program's `socklen_t *`.
            unsafe { *len = 0 };
        }
        return r;
    }
    // SAFETY: the program's arguments.
    unsafe { real::recvfrom(fd, buf, n, flags, addr, len) }
}

/// The program's `__recvfrom_chk`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `__recvfrom_chk`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if n > buflen {
        std::process::abort();
    }
    // SAFETY: the program's arguments.
    unsafe { recvfrom(fd, buf, n, flags, addr, len) }
}

data_call! {
    readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t = slow_readv;
}

/// [`readv`] on an fd this library looks after (see [`data_call`]).
///
/// # Safety
///
/// As for [`readv`].
#[inline(never)]
unsafe fn slow_readv(e: &'static Entry, fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    // SAFETY: the program's iovecs.
    let Some(mut b) = (unsafe { iov_slices(iov, cnt) }) else {
        return einval();
    };
    if let Some(r) = accel_recv(e, fd, &mut b, 0) {
        return r;
    }
    // SAFETY: the program's arguments.
    unsafe { real::readv(fd, iov, cnt) }
}

/// The program's `recvmsg`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `recvmsg`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if ENABLED.load(Ordering::Relaxed) {
        // SAFETY: the program's arguments.
        return unsafe { slow_recvmsg(fd, msg, flags) };
    }
    // SAFETY: the program's arguments.
    unsafe { real::recvmsg(fd, msg, flags) }
}

/// [`recvmsg`] where this library looks after fds: out of line (see
/// [`data_call`]).
///
/// # Safety
///
/// As for [`recvmsg`].
#[inline(never)]
unsafe fn slow_recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if let Some(e) = data_entry(fd) {
        if msg.is_null() {
            return einval();
        }
        // SAFETY: the program's `msghdr`.
        let m = unsafe { &mut *msg };
        if !m.msg_control.is_null() && m.msg_controllen > 0 {
            // Ancillary data comes only on the socket: once the ring is
            // empty and the peer is back on it, the call is the program's.
            if let Conn::Accel(a) = attached(e, fd, false) {
                if a.socket_next(fd_of(fd)).unwrap_or(false) {
                    note_plain(e, a);
                    // SAFETY: the program's arguments.
                    let r = unsafe { real::recvmsg(fd, msg, flags) };
                    if r >= 0 {
                        // SAFETY: the kernel filled the control data.
                        unsafe { interpose::for_each_passed_fd(msg, table::purge) };
                    }
                    return r;
                }
            }
        }
        // SAFETY: its iovecs.
        let Some(mut b) = (unsafe { iov_slices(m.msg_iov, m.msg_iovlen as c_int) }) else {
            return einval();
        };
        if let Some(r) = accel_recv(e, fd, &mut b, flags) {
            if r >= 0 {
                m.msg_namelen = 0;
                m.msg_controllen = 0;
                m.msg_flags = 0;
            }
            return r;
        }
    }
    // SAFETY: the program's arguments.
    let r = unsafe { real::recvmsg(fd, msg, flags) };
    if r >= 0 {
        // Descriptors received are new fds: entries their numbers had are
        // stale.
        // SAFETY: the kernel filled the program's control data.
        unsafe { interpose::for_each_passed_fd(msg, table::purge) };
    }
    r
}

data_call! {
    write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t = slow_write;
}

/// [`write()`] on an fd this library looks after (see [`data_call`]).
///
/// # Safety
///
/// As for [`write()`].
#[inline(never)]
unsafe fn slow_write(e: &'static Entry, fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    // SAFETY: the program's buffer.
    let b = [unsafe { buf_ref(buf, n) }];
    // SAFETY: the program's arguments.
    accel_send(e, fd, &b, 0, || unsafe { real::write(fd, buf, n) })
}

data_call! {
    send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t = slow_send;
}

/// [`send`] on an fd this library looks after (see [`data_call`]).
///
/// # Safety
///
/// As for [`send`].
#[inline(never)]
unsafe fn slow_send(
    e: &'static Entry,
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: the program's buffer.
    let b = [unsafe { buf_ref(buf, n) }];
    // SAFETY: the program's arguments.
    accel_send(e, fd, &b, flags, || unsafe {
        real::send(fd, buf, n, flags)
    })
}

data_call! {
    sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const sockaddr, len: socklen_t) -> ssize_t = slow_sendto;
}

/// [`sendto`] on an fd this library looks after (see [`data_call`]).
///
/// # Safety
///
/// As for [`sendto`].
#[inline(never)]
unsafe fn slow_sendto(
    e: &'static Entry,
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    // SAFETY: the program's buffer.
    let b = [unsafe { buf_ref(buf, n) }];
    // SAFETY: the program's arguments.
    accel_send(e, fd, &b, flags, || unsafe {
        real::sendto(fd, buf, n, flags, addr, len)
    })
}

data_call! {
    writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t = slow_writev;
}

/// [`writev`] on an fd this library looks after (see [`data_call`]).
///
/// # Safety
///
/// As for [`writev`].
#[inline(never)]
unsafe fn slow_writev(e: &'static Entry, fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    // SAFETY: the program's iovecs.
    let Some(b) = (unsafe { iov_slices(iov, cnt) }) else {
        return einval();
    };
    let b: Vec<&[u8]> = b.into_iter().map(|s| &*s).collect();
    // SAFETY: the program's arguments.
    accel_send(e, fd, &b, 0, || unsafe { real::writev(fd, iov, cnt) })
}

/// The program's `sendmsg`, looked at by this library first.
///
/// # Safety
///
/// As for libc's `sendmsg`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if ENABLED.load(Ordering::Relaxed) {
        // SAFETY: the program's arguments.
        return unsafe { slow_sendmsg(fd, msg, flags) };
    }
    // SAFETY: the program's arguments.
    unsafe { real::sendmsg(fd, msg, flags) }
}

/// [`sendmsg`] where this library looks after fds: out of line (see
/// [`data_call`]).
///
/// # Safety
///
/// As for [`sendmsg`].
#[inline(never)]
unsafe fn slow_sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // SAFETY: a non-null `msg` is the program's `msghdr`.
    let control =
        !msg.is_null() && unsafe { !(*msg).msg_control.is_null() && (*msg).msg_controllen > 0 };
    if control && table::live() {
        // Descriptors passed away leave the ring first: whoever gets them
        // reads the socket.
        // SAFETY: the program's `msghdr` and control data.
        unsafe {
            interpose::for_each_passed_fd(msg, |p| {
                if let Some(e) = data_entry(p) {
                    leave_fd(e, p);
                }
            });
        }
    }
    if let Some(e) = data_entry(fd) {
        if msg.is_null() {
            return einval();
        }
        if control {
            // Ancillary data travels on the socket: this side's bytes go
            // there from now on, after what is in the ring.
            if !downgrade_out(e, fd, flags & MSG_DONTWAIT != 0) {
                return -1;
            }
            // SAFETY: the program's arguments.
            return unsafe { real::sendmsg(fd, msg, flags) };
        }
        // SAFETY: the program's `msghdr`.
        let m = unsafe { &*msg };
        // SAFETY: its iovecs.
        let Some(b) = (unsafe { iov_slices(m.msg_iov, m.msg_iovlen as c_int) }) else {
            return einval();
        };
        let b: Vec<&[u8]> = b.into_iter().map(|s| &*s).collect();
        // SAFETY: the program's arguments.
        return accel_send(e, fd, &b, flags, || unsafe {
            real::sendmsg(fd, msg, flags)
        });
    }
    // SAFETY: the program's arguments.
    unsafe { real::sendmsg(fd, msg, flags) }
}

// ------------------------------------------------------ exec, splice, ...

/// Before an `exec`: every connection whose fd the new program inherits
/// goes back to the plain socket (the new image may not have this library,
/// and has none of its state). A `vfork` child passes through: it shares
/// its parent's memory, which goes on using the connections.
fn before_exec() {
    if !ENABLED.load(Ordering::Relaxed) || !table::live() || interpose::in_vfork_child() {
        return;
    }
    let errno = interpose::errno();
    for fd in 0..table::high() {
        if let Some(e) = data_entry(fd) {
            if !procwire::sys::fd::is_cloexec(fd_of(fd)).unwrap_or(true) {
                leave_fd(e, fd);
            }
        }
    }
    write_report();
    interpose::set_errno(errno);
}

/// Defines the wrapper of one `exec` function: [`before_exec`], then the
/// program's own.
macro_rules! exec_wrapper {
    ($name:ident($($arg:ident: $t:ty),*)) => {
        #[doc = concat!("The program's `", stringify!($name), "`, looked at by this library first.")]
        ///
        /// # Safety
        ///
        #[doc = concat!("As for libc's `", stringify!($name), "`: the program's pointers are valid for what the call reads.")]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $t),*) -> c_int {
            before_exec();
            // SAFETY: the program's arguments.
            unsafe { real::$name($($arg),*) }
        }
    };
}

exec_wrapper!(execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char));
exec_wrapper!(execv(path: *const c_char, argv: *const *const c_char));
exec_wrapper!(execvp(file: *const c_char, argv: *const *const c_char));
exec_wrapper!(execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char));
exec_wrapper!(fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char));
exec_wrapper!(execveat(
    dir: c_int,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    flags: c_int
));

/// The program's `splice`, looked at by this library first: from an
/// accelerated fd the connection leaves the ring (the kernel reads the
/// socket); to one, this side's writing goes back to the socket.
///
/// # Safety
///
/// As for libc's `splice`: the program's pointers are valid for what
/// the call reads and writes.
#[no_mangle]
pub unsafe extern "C" fn splice(
    fd_in: c_int,
    off_in: *mut procwire::sys::interpose::ffi::loff_t,
    fd_out: c_int,
    off_out: *mut procwire::sys::interpose::ffi::loff_t,
    len: size_t,
    flags: procwire::sys::interpose::ffi::c_uint,
) -> ssize_t {
    if let Some(e) = data_entry(fd_in) {
        leave_fd(e, fd_in);
    }
    if let Some(e) = data_entry(fd_out) {
        // SPLICE_F_NONBLOCK (2) makes only the pipe side non-blocking; the
        // socket's own mode decides.
        if !downgrade_out(e, fd_out, false) {
            return -1;
        }
    }
    // SAFETY: the program's arguments.
    unsafe { real::splice(fd_in, off_in, fd_out, off_out, len, flags) }
}

/// `sendfile` to (or from) an accelerated fd: as for [`splice`].
fn before_sendfile(out: c_int, inp: c_int) -> bool {
    if let Some(e) = data_entry(inp) {
        leave_fd(e, inp);
    }
    match data_entry(out) {
        Some(e) => downgrade_out(e, out, false),
        None => true,
    }
}

/// Defines the wrapper of `sendfile` or `sendfile64`.
macro_rules! sendfile_wrapper {
    ($name:ident) => {
        #[doc = concat!("The program's `", stringify!($name), "`, looked at by this library first.")]
        ///
        /// # Safety
        ///
        #[doc = concat!("As for libc's `", stringify!($name), "`: the program's pointers are valid for what the call reads and writes.")]
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            out: c_int,
            inp: c_int,
            off: *mut procwire::sys::interpose::ffi::off_t,
            count: size_t,
        ) -> ssize_t {
            if !before_sendfile(out, inp) {
                return -1;
            }
            // SAFETY: the program's arguments.
            unsafe { real::$name(out, inp, off, count) }
        }
    };
}

sendfile_wrapper!(sendfile);
sendfile_wrapper!(sendfile64);
