//! No connecting peer can hold up or kill a `ShmListener`: silent,
//! slow, garbled and lying connectors, and a flood of them, each while a
//! well-behaved client connects and echoes, against a thread-per-connection
//! server and a single-threaded event-loop server. Also the non-blocking
//! connecting side, and the bounds (pending handshakes, ring size).

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use procwire::ipc::{
    Hello, SegmentKind, ShmListener, ShmOptions, ShmStream, DEFAULT_HANDSHAKE_TIMEOUT,
};
use procwire::net::event::{EventLoop, Interest, Waker};
use procwire::sys::socket::{Domain, SockAddr, Socket, Type};

#[path = "common/shm.rs"]
mod shm_common;
use shm_common::sock_path;

/// What a well-behaved client's connect and 64-byte echo may take.
const GOOD: Duration = Duration::from_millis(100);
/// The bound on every wait of these tests.
const LONG: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// `loop { let s = l.accept()?; spawn(echo) }`: a blocking accept.
    Threads,
    /// One thread: the listener and every stream on an `EventLoop`.
    Loop,
}

const KINDS: [Kind; 2] = [Kind::Threads, Kind::Loop];

/// An echo server on its own thread; stopped and joined on drop, which
/// fails the test if the server ended early or with an error.
struct Server {
    listener: Arc<ShmListener>,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    waker: Option<Waker>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    fn start(kind: Kind, tag: &str, configure: impl FnOnce(&mut ShmListener)) -> Server {
        let path = sock_path(&format!("{tag}-{kind:?}"));
        let _ = std::fs::remove_file(&path);
        let mut l = ShmListener::bind(&path).unwrap();
        configure(&mut l);
        let listener = Arc::new(l);
        let stop = Arc::new(AtomicBool::new(false));
        let (l, st) = (listener.clone(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || match kind {
            Kind::Threads => threads_server(&l, &st),
            Kind::Loop => loop_server(l, tx),
        });
        let waker = match kind {
            Kind::Loop => Some(rx.recv_timeout(LONG).expect("the loop server started")),
            Kind::Threads => None,
        };
        Server {
            listener,
            path,
            stop,
            waker,
            thread: Some(thread),
        }
    }

    fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed already; a broken server may not stop.
            let _ = std::fs::remove_file(&self.path);
            return;
        }
        self.stop.store(true, Ordering::SeqCst);
        match &self.waker {
            Some(w) => w.wake().unwrap(),
            // Unblocks the accept, which then sees the flag.
            None => drop(ShmStream::connect(&self.path)),
        }
        let _ = std::fs::remove_file(&self.path);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Ok(()))) => {}
            other => panic!("the server ended badly: {other:?}"),
        }
    }
}

fn threads_server(l: &ShmListener, stop: &AtomicBool) -> std::io::Result<()> {
    loop {
        let mut s = l.accept()?;
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

fn loop_server(l: Arc<ShmListener>, tx: std::sync::mpsc::Sender<Waker>) -> std::io::Result<()> {
    let lp = EventLoop::new()?;
    tx.send(lp.waker(|cx| cx.stop())?).unwrap();
    l.set_nonblocking(true);
    let _reg = lp.register(l, Interest::READABLE, |cx, l: &Arc<ShmListener>, _| {
        loop {
            let s = match l.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            s.set_nonblocking(true)?;
            cx.register(s, Interest::READABLE, |cx, s: &ShmStream, _| {
                let mut buf = [0u8; 4096];
                loop {
                    match (&*s).read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            // Echoes are small: the 1 MiB ring has room.
                            if (&*s).write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                        Err(_) => break,
                    }
                }
                cx.deregister_current();
                Ok(())
            })?
            .detach();
        }
    })?;
    lp.run()
}

/// A well-behaved client's connect and 64-byte echo; panics past [`GOOD`].
fn good_client(server: &Server, what: &str) {
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        let t = Instant::now();
        let mut s = ShmStream::connect(&server.path).unwrap();
        let msg = [round as u8; 64];
        s.write_all(&msg).unwrap();
        let mut back = [0u8; 64];
        s.read_exact(&mut back).unwrap();
        let took = t.elapsed();
        assert_eq!(back, msg);
        assert!(
            took < GOOD,
            "{what}: a good client took {took:?} to connect and echo"
        );
        slowest = slowest.max(took);
    }
    println!("{what}: the slowest good connect-and-echo took {slowest:?}");
    assert!(server.is_running(), "{what}: the server stopped");
}

/// A raw connection to the listener.
fn raw(path: &Path) -> Socket {
    let s = Socket::new(Domain::UNIX, Type::STREAM).unwrap();
    s.connect(SockAddr::unix(path)).unwrap();
    s
}

/// Waits until the listener closes `s`: end-of-file (or a reset), never
/// an answer.
fn closed_by_listener(s: &Socket, what: &str) {
    let mut b = [0u8; 64];
    assert!(
        s.wait_readable(Some(LONG)).unwrap(),
        "{what}: still open after {LONG:?}"
    );
    match s.recv_nonblocking(&mut b) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("{what}: the listener answered {:?}", &b[..n]),
    }
}

fn hello(kind: SegmentKind, ring_size: u64) -> [u8; procwire::ipc::HELLO_LEN] {
    Hello {
        kind,
        prefault: false,
        ring_size,
        sysv_id: -1,
    }
    .encode()
}

#[test]
fn a_silent_connector_delays_no_one_and_is_closed_at_its_deadline() {
    for kind in KINDS {
        let server = Server::start(kind, "silent", |_| {});
        let silent = raw(&server.path);
        good_client(&server, "silent connector");
        let t = Instant::now();
        closed_by_listener(&silent, "the silent connector");
        assert!(t.elapsed() < Duration::from_secs(2), "{kind:?}");
        assert_eq!(server.listener.stats().timed_out, 1, "{kind:?}");
        good_client(&server, "after the silent connector");
    }
}

#[test]
fn a_byte_at_a_time_connector_delays_no_one() {
    for kind in KINDS {
        let server = Server::start(kind, "dribble", |_| {});
        let memfd = procwire::sys::shm::sealed_memfd("procwire-test", 4096 + 2 * 4096).unwrap();
        let sock = raw(&server.path);
        let bytes = hello(SegmentKind::Memfd, 4096);
        // The first byte carries the fd, as a real connector's would.
        procwire::sys::fdpass::send_with_fds(&sock, &bytes[..1], &[memfd.as_fd()]).unwrap();
        let dribbler = std::thread::spawn(move || {
            // 20 ms a byte: 340 ms for the rest, past the 250 ms deadline.
            for b in &bytes[1..] {
                std::thread::sleep(Duration::from_millis(20));
                if sock.send(std::slice::from_ref(b)).is_err() {
                    break;
                }
            }
            sock
        });
        good_client(&server, "byte-at-a-time connector");
        let sock = dribbler.join().unwrap();
        closed_by_listener(&sock, "the byte-at-a-time connector");
        let stats = server.listener.stats();
        assert_eq!((stats.timed_out, stats.refused), (1, 0), "{kind:?}");
        good_client(&server, "after the byte-at-a-time connector");
    }
}

#[test]
fn a_garbage_hello_is_refused_and_the_server_goes_on() {
    for kind in KINDS {
        let server = Server::start(kind, "garbage", |_| {});
        let sock = raw(&server.path);
        sock.send(b"GET / HTTP/1.1\r\nHost").unwrap();
        good_client(&server, "garbage hello");
        closed_by_listener(&sock, "the garbage connector");
        assert_eq!(server.listener.stats().refused, 1, "{kind:?}");
        let why = server.listener.last_refusal().unwrap();
        assert!(why.contains("not a procwire"), "{kind:?}: {why}");
        good_client(&server, "after the garbage hello");
    }
}

#[test]
fn a_valid_hello_with_the_wrong_fd_is_refused() {
    let file = std::env::temp_dir().join(format!("procwire-wrongfd-{}", std::process::id()));
    std::fs::write(&file, vec![0u8; 4096 + 2 * 4096]).unwrap();
    for kind in KINDS {
        let server = Server::start(kind, "wrongfd", |_| {});
        let (pipe_r, _pipe_w) = procwire::sys::fd::pipe().unwrap();
        let regular = std::fs::File::open(&file).unwrap();
        let (sock_a, _sock_b) =
            procwire::sys::socket::socketpair(Domain::UNIX, Type::STREAM).unwrap();
        let memfd = procwire::sys::shm::sealed_memfd("procwire-test", 4096 + 2 * 4096).unwrap();
        let cases: [(&str, SegmentKind, Vec<std::os::fd::BorrowedFd<'_>>, &str); 6] = [
            ("a pipe", SegmentKind::Memfd, vec![pipe_r.as_fd()], "bytes"),
            (
                "a socket",
                SegmentKind::Memfd,
                vec![sock_a.as_fd()],
                "bytes",
            ),
            // The right size, but a file anyone could truncate.
            (
                "a file",
                SegmentKind::Memfd,
                vec![regular.as_fd()],
                "sealed",
            ),
            ("no fd", SegmentKind::Memfd, vec![], "no segment fd"),
            (
                "two fds",
                SegmentKind::Memfd,
                vec![memfd.as_fd(), memfd.as_fd()],
                "more than one",
            ),
            (
                "an fd with SysV",
                SegmentKind::SysV,
                vec![memfd.as_fd()],
                "SysV",
            ),
        ];
        for (i, (what, seg, fds, why)) in cases.into_iter().enumerate() {
            let sock = raw(&server.path);
            procwire::sys::fdpass::send_with_fds(&sock, &hello(seg, 4096), &fds).unwrap();
            good_client(&server, what);
            closed_by_listener(&sock, what);
            assert_eq!(
                server.listener.stats().refused,
                i as u64 + 1,
                "{kind:?} {what}"
            );
            let got = server.listener.last_refusal().unwrap();
            assert!(got.contains(why), "{kind:?} {what}: {got}");
        }
        good_client(&server, "after the wrong fds");
    }
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn two_hundred_silent_connectors_delay_no_one() {
    for kind in KINDS {
        let server = Server::start(kind, "flood", |_| {});
        let flood: Vec<Socket> = (0..200).map(|_| raw(&server.path)).collect();
        good_client(&server, "200 silent connectors");
        for (i, s) in flood.iter().enumerate() {
            closed_by_listener(s, &format!("silent connector {i}"));
        }
        let stats = server.listener.stats();
        assert_eq!(stats.timed_out + stats.evicted, 200, "{kind:?}: {stats:?}");
        // Never more pending than allowed: the rest were evicted.
        assert!(stats.evicted >= 200 - 128, "{kind:?}: {stats:?}");
        assert_eq!(server.listener.pending(), 0);
        good_client(&server, "after the flood");
    }
}

#[test]
fn past_the_bound_the_oldest_pending_handshake_is_dropped() {
    let server = Server::start(Kind::Loop, "bound", |l| {
        l.set_max_pending(4);
        l.set_handshake_timeout(LONG);
    });
    let silent: Vec<Socket> = (0..10).map(|_| raw(&server.path)).collect();
    // The oldest six go, in order; the newest four wait for their deadline.
    for (i, s) in silent.iter().take(6).enumerate() {
        closed_by_listener(s, &format!("connector {i}"));
    }
    let stats = server.listener.stats();
    assert_eq!((stats.evicted, stats.timed_out), (6, 0), "{stats:?}");
    assert_eq!(server.listener.pending(), 4);
    // Kept past the default deadline: the listener's own one is 10 s.
    let past_default = DEFAULT_HANDSHAKE_TIMEOUT + Duration::from_millis(150);
    assert!(
        !silent[6].wait_readable(Some(past_default)).unwrap(),
        "kept"
    );
    for s in &silent[7..] {
        assert!(!s.wait_readable(Some(Duration::ZERO)).unwrap(), "kept");
    }
    // A good client's hello is read when it is accepted: it is not held
    // up by the full set.
    good_client(&server, "a full pending set");
}

#[test]
fn a_ring_larger_than_allowed_is_refused() {
    let server = Server::start(Kind::Threads, "bigring", |l| l.set_max_ring_size(1 << 20));
    let big = ShmStream::connect_with(&server.path, ShmOptions::default().ring_size(2 << 20));
    assert_eq!(big.unwrap_err().kind(), ErrorKind::ConnectionRefused);
    let why = server.listener.last_refusal().unwrap();
    assert!(why.contains("takes up to 1048576"), "{why}");
    good_client(&server, "after a big ring");
    // A non-blocking connect to the same server gives its stream once.
    let c = ShmStream::connect_nonblocking(&server.path, ShmOptions::default()).unwrap();
    assert!(procwire::sys::fd::wait_readable(c.as_fd(), Some(LONG)).unwrap());
    let mut s = c.try_finish().unwrap().expect("acknowledged");
    assert_eq!(c.try_finish().unwrap_err().kind(), ErrorKind::InvalidInput);
    drop(c);
    s.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
}

#[test]
fn one_thread_connects_and_accepts_on_one_loop() {
    let path = sock_path("oneloop");
    let _ = std::fs::remove_file(&path);
    let l = ShmListener::bind(&path).unwrap();
    l.set_nonblocking(true);
    let lp = EventLoop::new().unwrap();
    let served = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let s2 = served.clone();
    let _server = lp
        .register(l, Interest::READABLE, move |cx, l: &ShmListener, _| loop {
            match l.accept() {
                Ok(s) => {
                    s.set_nonblocking(true)?;
                    let s2 = s2.clone();
                    cx.register(s, Interest::READABLE, move |_, s: &ShmStream, _| {
                        let mut b = [0u8; 64];
                        loop {
                            match (&*s).read(&mut b) {
                                Ok(0) => return Ok(()),
                                Ok(n) => {
                                    (&*s).write_all(&b[..n])?;
                                    s2.set(s2.get() + 1);
                                }
                                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                                Err(e) => return Err(e),
                            }
                        }
                    })?
                    .detach();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        })
        .unwrap();
    let connecting = ShmStream::connect_nonblocking(&path, ShmOptions::default()).unwrap();
    // Nothing has answered yet: the listener has not run.
    assert!(connecting.try_finish().unwrap().is_none());
    let stream: std::rc::Rc<std::cell::RefCell<Option<ShmStream>>> = Default::default();
    let st = stream.clone();
    let _client = lp
        .register(connecting, Interest::READABLE, move |cx, c, _| {
            if let Some(s) = c.try_finish()? {
                (&s).write_all(b"over one loop")?;
                *st.borrow_mut() = Some(s);
                cx.deregister_current();
            }
            Ok(())
        })
        .unwrap();
    let deadline = Instant::now() + LONG;
    while served.get() == 0 {
        assert!(Instant::now() < deadline, "no echo in {LONG:?}");
        lp.run_once(Some(Duration::from_millis(50))).unwrap();
    }
    let s = stream.borrow_mut().take().expect("the client finished");
    let mut back = [0u8; 13];
    (&s).read_exact(&mut back).unwrap();
    assert_eq!(&back, b"over one loop");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_listener_that_closes_refuses_a_non_blocking_connect() {
    let path = sock_path("plainclose");
    let _ = std::fs::remove_file(&path);
    let plain = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let c = ShmStream::connect_nonblocking(&path, ShmOptions::default()).unwrap();
    drop(plain.accept().unwrap());
    assert!(procwire::sys::fd::wait_readable(c.as_fd(), Some(LONG)).unwrap());
    assert_eq!(
        c.try_finish().unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    // A listener that answers something else refuses too.
    let c = ShmStream::connect_nonblocking(&path, ShmOptions::default()).unwrap();
    let (mut s, _) = plain.accept().unwrap();
    s.write_all(b"+OK\r\n").unwrap();
    assert!(procwire::sys::fd::wait_readable(c.as_fd(), Some(LONG)).unwrap());
    assert_eq!(
        c.try_finish().unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_listening_sockets_own_errors_still_surface() {
    const ROLE: &str = "PROCWIRE_TEST_ROLE";
    if std::env::var(ROLE).as_deref() != Ok("out-of-fds") {
        // Alone in a process: it runs out of descriptors on purpose.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "the_listening_sockets_own_errors_still_surface",
                "--exact",
                "--nocapture",
                "-q",
            ])
            .env(ROLE, "out-of-fds")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let path = sock_path("outoffds");
    let _ = std::fs::remove_file(&path);
    let l = ShmListener::bind(&path).unwrap();
    // A small table (the hard limit may be a million), filled, then one
    // slot freed for the client.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls with a pointer to a live local.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_cur.min(256);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    let mut held = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(held.len() < 1 << 20, "no descriptor limit");
    }
    held.pop();
    let _client = raw(&path);
    // The listener can't take the connection: that is its own error, and
    // `accept` says so instead of waiting.
    let e = procwire::sys::Error::from_io("accept", l.accept().unwrap_err());
    assert_eq!(e.raw_os_error(), libc::EMFILE, "{e}");
    assert!(e.to_string().starts_with("accept"), "{e}");
    // Nothing was refused: the connection still waits in the backlog.
    assert_eq!(l.stats().refused, 0);
    // With room again the connection is taken (and waits for its hello).
    drop(held);
    l.set_nonblocking(true);
    assert_eq!(l.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(l.pending(), 1);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn one_non_blocking_accept_takes_at_most_sixteen_turns_of_connections() {
    // A full backlog (1,024 + 1 on Linux) is more than one call's 16 turns
    // of 64: the call returns with one still waiting, so that a loop
    // serving the listener under an endless flood serves others too.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls with a pointer to a live local; raising the soft
    // limit to the hard one affects no other test.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    if lim.rlim_cur < 4096 {
        println!(
            "skipped: a descriptor limit of {} (ulimit -Hn 4096)",
            lim.rlim_cur
        );
        return;
    }
    let path = sock_path("fullbacklog");
    let _ = std::fs::remove_file(&path);
    let mut l = ShmListener::bind(&path).unwrap();
    l.set_max_pending(2048);
    // None expires while the test looks.
    l.set_handshake_timeout(LONG);
    l.set_nonblocking(true);
    let mut clients = Vec::new();
    loop {
        let s = Socket::new_nonblocking(Domain::UNIX, Type::STREAM).unwrap();
        match s.connect(SockAddr::unix(&path)) {
            Ok(()) => clients.push(s),
            Err(e) if e.is_would_block() => break,
            Err(e) => panic!("{e}"),
        }
        assert!(clients.len() <= 100_000, "no backlog limit");
    }
    if clients.len() <= 16 * 64 {
        println!("skipped: a backlog of {} here", clients.len());
        return;
    }
    assert_eq!(l.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(l.pending(), 16 * 64, "{} connected", clients.len());
    // The next call takes the rest.
    assert_eq!(l.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(l.pending(), clients.len());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_listener_that_never_answers_times_a_non_blocking_connect_out() {
    let path = sock_path("silentlistener");
    let _ = std::fs::remove_file(&path);
    let plain = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let c = ShmStream::connect_nonblocking(&path, ShmOptions::default()).unwrap();
    let _held = plain.accept().unwrap();
    let t = Instant::now();
    assert!(c.deadline() >= t + ShmStream::HANDSHAKE_TIMEOUT - Duration::from_secs(1));
    // Not yet, and nothing to read until the deadline.
    assert!(c.try_finish().unwrap().is_none());
    let left = c.deadline().saturating_duration_since(Instant::now());
    assert!(!procwire::sys::fd::wait_readable(c.as_fd(), Some(left)).unwrap());
    let e = c.try_finish().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(t.elapsed() < ShmStream::HANDSHAKE_TIMEOUT + LONG);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_segment_whose_header_is_wrong_is_refused() {
    use procwire::sys::shm::{sealed_memfd, Access, Mapping, SharedMemory};
    let server = Server::start(Kind::Loop, "badheader", |_| {});
    let ring = 4096u64;
    let len = 4096 + 2 * ring as usize;
    let magic = u64::from_le_bytes(*b"PWSHM001");
    // (magic, version, ring size) written into the header at 0, 8, 16.
    let cases = [
        ("a wrong magic", magic ^ 1, 2u64, ring, false),
        ("a wrong version", magic, 3, ring, false),
        ("a wrong ring size", magic, 2, 2 * ring, false),
        ("all three right", magic, 2, ring, true),
    ];
    for (i, (what, m, v, r, ok)) in cases.into_iter().enumerate() {
        let fd = sealed_memfd("procwire-test", len as u64).unwrap();
        let map = Mapping::map(fd.as_fd(), len, Access::ReadWrite).unwrap();
        map.write_at(0, &m.to_le_bytes()).unwrap();
        map.write_at(8, &v.to_le_bytes()).unwrap();
        map.write_at(16, &r.to_le_bytes()).unwrap();
        let sock = raw(&server.path);
        procwire::sys::fdpass::send_with_fds(
            &sock,
            &hello(SegmentKind::Memfd, ring),
            &[fd.as_fd()],
        )
        .unwrap();
        assert!(sock.wait_readable(Some(LONG)).unwrap(), "{what}: no answer");
        let mut b = [0u8; 1];
        let n = sock.recv_nonblocking(&mut b).unwrap_or(0);
        if ok {
            assert_eq!((n, b[0]), (1, procwire::ipc::HELLO_ACK), "{what}");
        } else {
            assert_eq!(n, 0, "{what}: acknowledged");
            let why = server.listener.last_refusal().unwrap();
            assert!(why.contains("bad segment header"), "{what}: {why}");
        }
        assert_eq!(
            server.listener.stats().refused,
            (i as u64 + 1).min(3),
            "{what}"
        );
    }
    good_client(&server, "after bad headers");
}
