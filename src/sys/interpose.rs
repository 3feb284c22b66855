//! What a library preloaded into another program (`LD_PRELOAD`) needs from
//! the system: the program's own libc functions found once
//! (`dlsym(RTLD_NEXT)`), the program's `errno`, a raw system call for the
//! calls made before those are found, and calls on the program's sockets
//! that never go back through the preloaded symbols (rustix makes them as
//! raw system calls, so a wrapper can't recurse into itself).
//!
//! The calls here take the program's descriptors as [`BorrowedFd`]s and
//! return [`Result`]; the errors of the calls made on a hot path (`EAGAIN`
//! from a socket with nothing queued) are built without allocating, so a
//! preload can answer a program's non-blocking loop at the price of the
//! system call alone.
//!
//! Linux only: the preload is a Linux feature (glibc's symbol lookup and
//! `memfd`).

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::net::{RecvFlags, SendFlags};

use super::error::{Context, Error, Result};

/// The C types of the calls a preload exports, as this platform's libc
/// defines them, so that a preload's `extern "C"` signatures match the
/// functions they stand in for.
pub mod ffi {
    pub use libc::loff_t;
    pub use libc::{
        c_char, c_int, c_long, c_uint, c_void, iovec, msghdr, off_t, pid_t, size_t, sockaddr,
        sockaddr_un, socklen_t, ssize_t, AF_UNIX, AT_FDCWD, EAGAIN, EBADF, ECONNRESET, EINTR,
        EINVAL, EIO, ENOSYS, EPIPE, ETIMEDOUT, FIOCLEX, FIONBIO, FIONCLEX, FIONREAD, F_DUPFD,
        F_DUPFD_CLOEXEC, MSG_DONTWAIT, MSG_NOSIGNAL, MSG_OOB, MSG_PEEK, MSG_TRUNC, MSG_WAITALL,
        SHUT_RD, SHUT_RDWR, SHUT_WR, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_STREAM,
    };
    pub use libc::{
        epoll_event, EEXIST, EFAULT, ENOENT, EPOLLERR, EPOLLET, EPOLLEXCLUSIVE, EPOLLHUP, EPOLLIN,
        EPOLLONESHOT, EPOLLOUT, EPOLLPRI, EPOLLRDHUP, EPOLLRDNORM, EPOLLWRNORM, EPOLL_CTL_ADD,
        EPOLL_CTL_DEL, EPOLL_CTL_MOD, POLLERR, POLLHUP, POLLNVAL, POLLOUT, POLLRDHUP, POLLWRNORM,
    };
    pub use libc::{fd_set, nfds_t, pollfd, sigset_t, timespec, timeval, POLLIN, POLLRDNORM};
}

/// The address of the next definition of the C function `name` after the
/// calling library (`dlsym(RTLD_NEXT, name)`): the program's own libc
/// function behind a preloaded one. `None` where no later object defines it.
///
/// Call it from a constructor, never lazily from inside a wrapper: `dlsym`
/// may allocate, and a program whose allocator is itself being set up
/// (jemalloc calls wrapped functions during its own initialisation) would
/// deadlock.
pub fn next_symbol(name: &CStr) -> Option<std::ptr::NonNull<ffi::c_void>> {
    // SAFETY: `name` is a NUL-terminated string that outlives the call;
    // `RTLD_NEXT` is a valid pseudo-handle for `dlsym`.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    std::ptr::NonNull::new(p)
}

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    // SAFETY: `__errno_location` returns the calling thread's errno slot,
    // valid for the thread's lifetime.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`, as a C function does before it
/// returns -1.
pub fn set_errno(e: i32) {
    // SAFETY: as in `errno`: the slot is the calling thread's own.
    unsafe { *libc::__errno_location() = e }
}

/// Makes system call `nr` with six arguments the way libc's function would:
/// the result, or -1 with `errno` set. For the calls a program makes before
/// a preload has found the real functions.
///
/// # Safety
///
/// The arguments must be what system call `nr` expects (pointers valid for
/// what it reads and writes), as for the libc function it stands in for.
pub unsafe fn raw_syscall(nr: ffi::c_long, a: [usize; 6]) -> ffi::c_long {
    // SAFETY: the caller vouches for the arguments of `nr`.
    unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) }
}

/// System call numbers of the calls a preload stands in for.
pub mod nr {
    pub use libc::{
        SYS_accept, SYS_accept4, SYS_close, SYS_close_range, SYS_connect, SYS_dup, SYS_dup3,
        SYS_fcntl, SYS_ioctl, SYS_listen, SYS_openat, SYS_pipe2, SYS_read, SYS_readv, SYS_recvfrom,
        SYS_recvmsg, SYS_sendmsg, SYS_sendto, SYS_shutdown, SYS_socket, SYS_socketpair, SYS_write,
        SYS_writev,
    };
    pub use libc::{SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait, SYS_epoll_pwait2};
    pub use libc::{SYS_execve, SYS_execveat, SYS_ppoll, SYS_pselect6, SYS_sendfile, SYS_splice};
}

/// The kernel's flag bits of `recv(2)` as rustix's type.
fn recv_flags(bits: i32) -> RecvFlags {
    RecvFlags::from_bits_retain(bits as u32)
}

/// `recv(2)` of the program's socket with raw `MSG_*` flag bits.
///
/// # Errors
///
/// As the kernel's: `EAGAIN` (made without allocating), `EINTR`, `EBADF`...
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: i32) -> Result<usize> {
    let len = buf.len();
    rustix::net::recv(fd, buf, recv_flags(flags))
        .map(|(n, _)| n)
        .ctx_fd_len("recv", fd, len)
}

/// `send(2)` of the program's socket with raw `MSG_*` flag bits.
///
/// # Errors
///
/// As the kernel's: `EAGAIN`, `EPIPE` (and `SIGPIPE` unless
/// `MSG_NOSIGNAL` is among `flags`), `EINTR`...
pub fn send(fd: BorrowedFd<'_>, buf: &[u8], flags: i32) -> Result<usize> {
    rustix::net::send(fd, buf, SendFlags::from_bits_retain(flags as u32)).ctx_fd_len(
        "send",
        fd,
        buf.len(),
    )
}

/// The socket's type (`SO_TYPE`): `SOCK_STREAM`, `SOCK_DGRAM`, ...
///
/// # Errors
///
/// `ENOTSOCK` when `fd` is not a socket.
pub fn socket_type(fd: BorrowedFd<'_>) -> Result<i32> {
    rustix::net::sockopt::socket_type(fd)
        .map(|t| t.as_raw() as i32)
        .ctx_fd("getsockopt(SO_TYPE)", fd)
}

/// The socket's address family (`SO_DOMAIN`).
///
/// # Errors
///
/// `ENOTSOCK` when `fd` is not a socket.
pub fn socket_domain(fd: BorrowedFd<'_>) -> Result<i32> {
    rustix::net::sockopt::socket_domain(fd)
        .map(|d| d.as_raw() as i32)
        .ctx_fd("getsockopt(SO_DOMAIN)", fd)
}

/// A Unix-domain socket address as the kernel gave it: `None` for an
/// unnamed socket, else the path's bytes or (with a leading NUL) an
/// abstract name.
fn unix_name(addr: rustix::net::SocketAddrAny) -> Option<Vec<u8>> {
    let un = rustix::net::SocketAddrUnix::try_from(addr).ok()?;
    if let Some(name) = un.abstract_name() {
        // rustix reads an unnamed socket's address (the family alone) as
        // an empty abstract name.
        if name.is_empty() {
            return None;
        }
        let mut v = Vec::with_capacity(name.len() + 1);
        v.push(0);
        v.extend_from_slice(name);
        return Some(v);
    }
    un.path_bytes().map(<[u8]>::to_vec)
}

/// The Unix-domain name the socket is bound to (`getsockname`): `None` when
/// it is unnamed or not a Unix-domain socket; an abstract name starts with
/// a NUL byte.
///
/// # Errors
///
/// `EBADF`, `ENOTSOCK`.
pub fn local_unix_name(fd: BorrowedFd<'_>) -> Result<Option<Vec<u8>>> {
    rustix::net::getsockname(fd)
        .map(unix_name)
        .ctx_fd("getsockname", fd)
}

/// The Unix-domain name of the socket's peer (`getpeername`), as
/// [`local_unix_name`] gives it.
///
/// # Errors
///
/// `ENOTCONN` when the socket is not connected.
pub fn peer_unix_name(fd: BorrowedFd<'_>) -> Result<Option<Vec<u8>>> {
    rustix::net::getpeername(fd)
        .map(|a| a.and_then(unix_name))
        .ctx_fd("getpeername", fd)
}

/// Binds the socket to the abstract name `name` (no leading NUL: the
/// kernel's abstract namespace, which vanishes with the last socket).
///
/// # Errors
///
/// `EADDRINUSE` when another socket holds the name, `EINVAL` when `fd` is
/// already bound.
pub fn bind_abstract(fd: BorrowedFd<'_>, name: &[u8]) -> Result<()> {
    let addr = rustix::net::SocketAddrUnix::new_abstract_name(name)
        .ctx("bind", || String::from_utf8_lossy(name).into_owned())?;
    rustix::net::bind(fd, &addr).ctx("bind", || {
        format!("fd {}, @{}", fd.as_raw_fd(), String::from_utf8_lossy(name))
    })
}

/// A new Unix-domain stream socket bound to the abstract name `name`,
/// close-on-exec: a marker that exists as long as this process holds it.
///
/// # Errors
///
/// `EADDRINUSE` when the name is taken.
pub fn abstract_marker(name: &[u8]) -> Result<OwnedFd> {
    let s = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .ctx("socket", || "AF_UNIX, SOCK_STREAM")?;
    bind_abstract(std::os::fd::AsFd::as_fd(&s), name)?;
    Ok(s)
}

/// Whether some socket holds the abstract name `name`: a bind of a fresh
/// socket to it fails with `EADDRINUSE`. The probe's own socket is closed
/// before this returns, so the name is free again if it was.
pub fn abstract_name_taken(name: &[u8]) -> bool {
    match abstract_marker(name) {
        Ok(_) => false,
        Err(e) => e.raw_os_error() == libc::EADDRINUSE,
    }
}

/// The kernel's send buffer size of the socket (`SO_SNDBUF`).
///
/// # Errors
///
/// `ENOTSOCK`.
pub fn send_buffer(fd: BorrowedFd<'_>) -> Result<usize> {
    rustix::net::sockopt::socket_send_buffer_size(fd).ctx_fd("getsockopt(SO_SNDBUF)", fd)
}

/// Sets the socket's send buffer size (`SO_SNDBUF`; the kernel doubles the
/// value and raises it to its minimum).
///
/// # Errors
///
/// `ENOTSOCK`.
pub fn set_send_buffer(fd: BorrowedFd<'_>, bytes: usize) -> Result<()> {
    rustix::net::sockopt::set_socket_send_buffer_size(fd, bytes).ctx_fd("setsockopt(SO_SNDBUF)", fd)
}

/// The device and inode of the file at `path` (`stat(2)`): what names a
/// socket file whatever path reaches it.
///
/// # Errors
///
/// `ENOENT` and the other errors of `stat`.
pub fn dev_ino(path: &Path) -> Result<(u64, u64)> {
    rustix::fs::stat(path)
        .map(|st| (st.st_dev, st.st_ino))
        .ctx("stat", || path.display().to_string())
}

/// How many file descriptors the epoll set `epfd` watches: the `tfd:`
/// lines of its `/proc/self/fdinfo` entry (Linux 3.8 and later), read
/// into a buffer on the stack.
///
/// # Errors
///
/// The errors of `open` (`ENOENT` where `/proc` is not mounted) and
/// `read`.
pub fn epoll_watch_count(epfd: BorrowedFd<'_>) -> Result<usize> {
    let mut path = [0u8; 40];
    let n = fdinfo_path(epfd.as_raw_fd(), &mut path);
    let file = rustix::fs::open(
        &path[..n],
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ctx_fd("open(/proc/self/fdinfo)", epfd)?;
    let mut count = TagCount::default();
    let mut buf = [0u8; 1024];
    loop {
        match rustix::io::read(&file, &mut buf) {
            Ok(0) => return Ok(count.n),
            Ok(k) => count.feed(&buf[..k]),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(Error::with_fd(
                    "read(/proc/self/fdinfo)",
                    epfd.as_raw_fd(),
                    e.raw_os_error(),
                ))
            }
        }
    }
}

/// Writes `/proc/self/fdinfo/<fd>` into `out`; its length.
fn fdinfo_path(fd: i32, out: &mut [u8; 40]) -> usize {
    const PREFIX: &[u8] = b"/proc/self/fdinfo/";
    out[..PREFIX.len()].copy_from_slice(PREFIX);
    let (digits, n) = super::decimal(fd.unsigned_abs());
    let at = PREFIX.len() + n;
    out[PREFIX.len()..at].copy_from_slice(&digits[..n]);
    at
}

/// Counts lines that start with `tfd:` in text fed in pieces.
struct TagCount {
    /// Matched bytes of `tfd:` at the current line's start (`None`: this
    /// line is not one). The text starts at a line's start.
    at: Option<usize>,
    n: usize,
}

impl Default for TagCount {
    fn default() -> Self {
        Self { at: Some(0), n: 0 }
    }
}

impl TagCount {
    fn feed(&mut self, text: &[u8]) {
        const TAG: &[u8] = b"tfd:";
        for &b in text {
            if b == b'\n' {
                self.at = Some(0);
                continue;
            }
            self.at = match self.at {
                Some(i) if TAG[i] == b => {
                    if i + 1 == TAG.len() {
                        self.n += 1;
                        None
                    } else {
                        Some(i + 1)
                    }
                }
                _ => None,
            };
        }
    }
}

/// `n` random bytes from the kernel (`getrandom(2)`).
///
/// # Errors
///
/// `EINTR` and the other errors of `getrandom`.
pub fn random(buf: &mut [u8]) -> Result<()> {
    let mut at = 0;
    while at < buf.len() {
        let n = rustix::rand::getrandom(&mut buf[at..], rustix::rand::GetRandomFlags::empty())
            .ctx("getrandom", || format!("{} bytes", buf.len()))?;
        at += n;
    }
    Ok(())
}

/// Whether the fd's file is in non-blocking mode (`O_NONBLOCK`); `false`
/// when that can't be read.
pub fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fcntl_getfl(fd).is_ok_and(|f| f.contains(rustix::fs::OFlags::NONBLOCK))
}

/// The CPU the calling thread runs on now (`sched_getcpu`, a vDSO call
/// on Linux; 0 where there is none).
pub fn current_cpu() -> u32 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        rustix::thread::sched_getcpu() as u32
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        0
    }
}

/// Bumped in a forked child (see [`forked`]): thread ids cached before it
/// are the parent's.
static FORK_GENERATION: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

std::thread_local! {
    /// The calling thread's id and the fork generation it was read in. A
    /// `Cell` of plain numbers registers no destructor.
    static THREAD_ID: std::cell::Cell<(u32, i32)> = const { std::cell::Cell::new((u32::MAX, 0)) };
}

/// The calling thread's kernel id (`gettid(2)`), cached per thread (one
/// system call per thread, and one more after a `fork` that [`forked`]
/// was told of).
pub fn thread_id() -> i32 {
    use std::sync::atomic::Ordering;
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    THREAD_ID
        .try_with(|c| {
            let (g, tid) = c.get();
            if g == generation {
                return tid;
            }
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            c.set((generation, tid));
            tid
        })
        .unwrap_or_else(|_| rustix::thread::gettid().as_raw_nonzero().get())
}

/// Tells [`thread_id`] that this process is a freshly forked child, whose
/// one thread has a new id. For a `pthread_atfork` child handler
/// ([`at_fork_child`]).
pub extern "C" fn forked() {
    FORK_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    remember_pid();
}

/// This process's id as [`remember_pid`] last saw it.
static PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Notes this process's id, for [`in_vfork_child`]: called once at start
/// (and by [`forked`] in every child of `fork`).
pub fn remember_pid() {
    PID.store(
        super::process::getpid(),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// Whether the caller runs in the child of a `vfork` (or of a `clone` that
/// shares memory without running the fork handlers): its process id is not
/// the one noted, though it shares the parent's memory. One system call.
pub fn in_vfork_child() -> bool {
    let noted = PID.load(std::sync::atomic::Ordering::Relaxed);
    noted != 0 && super::process::getpid() != noted
}

/// Registers `prepare` to run in the parent before every `fork` the
/// process makes through libc (`pthread_atfork`), so that both processes
/// see what it did.
///
/// # Errors
///
/// `ENOMEM`.
pub fn at_fork_prepare(prepare: extern "C" fn()) -> Result<()> {
    at_fork(Some(prepare), None, "prepare handler")
}

/// `pthread_atfork` with a prepare or a child handler (`what` names it).
fn at_fork(
    prepare: Option<extern "C" fn()>,
    child: Option<extern "C" fn()>,
    what: &str,
) -> Result<()> {
    let as_c = |f: extern "C" fn()| -> unsafe extern "C" fn() { f };
    // SAFETY: the handlers are plain functions with the C ABI, valid for
    // the process's life; no parent handler.
    let rc = unsafe { libc::pthread_atfork(prepare.map(as_c), None, child.map(as_c)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::new("pthread_atfork", what, rc))
    }
}

/// Registers `child` to run in the child of every `fork` the process makes
/// through libc (`pthread_atfork`).
///
/// # Errors
///
/// `ENOMEM`.
pub fn at_fork_child(child: extern "C" fn()) -> Result<()> {
    at_fork(None, Some(child), "child handler")
}

/// Whether the process or thread `tid` still runs (`kill(tid, 0)` finds it;
/// `EPERM` counts as running).
pub fn thread_alive(tid: i32) -> bool {
    super::process::process_exists(tid)
}

/// Borrows the program's descriptor `fd` for one call.
///
/// # Safety
///
/// `fd` must stay open while the result is used; a preload borrows the fd
/// a program passed to the call it wraps, which the program holds open for
/// that call.
pub unsafe fn borrow(fd: i32) -> BorrowedFd<'static> {
    // SAFETY: the caller keeps `fd` open while it is borrowed.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// An error for a preload's own checks (`call` failed on `fd` with `errno`).
pub fn error(call: &'static str, fd: BorrowedFd<'_>, errno: i32) -> Error {
    Error::with_fd(call, fd.as_raw_fd(), errno)
}

/// Calls `f` with every descriptor an `SCM_RIGHTS` message in `msg`'s
/// control data passes.
///
/// # Safety
///
/// `msg` points at a `msghdr` whose `msg_control` is null or valid for
/// `msg_controllen` bytes (what `sendmsg(2)` requires of it).
pub unsafe fn for_each_passed_fd(msg: *const ffi::msghdr, mut f: impl FnMut(i32)) {
    if msg.is_null() {
        return;
    }
    // SAFETY: the caller's `msghdr`; the CMSG macros stay within
    // `msg_control .. msg_control + msg_controllen`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<i32>();
                // `msg_controllen` is a `size_t` in glibc, a `socklen_t` elsewhere.
                #[allow(clippy::unnecessary_cast)]
                let end = (*msg).msg_control as usize + (*msg).msg_controllen as usize;
                let bytes = ((*c).cmsg_len as usize)
                    .saturating_sub(libc::CMSG_LEN(0) as usize)
                    .min(end.saturating_sub(data as usize));
                for i in 0..bytes / std::mem::size_of::<i32>() {
                    f(data.add(i).read_unaligned());
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn count(pieces: &[&[u8]]) -> usize {
        let mut c = TagCount::default();
        for p in pieces {
            c.feed(p);
        }
        c.n
    }

    #[test]
    fn tag_count_takes_only_line_starts_across_pieces() {
        let text = b"pos:\t0\nflags:\t02\ntfd:        5 events: 19 data: 5\ntfd:        7 events: 1 data: 7\n";
        assert_eq!(count(&[text]), 2);
        // Split inside a tag, and one byte at a time.
        let (a, b) = text.split_at(text.len() - 30);
        assert_eq!(count(&[a, b]), 2);
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(count(&bytes), 2);
        // Not at a line's start, a broken tag, a tag as the first line.
        assert_eq!(count(&[b"x tfd: 1\ntf d: 2\ntfdx\n"]), 0);
        assert_eq!(count(&[b"tfd: 1\ntfd"]), 1);
        assert_eq!(count(&[b"tfd:"]), 1);
        assert_eq!(count(&[b""]), 0);
    }

    #[test]
    fn fdinfo_path_writes_every_digit() {
        let mut out = [0u8; 40];
        for (fd, want) in [
            (0, "/proc/self/fdinfo/0"),
            (7, "/proc/self/fdinfo/7"),
            (1234567, "/proc/self/fdinfo/1234567"),
            (i32::MAX, "/proc/self/fdinfo/2147483647"),
        ] {
            let n = fdinfo_path(fd, &mut out);
            assert_eq!(&out[..n], want.as_bytes());
        }
    }

    #[test]
    fn epoll_watch_count_counts_a_real_set() {
        use rustix::event::epoll;
        let set = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
        assert_eq!(epoll_watch_count(set.as_fd()).unwrap(), 0);
        let (a, b) = rustix::pipe::pipe().unwrap();
        for (i, fd) in [&a, &b].into_iter().enumerate() {
            epoll::add(
                &set,
                fd,
                epoll::EventData::new_u64(i as u64),
                epoll::EventFlags::IN,
            )
            .unwrap();
        }
        assert_eq!(epoll_watch_count(set.as_fd()).unwrap(), 2);
        epoll::delete(&set, &a).unwrap();
        assert_eq!(epoll_watch_count(set.as_fd()).unwrap(), 1);
        // Not an fd of this process (no process has this many).
        // SAFETY: the number is only formatted into a path, never used.
        let err = epoll_watch_count(unsafe { BorrowedFd::borrow_raw(0x7fff_fff0) }).unwrap_err();
        assert_eq!(err.raw_os_error(), ffi::ENOENT);
    }
}
