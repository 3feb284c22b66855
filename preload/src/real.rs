//! The program's own libc functions behind the ones this library exports,
//! found once by the constructor (`dlsym(RTLD_NEXT)`), never lazily: a
//! lazy `dlsym` allocates, and in a program whose allocator calls a wrapped
//! function while it sets itself up (jemalloc in redis) that deadlocks.
//! A call that arrives before the constructor ran (another library's
//! constructor) is made as the raw system call.

use std::sync::atomic::Ordering;

use procwire::sys::interpose::ffi::{
    c_char, c_int, c_long, c_uint, c_void, epoll_event, fd_set, iovec, loff_t, msghdr, nfds_t,
    off_t, pollfd, sigset_t, size_t, sockaddr, socklen_t, ssize_t, timespec, timeval, AT_FDCWD,
};
use procwire::sys::interpose::{self, nr};

macro_rules! reals {
    ($($name:ident: fn($($arg:ident: $t:ty),*) -> $r:ty = $fallback:expr;)*) => {
        mod slot {
            use std::sync::atomic::AtomicUsize;
            $(
                #[allow(non_upper_case_globals)]
                pub(super) static $name: AtomicUsize = AtomicUsize::new(0);
            )*
        }

        /// Finds every real function; called once, by the constructor.
        pub(crate) fn resolve() {
            $(
                let name = concat!(stringify!($name), "\0");
                let c = std::ffi::CStr::from_bytes_with_nul(name.as_bytes());
                if let Ok(c) = c {
                    if let Some(p) = interpose::next_symbol(c) {
                        slot::$name.store(p.as_ptr() as usize, Ordering::Release);
                    }
                }
            )*
        }

        $(
            /// The program's own function of this name (its raw system
            /// call before the constructor ran).
            ///
            /// # Safety
            ///
            /// As for the C function: pointers valid for what it reads and
            /// writes.
            ///
            /// Inlined into the wrapper, so that the wrapper's pass-through
            /// ends in a jump to libc's function, which returns straight to
            /// the program (one return after the system call, not two).
            #[allow(clippy::too_many_arguments)]
            #[inline(always)]
            pub(crate) unsafe fn $name($($arg: $t),*) -> $r {
                let p = slot::$name.load(Ordering::Acquire);
                if p == 0 {
                    // Out of line: its stack frame stays off the wrapper's.
                    #[allow(clippy::too_many_arguments, unused_variables)]
                    #[cold]
                    #[inline(never)]
                    unsafe fn before_constructor($($arg: $t),*) -> $r {
                        #[allow(unused_unsafe)]
                        // SAFETY: the caller passes what the call expects.
                        unsafe { $fallback }
                    }
                    // SAFETY: the caller's arguments.
                    return unsafe { before_constructor($($arg),*) };
                }
                // SAFETY: `p` is the address `dlsym` gave for the C function
                // of this name, whose type is the one declared here (libc's
                // prototype).
                let f: unsafe extern "C" fn($($t),*) -> $r = unsafe { std::mem::transmute(p) };
                // SAFETY: the caller's contract is the function's.
                unsafe { f($($arg),*) }
            }
        )*
    };
}

/// A raw system call as libc's wrapper returns it (-1 and errno).
///
/// # Safety
///
/// `a` holds what call `n` expects.
unsafe fn sys(n: c_long, a: [usize; 6]) -> c_long {
    // SAFETY: the caller passes the arguments of call `n`.
    unsafe { interpose::raw_syscall(n, a) }
}

reals! {
    read: fn(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t =
        sys(nr::SYS_read, [fd as usize, buf as usize, n, 0, 0, 0]) as ssize_t;
    write: fn(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t =
        sys(nr::SYS_write, [fd as usize, buf as usize, n, 0, 0, 0]) as ssize_t;
    readv: fn(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t =
        sys(nr::SYS_readv, [fd as usize, iov as usize, cnt as usize, 0, 0, 0]) as ssize_t;
    writev: fn(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t =
        sys(nr::SYS_writev, [fd as usize, iov as usize, cnt as usize, 0, 0, 0]) as ssize_t;
    recv: fn(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t =
        sys(nr::SYS_recvfrom, [fd as usize, buf as usize, n, flags as usize, 0, 0]) as ssize_t;
    send: fn(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t =
        sys(nr::SYS_sendto, [fd as usize, buf as usize, n, flags as usize, 0, 0]) as ssize_t;
    recvfrom: fn(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, a: *mut sockaddr, l: *mut socklen_t) -> ssize_t =
        sys(nr::SYS_recvfrom, [fd as usize, buf as usize, n, flags as usize, a as usize, l as usize]) as ssize_t;
    sendto: fn(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, a: *const sockaddr, l: socklen_t) -> ssize_t =
        sys(nr::SYS_sendto, [fd as usize, buf as usize, n, flags as usize, a as usize, l as usize]) as ssize_t;
    recvmsg: fn(fd: c_int, m: *mut msghdr, flags: c_int) -> ssize_t =
        sys(nr::SYS_recvmsg, [fd as usize, m as usize, flags as usize, 0, 0, 0]) as ssize_t;
    sendmsg: fn(fd: c_int, m: *const msghdr, flags: c_int) -> ssize_t =
        sys(nr::SYS_sendmsg, [fd as usize, m as usize, flags as usize, 0, 0, 0]) as ssize_t;
    connect: fn(fd: c_int, a: *const sockaddr, l: socklen_t) -> c_int =
        sys(nr::SYS_connect, [fd as usize, a as usize, l as usize, 0, 0, 0]) as c_int;
    listen: fn(fd: c_int, backlog: c_int) -> c_int =
        sys(nr::SYS_listen, [fd as usize, backlog as usize, 0, 0, 0, 0]) as c_int;
    accept: fn(fd: c_int, a: *mut sockaddr, l: *mut socklen_t) -> c_int =
        sys(nr::SYS_accept, [fd as usize, a as usize, l as usize, 0, 0, 0]) as c_int;
    accept4: fn(fd: c_int, a: *mut sockaddr, l: *mut socklen_t, flags: c_int) -> c_int =
        sys(nr::SYS_accept4, [fd as usize, a as usize, l as usize, flags as usize, 0, 0]) as c_int;
    close: fn(fd: c_int) -> c_int =
        sys(nr::SYS_close, [fd as usize, 0, 0, 0, 0, 0]) as c_int;
    shutdown: fn(fd: c_int, how: c_int) -> c_int =
        sys(nr::SYS_shutdown, [fd as usize, how as usize, 0, 0, 0, 0]) as c_int;
    dup: fn(fd: c_int) -> c_int =
        sys(nr::SYS_dup, [fd as usize, 0, 0, 0, 0, 0]) as c_int;
    dup2: fn(fd: c_int, to: c_int) -> c_int =
        sys(nr::SYS_dup3, [fd as usize, to as usize, 0, 0, 0, 0]) as c_int;
    dup3: fn(fd: c_int, to: c_int, flags: c_int) -> c_int =
        sys(nr::SYS_dup3, [fd as usize, to as usize, flags as usize, 0, 0, 0]) as c_int;
    fcntl: fn(fd: c_int, cmd: c_int, arg: usize) -> c_int =
        sys(nr::SYS_fcntl, [fd as usize, cmd as usize, arg, 0, 0, 0]) as c_int;
    fcntl64: fn(fd: c_int, cmd: c_int, arg: usize) -> c_int =
        sys(nr::SYS_fcntl, [fd as usize, cmd as usize, arg, 0, 0, 0]) as c_int;
    ioctl: fn(fd: c_int, req: usize, arg: usize) -> c_int =
        sys(nr::SYS_ioctl, [fd as usize, req, arg, 0, 0, 0]) as c_int;
    socket: fn(domain: c_int, ty: c_int, proto: c_int) -> c_int =
        sys(nr::SYS_socket, [domain as usize, ty as usize, proto as usize, 0, 0, 0]) as c_int;
    socketpair: fn(domain: c_int, ty: c_int, proto: c_int, sv: *mut c_int) -> c_int =
        sys(nr::SYS_socketpair, [domain as usize, ty as usize, proto as usize, sv as usize, 0, 0]) as c_int;
    open: fn(path: *const c_char, flags: c_int, mode: usize) -> c_int =
        sys(nr::SYS_openat, [AT_FDCWD as usize, path as usize, flags as usize, mode, 0, 0]) as c_int;
    open64: fn(path: *const c_char, flags: c_int, mode: usize) -> c_int =
        sys(nr::SYS_openat, [AT_FDCWD as usize, path as usize, flags as usize, mode, 0, 0]) as c_int;
    openat: fn(dir: c_int, path: *const c_char, flags: c_int, mode: usize) -> c_int =
        sys(nr::SYS_openat, [dir as usize, path as usize, flags as usize, mode, 0, 0]) as c_int;
    pipe2: fn(fds: *mut c_int, flags: c_int) -> c_int =
        sys(nr::SYS_pipe2, [fds as usize, flags as usize, 0, 0, 0, 0]) as c_int;
    pipe: fn(fds: *mut c_int) -> c_int =
        sys(nr::SYS_pipe2, [fds as usize, 0, 0, 0, 0, 0]) as c_int;
    poll: fn(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int =
        poll_by_ppoll(fds, n, timeout);
    ppoll: fn(fds: *mut pollfd, n: nfds_t, t: *const timespec, mask: *const sigset_t) -> c_int =
        sys(nr::SYS_ppoll, [fds as usize, n as usize, t as usize, mask as usize, 8, 0]) as c_int;
    select: fn(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, t: *mut timeval) -> c_int =
        select_by_pselect(n, r, w, e, t);
    epoll_create: fn(size: c_int) -> c_int =
        sys(nr::SYS_epoll_create1, [0, 0, 0, 0, 0, 0]) as c_int;
    epoll_create1: fn(flags: c_int) -> c_int =
        sys(nr::SYS_epoll_create1, [flags as usize, 0, 0, 0, 0, 0]) as c_int;
    epoll_ctl: fn(epfd: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int =
        sys(nr::SYS_epoll_ctl, [epfd as usize, op as usize, fd as usize, ev as usize, 0, 0]) as c_int;
    epoll_wait: fn(epfd: c_int, ev: *mut epoll_event, max: c_int, timeout: c_int) -> c_int =
        sys(nr::SYS_epoll_pwait, [epfd as usize, ev as usize, max as usize, timeout as usize, 0, 8]) as c_int;
    epoll_pwait: fn(epfd: c_int, ev: *mut epoll_event, max: c_int, timeout: c_int, mask: *const sigset_t) -> c_int =
        sys(nr::SYS_epoll_pwait, [epfd as usize, ev as usize, max as usize, timeout as usize, mask as usize, 8]) as c_int;
    epoll_pwait2: fn(epfd: c_int, ev: *mut epoll_event, max: c_int, t: *const timespec, mask: *const sigset_t) -> c_int =
        sys(nr::SYS_epoll_pwait2, [epfd as usize, ev as usize, max as usize, t as usize, mask as usize, 8]) as c_int;
    pselect: fn(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, t: *const timespec, mask: *const sigset_t) -> c_int =
        pselect_raw(n, r, w, e, t, mask);
    close_range: fn(first: u32, last: u32, flags: c_int) -> c_int =
        sys(nr::SYS_close_range, [first as usize, last as usize, flags as usize, 0, 0, 0]) as c_int;
    execve: fn(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int =
        sys(nr::SYS_execve, [path as usize, argv as usize, envp as usize, 0, 0, 0]) as c_int;
    execveat: fn(dir: c_int, path: *const c_char, argv: *const *const c_char, envp: *const *const c_char, flags: c_int) -> c_int =
        sys(nr::SYS_execveat, [dir as usize, path as usize, argv as usize, envp as usize, flags as usize, 0]) as c_int;
    execv: fn(path: *const c_char, argv: *const *const c_char) -> c_int = nosys();
    execvp: fn(file: *const c_char, argv: *const *const c_char) -> c_int = nosys();
    execvpe: fn(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int = nosys();
    fexecve: fn(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int = nosys();
    splice: fn(fd_in: c_int, off_in: *mut loff_t, fd_out: c_int, off_out: *mut loff_t, len: size_t, flags: c_uint) -> ssize_t =
        sys(nr::SYS_splice, [fd_in as usize, off_in as usize, fd_out as usize, off_out as usize, len, flags as usize]) as ssize_t;
    sendfile: fn(out: c_int, inp: c_int, off: *mut off_t, count: size_t) -> ssize_t =
        sys(nr::SYS_sendfile, [out as usize, inp as usize, off as usize, count, 0, 0]) as ssize_t;
    sendfile64: fn(out: c_int, inp: c_int, off: *mut off_t, count: size_t) -> ssize_t =
        sys(nr::SYS_sendfile, [out as usize, inp as usize, off as usize, count, 0, 0]) as ssize_t;
}

/// What a call with no raw-system-call fallback gives before the
/// constructor ran (it can't: these are libc's own functions, found as soon
/// as the constructor runs).
fn nosys() -> c_int {
    interpose::set_errno(interpose::ffi::ENOSYS);
    -1
}

/// `poll` as `ppoll` (the raw call every Linux has).
///
/// # Safety
///
/// As for `poll`.
unsafe fn poll_by_ppoll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    let ts = timespec {
        tv_sec: (timeout.max(0) / 1000) as _,
        tv_nsec: ((timeout.max(0) % 1000) * 1_000_000) as _,
    };
    let tp = if timeout < 0 {
        std::ptr::null()
    } else {
        &raw const ts
    };
    // SAFETY: the caller's pollfds; `tp` is null or points at `ts`.
    unsafe {
        sys(
            nr::SYS_ppoll,
            [fds as usize, n as usize, tp as usize, 0, 8, 0],
        ) as c_int
    }
}

/// `select` as `pselect6` (the raw call every Linux has).
///
/// # Safety
///
/// As for `select`.
unsafe fn select_by_pselect(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    t: *mut timeval,
) -> c_int {
    let ts = if t.is_null() {
        None
    } else {
        // SAFETY: the caller's timeval.
        let tv = unsafe { *t };
        Some(timespec {
            tv_sec: tv.tv_sec,
            tv_nsec: (tv.tv_usec * 1000) as _,
        })
    };
    let tp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const timespec);
    // SAFETY: the caller's sets; `tp` is null or points at `ts`.
    unsafe {
        sys(
            nr::SYS_pselect6,
            [
                n as usize,
                r as usize,
                w as usize,
                e as usize,
                tp as usize,
                0,
            ],
        ) as c_int
    }
}

/// `pselect` as `pselect6` (whose last argument points at the mask and
/// its size).
///
/// # Safety
///
/// As for `pselect`.
unsafe fn pselect_raw(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    t: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // The kernel may write the time left into its timespec: a copy.
    // SAFETY: a non-null `t` is the caller's timespec.
    let mut ts = (!t.is_null()).then(|| unsafe { *t });
    let tp = ts
        .as_mut()
        .map_or(std::ptr::null_mut(), |t| t as *mut timespec);
    let data: [usize; 2] = [mask as usize, 8];
    let dp = if mask.is_null() {
        0
    } else {
        data.as_ptr() as usize
    };
    // SAFETY: the caller's sets; `tp` is null or points at `ts`, `dp` at
    // `data` (or null).
    unsafe {
        sys(
            nr::SYS_pselect6,
            [
                n as usize,
                r as usize,
                w as usize,
                e as usize,
                tp as usize,
                dp,
            ],
        ) as c_int
    }
}
