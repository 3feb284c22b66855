//! The shared-memory tests that fork. A child of `fork()` in a process
//! with other threads may only do async-signal-safe work (another thread
//! could hold the allocator's lock at the fork), and some of these children
//! allocate (an error message, say). So this test file has no harness: its
//! `main` runs each test in turn on the process's only thread, and checks
//! that it is the only one before every fork.
#![cfg(target_os = "linux")]

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use procwire::ipc::{Hello, SegmentKind, ShmListener, ShmOptions};
use procwire::sys::process::{exit_immediately, Fork};

#[path = "common/shm.rs"]
mod shm_common;
use shm_common::{accept_or_refusal, echo_round_trips, pair, sock_path};

/// The tests, by name.
const TESTS: &[(&str, fn())] = &[
    ("round_trips_across_fork", round_trips_across_fork),
    (
        "a_peer_scribbling_over_the_header_gets_errors_not_a_crash",
        a_peer_scribbling_over_the_header_gets_errors_not_a_crash,
    ),
    (
        "fork_refcount_closes_only_after_the_last_holder",
        fork_refcount_closes_only_after_the_last_holder,
    ),
    (
        "a_second_process_writing_the_same_direction_is_refused",
        a_second_process_writing_the_same_direction_is_refused,
    ),
    (
        "fork_counts_both_halves_of_a_split_stream",
        fork_counts_both_halves_of_a_split_stream,
    ),
    (
        "a_sysv_segment_the_peer_did_not_make_is_refused",
        a_sysv_segment_the_peer_did_not_make_is_refused,
    ),
];

/// The number of threads this process runs (Linux).
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads line")
}

fn main() {
    // `cargo test -- NAME` runs the tests whose name contains NAME; flags
    // meant for the standard harness are ignored.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let chosen: Vec<_> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", chosen.len());
    for (name, test) in &chosen {
        assert_eq!(threads(), 1, "{name} starts on the only thread");
        test();
        println!("test {name} ... ok");
    }
    println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; {} filtered out\n",
        chosen.len(),
        TESTS.len() - chosen.len()
    );
}

fn round_trips_across_fork() {
    let ring = 4096;
    let (mut c, mut s) = pair("fork", ShmOptions::default().ring_size(ring));
    assert_eq!(threads(), 1, "nothing else runs at the fork");
    // SAFETY: the child only reads and writes the existing stream (no
    // allocation on these paths), then `_exit`s.
    match unsafe { procwire::ipc::fork() }.unwrap() {
        Fork::Child => {
            drop(c);
            let mut buf = [0u8; 4096];
            let code = loop {
                match s.read(&mut buf) {
                    Ok(0) => break 0,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break 2;
                        }
                    }
                    Err(_) => break 3,
                }
            };
            exit_immediately(code)
        }
        Fork::Parent(mut child) => {
            // The server side now lives in the child: close ours.
            drop(s);
            echo_round_trips(&mut c, ring);
            drop(c);
            assert!(child.wait().unwrap().success());
        }
    }
}

fn a_peer_scribbling_over_the_header_gets_errors_not_a_crash() {
    let (c, s) = pair("scribble", ShmOptions::default().ring_size(4096));
    let (base, len) = s.raw_segment();
    let base = base as usize;
    assert_eq!(threads(), 1, "nothing else runs at the fork");
    // SAFETY: the child only writes random words into the mapping it
    // inherited (atomics, no allocation) and `_exit`s.
    match unsafe { procwire::sys::process::fork() }.unwrap() {
        Fork::Child => {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let end = Instant::now() + Duration::from_millis(500);
            while Instant::now() < end {
                for _ in 0..1000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly the header page; some ring bytes too.
                    let span = if x % 4 == 0 { len } else { 4096 };
                    let off = ((x >> 8) as usize % (span / 8)) * 8;
                    // SAFETY: `off + 8 <= len` and 8-aligned, inside the
                    // shared mapping inherited from the parent.
                    let w = unsafe { &*((base + off) as *const AtomicU64) };
                    w.store(x.rotate_left(17), Ordering::Relaxed);
                }
            }
            exit_immediately(0)
        }
        Fork::Parent(mut child) => {
            c.set_nonblocking(true).unwrap();
            s.set_nonblocking(true).unwrap();
            let mut errors = 0;
            let mut buf = [0u8; 512];
            let end = Instant::now() + Duration::from_millis(700);
            while Instant::now() < end {
                for r in [
                    (&c).write(&buf[..100]).map(|_| ()),
                    (&s).read(&mut buf).map(|_| ()),
                    (&s).write(&buf[..64]).map(|_| ()),
                    (&c).read(&mut buf).map(|_| ()),
                ] {
                    match r {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => errors += 1,
                    }
                }
            }
            assert!(child.wait().unwrap().success());
            assert!(errors > 0, "garbled indices were never reported");
        }
    }
}

fn fork_refcount_closes_only_after_the_last_holder() {
    let (c, s) = pair("refs", ShmOptions::default());
    s.set_nonblocking(true).unwrap();
    assert_eq!(threads(), 1, "nothing else runs at the fork");
    // SAFETY: the child drops its copy (atomics and syscalls, no
    // allocation) and `_exit`s.
    match unsafe { procwire::ipc::fork() }.unwrap() {
        Fork::Child => {
            drop(c);
            exit_immediately(0)
        }
        Fork::Parent(mut child) => {
            assert!(child.wait().unwrap().success());
            let mut b = [0u8; 8];
            let e = (&s).read(&mut b).unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::WouldBlock,
                "the parent still holds the client side"
            );
            (&c).write_all(b"still").unwrap();
            assert_eq!((&s).read(&mut b).unwrap(), 5);
            drop(c);
            assert_eq!(
                (&s).read(&mut b).unwrap(),
                0,
                "closed after the last holder"
            );
        }
    }
}

fn a_second_process_writing_the_same_direction_is_refused() {
    let (c, _s) = pair("owner", ShmOptions::default());
    (&c).write_all(b"mine").unwrap();
    assert_eq!(threads(), 1, "nothing else runs at the fork");
    // SAFETY: this process has one thread (checked above), so the child may
    // allocate (the refusal formats its message); it tries one write and
    // `_exit`s.
    match unsafe { procwire::ipc::fork() }.unwrap() {
        Fork::Child => {
            let code = match (&c).write(b"x") {
                Err(e)
                    if e.raw_os_error().is_none() && e.to_string().contains("already writes") =>
                {
                    0
                }
                _ => 1,
            };
            exit_immediately(code)
        }
        Fork::Parent(mut child) => assert!(child.wait().unwrap().success()),
    }
}

fn fork_counts_both_halves_of_a_split_stream() {
    let (c, s) = pair("splitfork", ShmOptions::default());
    s.set_nonblocking(true).unwrap();
    let (mut r, mut w) = c.split().unwrap();
    assert_eq!(threads(), 1, "nothing else runs at the fork");
    // SAFETY: the child drops its copies (atomics and syscalls) and
    // `_exit`s.
    match unsafe { procwire::ipc::fork() }.unwrap() {
        Fork::Child => {
            // Only the process that split the stream shuts down writing
            // when it drops the writing half; here the drops release the
            // child's hold.
            drop(w);
            drop(r);
            exit_immediately(0)
        }
        Fork::Parent(mut child) => {
            assert!(child.wait().unwrap().success());
            let mut b = [0u8; 8];
            assert_eq!(
                (&s).read(&mut b).unwrap_err().kind(),
                ErrorKind::WouldBlock,
                "the parent's halves still hold the client side"
            );
            w.write_all(b"still").unwrap();
            assert_eq!((&s).read(&mut b).unwrap(), 5);
            (&s).write_all(b"back").unwrap();
            r.read_exact(&mut b[..4]).unwrap();
            assert_eq!(&b[..4], b"back");
            // Each half counts: the reading half alone still holds the side.
            drop(w);
            assert_eq!((&s).read(&mut b).unwrap(), 0, "writing shut down");
            (&s).write_all(b"late").unwrap();
            r.read_exact(&mut b[..4]).unwrap();
            assert_eq!(&b[..4], b"late");
            drop(r);
            assert_eq!(
                (&s).write(b"x").unwrap_err().kind(),
                ErrorKind::BrokenPipe,
                "closed with the last half"
            );
        }
    }
}

fn a_sysv_segment_the_peer_did_not_make_is_refused() {
    use procwire::sys::shm::{shm_remove, shmget, Mapping, SharedMemory, SysvKey, SysvOpen};
    use procwire::sys::socket::{Domain, SockAddr, Socket, Type};
    let ring: u64 = 4096;
    // Another process's segment (a forked child's): a hostile peer could
    // name its id, or another connection's.
    let shared = Mapping::anonymous(4096).unwrap();
    let word = shared.atomic_u64(0).unwrap();
    assert_eq!(threads(), 1, "nothing else runs at the fork");
    // SAFETY: the child makes one system call, stores to a mapped word
    // and `_exit`s.
    let id = match unsafe { procwire::sys::process::fork() }.unwrap() {
        Fork::Child => {
            let id = shmget(
                SysvKey::Private,
                4096 + 2 * ring as usize,
                SysvOpen::Create,
                0o600,
            );
            word.store(id.map_or(u64::MAX, |id| id as u64), Ordering::Release);
            exit_immediately(0)
        }
        Fork::Parent(mut child) => {
            assert!(child.wait().unwrap().success());
            let id = word.load(Ordering::Acquire);
            assert_ne!(id, u64::MAX, "the child's shmget failed");
            id as i32
        }
    };
    let path = sock_path("sysvvictim");
    let _ = std::fs::remove_file(&path);
    let l = ShmListener::bind(&path).unwrap();
    let sock = Socket::new(Domain::UNIX, Type::STREAM).unwrap();
    sock.connect(SockAddr::unix(&path)).unwrap();
    let hello = Hello {
        kind: SegmentKind::SysV,
        prefault: false,
        ring_size: ring,
        sysv_id: id,
    };
    sock.send(&hello.encode()).unwrap();
    let e = accept_or_refusal(&l).map(drop).unwrap_err();
    shm_remove(id).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(e.contains("not by the peer"), "{e}");
    assert_eq!(l.stats().refused, 1);
    // The peer sees its connection closed, not acknowledged.
    let mut b = [0u8; 1];
    assert_eq!(sock.recv(&mut b).unwrap_or(0), 0);
}
