//! The shared-memory transport between real processes: round trips of
//! every size across spawned processes, all segment kinds, a peer killed
//! while we block, leaks, and the event loop. The tests that fork are in
//! `shm_fork.rs`, which runs them on a process's only thread.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use procwire::ipc::{SegmentKind, ShmListener, ShmOptions, ShmStream};
use procwire::sys::process::kill;
use procwire::sys::signal::Signal;

const ROLE: &str = "PROCWIRE_TEST_ROLE";

#[path = "common/shm.rs"]
mod shm_common;
use shm_common::{accept_or_refusal, echo_round_trips, pair, pattern, sock_path};

/// The echo side: reads whatever comes and writes it back until EOF.
fn echo_until_eof(s: &mut ShmStream) -> usize {
    let mut buf = vec![0u8; 8192];
    let mut total = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => {
                s.write_all(&buf[..n]).unwrap();
                total += n;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn round_trips_with_a_spawned_process_for_every_kind() {
    if std::env::var(ROLE).as_deref() == Ok("echo-server") {
        let path = std::env::var("SHM_PATH").unwrap();
        let mut l = ShmListener::bind(&path).unwrap();
        l.set_sealed_only(false);
        println!("READY");
        std::io::stdout().flush().unwrap();
        let mut s = l.accept().unwrap();
        echo_until_eof(&mut s);
        std::process::exit(0);
    }
    for kind in [SegmentKind::Memfd, SegmentKind::Posix, SegmentKind::SysV] {
        let path = sock_path(&format!("spawn-{kind:?}"));
        let _ = std::fs::remove_file(&path);
        let mut child = spawn_peer(
            "round_trips_with_a_spawned_process_for_every_kind",
            "echo-server",
            &path,
        );
        let ring = 4096;
        let mut c =
            ShmStream::connect_with(&path, ShmOptions::default().kind(kind).ring_size(ring))
                .unwrap();
        echo_round_trips(&mut c, ring);
        drop(c);
        assert!(child.wait().unwrap().success(), "{kind:?}");
        let _ = std::fs::remove_file(&path);
    }
}

/// Runs `test` of this binary in `role` with `SHM_PATH` set, and waits for
/// it to print READY (its listener is bound).
fn spawn_peer(test: &str, role: &str, path: &std::path::Path) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "-q"])
        .env(ROLE, role)
        .env("SHM_PATH", path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "READY" {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the {role} died");
    }
    child
}

fn spawn_idle_peer(tag: &str, test: &str) -> (std::process::Child, ShmStream) {
    let path = sock_path(tag);
    let _ = std::fs::remove_file(&path);
    let child = spawn_peer(test, "idle-peer", &path);
    let c = ShmStream::connect_with(&path, ShmOptions::default().ring_size(4096)).unwrap();
    let _ = std::fs::remove_file(&path);
    (child, c)
}

fn idle_peer_role() {
    if std::env::var(ROLE).as_deref() == Ok("idle-peer") {
        let l = ShmListener::bind(std::env::var("SHM_PATH").unwrap()).unwrap();
        println!("READY");
        std::io::stdout().flush().unwrap();
        let _s = l.accept().unwrap();
        // Never reads or writes; waits to be killed.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

#[test]
fn sigkill_of_the_peer_ends_a_blocked_read() {
    idle_peer_role();
    let (mut child, c) = spawn_idle_peer("kill-read", "sigkill_of_the_peer_ends_a_blocked_read");
    let killed_at = std::sync::Arc::new(AtomicU64::new(0));
    let k = killed_at.clone();
    let start = Instant::now();
    let pid = child.id() as i32;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        k.store(start.elapsed().as_micros() as u64, Ordering::SeqCst);
        kill(pid, Signal::KILL).unwrap();
    });
    let mut buf = [0u8; 16];
    let n = (&c).read(&mut buf).unwrap();
    let returned = start.elapsed().as_micros() as u64;
    killer.join().unwrap();
    child.wait().unwrap();
    assert_eq!(n, 0, "end-of-file after the peer died");
    let delay = returned - killed_at.load(Ordering::SeqCst);
    eprintln!("blocked read returned {delay} us after SIGKILL");
    // The design checks liveness every 40 ms; allow for a loaded machine.
    assert!(delay < 500_000, "took {delay} us");
}

#[test]
fn sigkill_of_the_peer_ends_a_blocked_write() {
    idle_peer_role();
    let (mut child, c) = spawn_idle_peer("kill-write", "sigkill_of_the_peer_ends_a_blocked_write");
    let written = std::sync::Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let writer = std::thread::spawn(move || {
        let chunk = [7u8; 1024];
        loop {
            match (&c).write(&chunk) {
                Ok(n) => {
                    w.fetch_add(n as u64, Ordering::SeqCst);
                }
                Err(e) => return (e.kind(), Instant::now()),
            }
        }
    });
    // The ring holds 4096 bytes: past that the writer is blocked.
    let deadline = Instant::now() + Duration::from_secs(10);
    while written.load(Ordering::SeqCst) < 4096 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(100));
    let killed = Instant::now();
    kill(child.id() as i32, Signal::KILL).unwrap();
    let (kind, at) = writer.join().unwrap();
    child.wait().unwrap();
    assert_eq!(kind, ErrorKind::BrokenPipe);
    let delay = at.duration_since(killed);
    eprintln!("blocked write returned {delay:?} after SIGKILL");
    assert!(delay < Duration::from_millis(500));
}

/// The POSIX segments this process may have made that still exist: the
/// stream names them `/procwire-shm-<pid>-<n>` with a counter from 0, so
/// each possible name is opened (any other answer than `ENOENT` counts).
/// Portable, and blind to other processes' segments.
fn own_posix_segments(up_to: u32) -> Vec<String> {
    use procwire::sys::shm::{shm_open, ShmOpenFlags};
    let pid = std::process::id();
    (0..up_to)
        .map(|n| format!("/procwire-shm-{pid}-{n}"))
        .filter(|name| match shm_open(name, ShmOpenFlags::READ_ONLY, 0) {
            Err(e) => e.raw_os_error() != libc::ENOENT,
            Ok(_) => true,
        })
        .collect()
}

/// SysV segments created by this process that still exist, from
/// `/proc/sysvipc/shm` (its `cpid` column found by name); `None` where the
/// system has no such file (not Linux).
fn own_sysv_segments() -> Option<usize> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let me = std::process::id().to_string();
    let table = std::fs::read_to_string("/proc/sysvipc/shm").expect("/proc/sysvipc/shm");
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    let cpid = header
        .iter()
        .position(|c| *c == "cpid")
        .expect("a cpid column");
    Some(
        lines
            .filter(|l| l.split_whitespace().nth(cpid) == Some(me.as_str()))
            .count(),
    )
}

fn open_fds() -> usize {
    let dir = if cfg!(target_os = "linux") {
        "/proc/self/fd"
    } else {
        "/dev/fd"
    };
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("can't count open fds in {dir}: {e}"))
        .count()
}

#[test]
fn a_thousand_connect_close_cycles_leak_nothing() {
    if std::env::var(ROLE).as_deref() != Ok("cycles") {
        // Alone in a process, so other tests' fds don't disturb the count.
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "a_thousand_connect_close_cycles_leak_nothing",
                "--exact",
                "--nocapture",
                "-q",
            ])
            .env(ROLE, "cycles")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let path = sock_path("cycles");
    let _ = std::fs::remove_file(&path);
    let fds_before = open_fds();
    let mut l = ShmListener::bind(&path).unwrap();
    l.set_sealed_only(false);
    let acceptor = std::thread::spawn(move || {
        for _ in 0..1000 {
            let mut s = l.accept().unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
        }
        l
    });
    for i in 0..1000 {
        let kind = [SegmentKind::Memfd, SegmentKind::Posix, SegmentKind::SysV][i % 3];
        let mut c =
            ShmStream::connect_with(&path, ShmOptions::default().kind(kind).ring_size(4096))
                .unwrap();
        c.write_all(b"ping").unwrap();
    }
    let l = acceptor.join().unwrap();
    drop(l);
    std::fs::remove_file(&path).unwrap();
    // 1000 connections, a third of them POSIX: names 0..333 were used.
    assert_eq!(
        own_posix_segments(2000),
        Vec::<String>::new(),
        "no POSIX segment of ours is left"
    );
    match own_sysv_segments() {
        Some(n) => assert_eq!(n, 0, "no SysV segment of ours is left"),
        None => println!("SysV segments not counted: no /proc/sysvipc/shm here"),
    }
    assert_eq!(
        open_fds(),
        fds_before,
        "no fd left behind (the listener is closed)"
    );
}

#[test]
fn a_stream_in_the_event_loop_delivers_readable_events() {
    use procwire::net::event::{EventLoop, Interest};
    use std::cell::RefCell;
    use std::rc::Rc;
    let (c, s) = pair("loop", ShmOptions::default());
    s.set_nonblocking(true).unwrap();
    let lp = EventLoop::new().unwrap();
    let got: Rc<RefCell<Vec<u8>>> = Rc::default();
    let g = got.clone();
    let _reg = lp
        .register(s, Interest::READABLE, move |_, s: &ShmStream, _| {
            let mut b = [0u8; 64];
            loop {
                match (&*s).read(&mut b) {
                    Ok(0) => return Ok(()),
                    Ok(n) => g.borrow_mut().extend_from_slice(&b[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        })
        .unwrap();
    // Nothing yet: the first read arms the wake-up, so give it one turn.
    lp.run_once(Some(Duration::from_millis(10))).unwrap();
    let sender = std::thread::spawn(move || {
        for i in 0..5u8 {
            std::thread::sleep(Duration::from_millis(5));
            (&c).write_all(&[i; 10]).unwrap();
        }
        c
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.borrow().len() < 50 {
        assert!(
            Instant::now() < deadline,
            "got {} of 50 bytes",
            got.borrow().len()
        );
        lp.run_once(Some(Duration::from_millis(100))).unwrap();
    }
    let _c = sender.join().unwrap();
    assert_eq!(got.borrow()[..10], [0u8; 10]);
}

/// The resident size of the mapping that starts at `addr`, from
/// /proc/self/smaps.
#[cfg(target_os = "linux")]
fn resident_bytes(addr: usize) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut lines = smaps.lines();
    while let Some(line) = lines.next() {
        let Some((range, _)) = line.split_once(' ') else {
            continue;
        };
        let Some((start, _)) = range.split_once('-') else {
            continue;
        };
        if usize::from_str_radix(start, 16).ok() != Some(addr) {
            continue;
        }
        for l in lines.by_ref() {
            if let Some(kb) = l.strip_prefix("Rss:") {
                return kb
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<usize>()
                    .unwrap()
                    * 1024;
            }
        }
    }
    panic!("no mapping at {addr:#x}");
}

#[cfg(target_os = "linux")]
#[test]
fn both_sides_map_every_page_before_the_first_byte() {
    // A fault per fresh page on the ring's first lap made every 64th
    // 64-byte round trip several times slower: the segment is populated
    // when it is made and when it is accepted, on both sides.
    for kind in [SegmentKind::Memfd, SegmentKind::Posix, SegmentKind::SysV] {
        for prefault in [true, false] {
            let opts = ShmOptions::default()
                .kind(kind)
                .ring_size(1 << 20)
                .prefault(prefault);
            let (c, s) = pair(&format!("populate-{kind:?}-{prefault}"), opts);
            for side in [&c, &s] {
                let (ptr, len) = side.raw_segment();
                let resident = resident_bytes(ptr as usize);
                if prefault {
                    assert_eq!(resident, len, "{kind:?}");
                } else {
                    // Only the header and what the handshake touched.
                    assert!(resident < len / 8, "{kind:?}: {resident} of {len}");
                }
            }
        }
    }
}

#[test]
fn plain_and_streaming_copies_keep_every_byte_through_wrap_around() {
    use procwire::ipc::testing::LocalRing;
    use std::collections::VecDeque;
    // The harness writes odd lengths with the non-temporal copy and even
    // ones with the plain copy; lengths and offsets cover unaligned heads,
    // 64-byte blocks, short tails and the wrap of a 4 KiB ring.
    let mut ring = LocalRing::new(4096).unwrap();
    let mut model = VecDeque::new();
    let mut next = 0u8;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut step = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..5_000 {
        let r = step();
        let len = (r % 1500) as usize + 1;
        if r & (1 << 40) != 0 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    next = next.wrapping_add(37);
                    next
                })
                .collect();
            let free = 4096 - model.len();
            let n = ring.write(&data).unwrap();
            assert_eq!(n, len.min(free), "wrote what fit");
            model.extend(&data[..n]);
        } else {
            let mut buf = vec![0u8; len];
            let avail = model.len();
            let n = ring.read(&mut buf).unwrap();
            // The consumer re-reads the producer's index only when its
            // cached view is empty, so a read may return less than is there,
            // but never nothing while something is.
            assert!(
                n <= len.min(avail) && (n > 0 || avail == 0),
                "{n} of {avail}"
            );
            let want: Vec<u8> = model.drain(..n).collect();
            assert_eq!(&buf[..n], &want[..]);
        }
    }
}

#[cfg(target_os = "linux")]
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn an_idle_blocked_read_sleeps_until_woken() {
    let (mut c, s) = pair("idle", ShmOptions::default());
    let reader = std::thread::spawn(move || {
        let before = voluntary_switches();
        let mut b = [0u8; 4];
        let n = c.read(&mut b).unwrap();
        (n, Instant::now(), voluntary_switches() - before)
    });
    // 1.5 s of idleness (this sleep makes the idle time; nothing waits on
    // it), then one byte. The reader's socket sleeps end every second (the
    // backstop), so the byte comes half-way through one: a lost wake-up
    // would be found only at the end of it, about 0.5 s late.
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    (&s).write_all(b"x").unwrap();
    let (n, woke, switches) = reader.join().unwrap();
    assert_eq!(n, 1);
    // Polling the peer's liveness every 40 ms would be 37 sleeps here; an
    // idle wait sleeps on the socket after the first period.
    assert!(switches <= 8, "{switches} sleeps in 1.5 idle seconds");
    // Woken by the byte, not by a timeout.
    let delay = woke.duration_since(sent);
    assert!(
        delay < Duration::from_millis(200),
        "woke {delay:?} after the write"
    );
}

/// Round trips of 64 bytes with the peer on another CPU, after the client
/// stalled for a moment: how many of them put the client to sleep.
#[cfg(target_os = "linux")]
fn sleeps_after_a_stall(c: &mut ShmStream, rounds: usize) -> u64 {
    let mut msg = [7u8; 64];
    for _ in 0..200 {
        c.write_all(&msg).unwrap();
        c.read_exact(&mut msg).unwrap();
    }
    // The stall: longer than any spin, so the echoing side goes to sleep.
    std::thread::sleep(Duration::from_millis(5));
    let before = voluntary_switches();
    for _ in 0..rounds {
        c.write_all(&msg).unwrap();
        c.read_exact(&mut msg).unwrap();
    }
    voluntary_switches() - before
}

#[cfg(target_os = "linux")]
#[test]
fn round_trips_go_back_to_spinning_after_a_stall() {
    use procwire::sys::cpu::{available_cpus, pin_to};
    if available_cpus() < 2 {
        println!("skipped: needs two CPUs");
        return;
    }
    let (mut c, mut s) = pair("stall", ShmOptions::default());
    let echo = std::thread::spawn(move || {
        pin_to(&[1]).unwrap();
        echo_until_eof(&mut s)
    });
    pin_to(&[0]).unwrap();
    // Once both sides had slept, each used to see the other asleep when it
    // began to wait, so neither spun again: every round trip paid two
    // wake-ups (30 to 40 us here instead of 0.3) for thousands of rounds.
    // Other tests share these CPUs, so one good attempt in three counts.
    let rounds = 500;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let sleeps = sleeps_after_a_stall(&mut c, rounds);
        seen.push(sleeps);
        if sleeps < rounds as u64 / 5 {
            break;
        }
    }
    pin_to(&(0..available_cpus()).collect::<Vec<_>>()).unwrap();
    drop(c);
    echo.join().unwrap();
    println!("sleeps per attempt: {seen:?}");
    assert!(
        *seen.last().unwrap() < rounds as u64 / 5,
        "the client slept in {seen:?} of {rounds} round trips"
    );
}

#[test]
fn a_half_closed_stream_still_gets_its_reply() {
    let (mut c, mut s) = pair("halfclose", ShmOptions::default());
    let request = pattern(300_000, 3);
    let server = std::thread::spawn(move || {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        // The client's end of writing is not the end of the connection:
        // the reply, several rings long, still goes through.
        let reply = pattern(3 << 20, 4);
        s.write_all(&reply).unwrap();
        got
    });
    c.write_all(&request).unwrap();
    c.shutdown(procwire::sys::socket::Shutdown::Write).unwrap();
    assert_eq!(
        c.write(b"x").unwrap_err().kind(),
        ErrorKind::BrokenPipe,
        "a write after shutdown"
    );
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    assert!(reply == pattern(3 << 20, 4), "{} bytes back", reply.len());
    assert!(server.join().unwrap() == request, "the request changed");
}

#[test]
fn shutting_down_reading_fails_the_peers_writes_only() {
    let (c, s) = pair("shutread", ShmOptions::default());
    // The server fills the ring, then blocks for room; the client's
    // shutdown of its reading must end that wait.
    let server = std::thread::spawn(move || {
        let big = vec![1u8; 4 << 20];
        let err = (&s).write_all(&big).unwrap_err();
        // Its own reading still works.
        let mut b = [0u8; 5];
        (&s).read_exact(&mut b).unwrap();
        (err.kind(), b)
    });
    // Let the server block on a full ring (it can't finish before the
    // shutdown: the ring holds a quarter of what it writes).
    let mut first = [0u8; 1];
    (&c).read_exact(&mut first).unwrap();
    c.shutdown(procwire::sys::socket::Shutdown::Read).unwrap();
    let mut b = [0u8; 8];
    assert_eq!((&c).read(&mut b).unwrap(), 0, "a read after shutdown");
    (&c).write_all(b"hello").unwrap();
    let (kind, got) = server.join().unwrap();
    assert_eq!(kind, ErrorKind::BrokenPipe);
    assert_eq!(&got, b"hello");
}

#[test]
fn split_halves_read_and_write_on_two_threads() {
    let (c, mut s) = pair("split", ShmOptions::default());
    let echo = std::thread::spawn(move || echo_until_eof(&mut s));
    let (mut r, mut w) = c.split().unwrap();
    // Eight rings' worth: the echo blocks on a full ring unless the reading
    // half drains it while the writing half is still writing.
    let data = pattern(8 << 20, 5);
    let expect = data.clone();
    let reader = std::thread::spawn(move || {
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        back
    });
    let writer = std::thread::spawn(move || {
        for piece in data.chunks(100_000) {
            w.write_all(piece).unwrap();
        }
        // Dropping the writing half shuts down writing: the echo ends,
        // and with it the reading half's stream.
    });
    writer.join().unwrap();
    assert_eq!(echo.join().unwrap(), expect.len());
    let back = reader.join().unwrap();
    assert!(back == expect, "{} bytes back", back.len());
}

#[test]
fn a_non_blocking_stream_does_not_split() {
    let (c, _s) = pair("splitnb", ShmOptions::default());
    c.set_nonblocking(true).unwrap();
    assert_eq!(c.split().unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[test]
fn the_connection_lives_until_both_halves_are_gone() {
    let (c, s) = pair("splitclose", ShmOptions::default());
    let (mut r, w) = c.split().unwrap();
    drop(w);
    // The writing half is gone: the server reads EOF, yet its writes still
    // reach the reading half.
    let mut b = [0u8; 4];
    assert_eq!((&s).read(&mut b).unwrap(), 0);
    (&s).write_all(b"ping").unwrap();
    r.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    drop(r);
    assert_eq!(
        (&s).write(b"x").unwrap_err().kind(),
        ErrorKind::BrokenPipe,
        "a write once both halves are gone"
    );
}

/// Sends a procwire hello for a memfd segment of the right size, but
/// without its seals: a peer that could truncate it under the server.
fn send_unsealed_memfd_hello(path: &std::path::Path) -> procwire::sys::socket::Socket {
    use procwire::sys::socket::{Domain, SockAddr, Socket, Type};
    use std::os::fd::AsFd;
    let ring: u64 = 4096;
    let fd = procwire::sys::shm::memfd_create("unsealed").unwrap();
    procwire::sys::shm::ftruncate(fd.as_fd(), 4096 + 2 * ring).unwrap();
    let sock = Socket::new(Domain::UNIX, Type::STREAM).unwrap();
    sock.connect(SockAddr::unix(path)).unwrap();
    let mut hello = Vec::from(&b"PWSHM"[..]);
    hello.push(SegmentKind::Memfd as u8);
    hello.extend_from_slice(&ring.to_le_bytes());
    hello.extend_from_slice(&(-1i32).to_le_bytes());
    procwire::sys::fdpass::send_with_fds(&sock, &hello, &[fd.as_fd()]).unwrap();
    sock
}

#[test]
fn an_unsealed_memfd_is_refused() {
    let path = sock_path("unsealed");
    let _ = std::fs::remove_file(&path);
    let l = ShmListener::bind(&path).unwrap();
    let _client = send_unsealed_memfd_hello(&path);
    let e = accept_or_refusal(&l).map(drop).unwrap_err();
    assert!(e.contains("sealed"), "{e}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_listener_refuses_posix_segments_unless_told_otherwise() {
    let path = sock_path("sealedonly");
    let _ = std::fs::remove_file(&path);
    let mut l = ShmListener::bind(&path).unwrap();
    for (kind, ok) in [
        (SegmentKind::Posix, false),
        (SegmentKind::Memfd, true),
        (SegmentKind::SysV, true),
    ] {
        let p = path.clone();
        let client = std::thread::spawn(move || {
            let opts = ShmOptions::default().kind(kind);
            ShmStream::connect_with(&p, opts).map(|_| ())
        });
        let accepted = accept_or_refusal(&l);
        let connected = client.join().unwrap();
        assert_eq!(accepted.is_ok(), ok, "{kind:?}: {:?}", accepted.err());
        assert_eq!(connected.is_ok(), ok, "{kind:?}: {connected:?}");
    }
    l.set_sealed_only(false);
    let p = path.clone();
    let client = std::thread::spawn(move || {
        let opts = ShmOptions::default().kind(SegmentKind::Posix);
        ShmStream::connect_with(&p, opts).map(|_| ())
    });
    assert!(accept_or_refusal(&l).is_ok(), "POSIX once allowed");
    client.join().unwrap().unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn every_copy_path_delivers_every_byte_across_cpus() {
    use procwire::ipc::CopyPath;
    use procwire::sys::cpu::{available_cpus, pin_to};
    if available_cpus() < 2 {
        println!("skipped: one CPU, no reader on another CPU");
        return;
    }
    // Past a whole probe of the chooser (4 epochs of 8 MiB).
    const TOTAL: usize = 48 << 20;
    for path in [CopyPath::Plain, CopyPath::Streaming, CopyPath::Auto] {
        let (c, s) = pair("copypath", ShmOptions::default());
        c.set_copy_path(path);
        let reader = std::thread::spawn(move || {
            pin_to(&[1]).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let mut at = 0usize;
            loop {
                let n = (&s).read(&mut buf).unwrap();
                if n == 0 {
                    return at;
                }
                for (i, &b) in buf[..n].iter().enumerate() {
                    let want = ((at + i) % 251) as u8;
                    assert_eq!(b, want, "byte {}", at + i);
                }
                at += n;
            }
        });
        let writer = std::thread::spawn(move || {
            pin_to(&[0]).unwrap();
            let chunk: Vec<u8> = (0..(251 * 256)).map(|i| (i % 251) as u8).collect();
            let mut sent = 0;
            while sent < TOTAL {
                (&c).write_all(&chunk).unwrap();
                sent += chunk.len();
            }
            let chosen = c.current_copy();
            drop(c);
            (sent, chosen)
        });
        let (sent, chosen) = writer.join().unwrap();
        assert_eq!(reader.join().unwrap(), sent, "{path:?}");
        match path {
            CopyPath::Auto => assert!(
                matches!(chosen, CopyPath::Plain | CopyPath::Streaming),
                "{chosen:?}"
            ),
            forced => assert_eq!(chosen, forced),
        }
        println!("{path:?}: large writes took {chosen:?}");
    }
}
