//! Passing fds over a Unix socket: a child process receives a listening
//! socket and accepts on it; extra fds are closed; errors name the socket.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use procwire::sys::fdpass::{recv_with_fds, send_with_fds};
use procwire::sys::process::Spawn;
use procwire::sys::socket::{socketpair, Domain, Shutdown, Socket, Type};

const ROLE: &str = "PROCWIRE_TEST_ROLE";

/// The child's side: fd 3 is a Unix socket; receive a listener on it, accept
/// one connection, answer it, exit.
fn child_role() -> ! {
    // SAFETY: the parent placed a Unix socket at fd 3 for us alone.
    let chan = unsafe { Socket::from_raw_fd(3) };
    let mut fds = Vec::new();
    let mut buf = [0u8; 16];
    let got = recv_with_fds(&chan, &mut buf, &mut fds, 1).unwrap();
    assert_eq!((got.bytes, got.fds, got.fds_truncated), (1, 1, false));
    let cloexec = rustix::io::fcntl_getfd(&fds[0])
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC);
    let listener = Socket::from(fds.pop().unwrap());
    let (conn, _) = listener.accept().unwrap();
    conn.send(if cloexec {
        b"accepted+cloexec"
    } else {
        b"accepted"
    })
    .unwrap();
    std::process::exit(0)
}

#[test]
fn child_accepts_on_a_passed_listener() {
    if std::env::var_os(ROLE).is_some() {
        child_role();
    }
    let listener = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    listener
        .bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap();
    listener.listen(4).unwrap();
    let addr = listener.local_addr().unwrap();

    let (ours, theirs) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    let mut child = Spawn::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_accepts_on_a_passed_listener",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, "child")
        .fd(theirs.as_fd(), 3)
        .spawn()
        .unwrap();
    drop(theirs);

    send_with_fds(&ours, b"L", &[listener.as_fd()]).unwrap();
    // From here only the child holds the listener.
    drop(listener);

    let c = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    c.connect(addr).unwrap();
    let mut reply = String::new();
    (&c).read_to_string(&mut reply).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        reply, "accepted+cloexec",
        "the child accepted, and got the fd close-on-exec"
    );
}

#[test]
fn extra_fds_are_closed() {
    let (a, b) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let w2 = rustix::io::fcntl_dupfd_cloexec(&w, 0).unwrap();
    let w3 = rustix::io::fcntl_dupfd_cloexec(&w, 0).unwrap();
    send_with_fds(&a, b"three", &[w.as_fd(), w2.as_fd(), w3.as_fd()]).unwrap();
    drop((w, w2, w3));

    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut buf = [0u8; 8];
    let got = recv_with_fds(&b, &mut buf, &mut fds, 1).unwrap();
    assert_eq!(&buf[..got.bytes], b"three");
    assert_eq!((got.fds, fds.len()), (1, 1));
    assert!(
        got.fds_truncated,
        "the receiver learns that fds were dropped"
    );
    drop(fds);
    // Every write end is now closed, so the pipe reads end-of-file. A leaked
    // copy would make this read block (bounded by the timeout below).
    rustix::fs::fcntl_setfl(&r, rustix::fs::OFlags::NONBLOCK).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match rustix::io::read(&r, &mut [0u8; 1]) {
            Ok(0) => break,
            Ok(_) => panic!("nothing was written to the pipe"),
            Err(rustix::io::Errno::AGAIN) => {
                // A fork elsewhere in this test process may hold a copy for
                // a moment; a leak would hold it forever.
                assert!(std::time::Instant::now() < deadline, "a write end leaked");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn errors_name_the_socket() {
    let (a, b) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    let e = send_with_fds(&a, b"", &[b.as_fd()]).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        libc::EINVAL,
        "fds need at least one data byte"
    );
    b.set_nonblocking(true).unwrap();
    let e = recv_with_fds(&b, &mut [0u8; 4], &mut Vec::new(), 2).unwrap_err();
    assert!(e.is_would_block());
    assert!(
        e.to_string().starts_with(&format!(
            "recvmsg(fd {}, 4 bytes, up to 2 fds): ",
            b.as_raw_fd()
        )),
        "{e}"
    );
    // shutdown, not drop: a concurrent spawn in this test process may hold a
    // copy of `b` for a moment, which would keep the peer open.
    b.shutdown(Shutdown::Both).unwrap();
    let e = send_with_fds(&a, b"x", &[a.as_fd()]).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EPIPE);
    assert_eq!(
        e.to_string(),
        format!(
            "sendmsg(fd {}, 1 bytes, 1 fds): Broken pipe (os error 32)",
            a.as_raw_fd()
        )
    );
}

#[test]
fn plain_data_without_fds() {
    let (a, b) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    assert_eq!(send_with_fds(&a, b"just data", &[]).unwrap(), 9);
    let mut fds = Vec::new();
    let mut buf = [0u8; 16];
    let got = recv_with_fds(&b, &mut buf, &mut fds, 4).unwrap();
    assert_eq!(
        (&buf[..got.bytes], got.fds, got.fds_truncated),
        (&b"just data"[..], 0, false)
    );
    a.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        recv_with_fds(&b, &mut buf, &mut fds, 4).unwrap().bytes,
        0,
        "end-of-file"
    );
}
