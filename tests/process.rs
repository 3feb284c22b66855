//! Processes: fork and reap, signals, and spawning with fds placed at chosen
//! numbers. Forked children only make system calls and `_exit`.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use std::time::{Duration, Instant};

use procwire::sys::process::{
    exit_immediately, fork, getpid, kill, process_exists, Child, ExitStatus, Fork, Spawn,
};
use procwire::sys::signal::Signal;

fn fork_child(body: impl FnOnce() -> i32) -> Child {
    // SAFETY: the child runs `body`, which only makes system calls or
    // sleeps, then `_exit`s without returning into the harness.
    match unsafe { fork() }.unwrap() {
        Fork::Child => exit_immediately(body()),
        Fork::Parent(c) => c,
    }
}

#[test]
fn fork_wait_returns_the_exit_code() {
    let mut c = fork_child(|| 7);
    assert!(c.pid() > 0 && c.pid() != getpid());
    assert_eq!(c.wait().unwrap(), ExitStatus::Exited(7));
    assert_eq!(
        c.wait().unwrap(),
        ExitStatus::Exited(7),
        "a second wait repeats the status"
    );
    assert_eq!(c.try_wait().unwrap(), Some(ExitStatus::Exited(7)));
    assert!(!c.wait().unwrap().success());
}

#[test]
fn kill_ends_a_child_with_the_signal() {
    let mut c = fork_child(|| loop {
        std::thread::sleep(Duration::from_secs(1));
    });
    assert_eq!(
        c.try_wait().unwrap(),
        None,
        "a sleeping child has not ended"
    );
    c.kill(Signal::TERM).unwrap();
    assert_eq!(c.wait().unwrap(), ExitStatus::Signaled(Signal::TERM));
    assert_eq!(c.wait().unwrap().to_string(), "killed by SIGTERM");
    // After reaping, kill refuses rather than hit a recycled pid.
    let e = c.kill(Signal::TERM).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::ESRCH);
    assert_eq!(
        e.to_string(),
        format!(
            "kill(pid {}, SIGTERM): No such process (os error 3)",
            c.pid()
        )
    );
    assert!(!process_exists(c.pid()) || c.pid() == getpid());
}

#[test]
fn kill_of_a_missing_process_names_pid_and_signal() {
    // Larger than any pid_max the kernel allows (2^22).
    let e = kill(i32::MAX, Signal::KILL).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "kill(pid {}, SIGKILL): No such process (os error 3)",
            i32::MAX
        )
    );
    assert_eq!(
        kill(-5, Signal::KILL).unwrap_err().raw_os_error(),
        libc::EINVAL
    );
}

#[test]
fn wait_for_a_process_that_is_not_our_child_fails() {
    let mut init = Child::from_pid(1).unwrap();
    let e = init.wait().unwrap_err();
    assert_eq!(e.raw_os_error(), libc::ECHILD);
    assert!(e.to_string().starts_with("waitpid(pid 1): "), "{e}");
    assert!(Child::from_pid(0).is_none());
}

#[test]
fn getpid_is_this_process() {
    assert_eq!(getpid() as u32, std::process::id());
    assert!(process_exists(getpid()));
}

fn pipe_with(data: &[u8]) -> OwnedFd {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    rustix::io::write(&w, data).unwrap();
    r
}

/// Reads everything from `fd` until end-of-file.
fn read_all(fd: OwnedFd) -> String {
    let mut out = String::new();
    std::fs::File::from(fd).read_to_string(&mut out).unwrap();
    out
}

#[test]
fn spawn_places_fds_at_chosen_numbers_even_when_they_collide() {
    let a = pipe_with(b"from-a ");
    let b = pipe_with(b"from-b");
    let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
    // Swap them: a goes where b is, and b where a is.
    let script = format!("cat <&{fa}; cat <&{fb}");
    let (out_r, out_w) = procwire::sys::fd::pipe().unwrap();
    let mut child = Spawn::new("sh")
        .args(["-c", &script])
        .fd(a.as_fd(), fb)
        .fd(b.as_fd(), fa)
        .fd(out_w.as_fd(), 1)
        .spawn()
        .unwrap();
    // The child holds the write end now; `cat` sees end-of-file on the
    // pipes (their write ends were dropped in `pipe_with`).
    drop(out_w);
    let out = read_all(out_r);
    assert!(child.wait().unwrap().success());
    assert_eq!(out, "from-bfrom-a ");
    // The parent's fds are untouched.
    assert_eq!(a.as_raw_fd(), fa);
    assert!(rustix::io::fcntl_getfd(&a)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC));
}

#[test]
fn spawn_leaves_other_fds_closed_in_the_child() {
    if !std::path::Path::new("/proc/self/fd").exists() {
        println!("skipped: no /proc on this host");
        return;
    }
    let placed = pipe_with(b"x");
    let other = pipe_with(b"y");
    // A target far above the numbers this test process uses, so that it
    // can't be `other`'s number (other tests open and close fds meanwhile).
    const TARGET: i32 = 250;
    assert_ne!(other.as_raw_fd(), TARGET);
    let script = format!(
        "test -e /proc/self/fd/{TARGET} && ! test -e /proc/self/fd/{}",
        other.as_raw_fd()
    );
    let mut child = Spawn::new("sh")
        .args(["-c", &script])
        .fd(placed.as_fd(), TARGET)
        .spawn()
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "the placed fd must be open and the unplaced fd closed"
    );
}

#[test]
fn spawn_errors_name_the_program() {
    let e = Spawn::new("/nonexistent/procwire-prog")
        .spawn()
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(
        e.to_string()
            .starts_with("execve(/nonexistent/procwire-prog): "),
        "{e}"
    );
    let p = pipe_with(b"");
    let e = Spawn::new("true")
        .fd(p.as_fd(), 3)
        .fd(p.as_fd(), 3)
        .spawn()
        .unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EINVAL);
    assert!(
        e.to_string().starts_with("spawn(true: fd target 3): "),
        "{e}"
    );
}

#[test]
fn try_wait_sees_a_child_exit_without_blocking() {
    let mut c = fork_child(|| 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            assert!(s.success());
            break;
        }
        assert!(Instant::now() < deadline, "child did not exit");
        std::thread::sleep(Duration::from_millis(1));
    }
}
