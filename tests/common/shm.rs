//! Helpers for the shared-memory tests (`shm_stream.rs`, `shm_fork.rs`):
//! a connected pair in one process and round trips of every size.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;

use procwire::ipc::{ShmListener, ShmOptions, ShmStream};

/// The sizes a round trip sends: around a page, a ring, and beyond.
pub const SIZES: [usize; 7] = [1, 100, 4095, 4096, 4097, 9000, 16384];

/// A socket path of this process's own under the temporary directory.
pub fn sock_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("procwire-shm-{tag}-{}.sock", std::process::id()))
}

/// A connected pair in this process: (client, server).
pub fn pair(tag: &str, opts: ShmOptions) -> (ShmStream, ShmStream) {
    let path = sock_path(tag);
    let _ = std::fs::remove_file(&path);
    let mut l = ShmListener::bind(&path).unwrap();
    // Both ends are this test: POSIX segments are trusted here.
    l.set_sealed_only(false);
    // One thread does both sides (a helper thread, even joined, can still
    // be counted in `/proc/self/status` when `shm_fork.rs` checks that it
    // forks alone): the connect sends its offer without waiting, the
    // listener answers without blocking, and the connector reads the answer.
    let connecting = ShmStream::connect_nonblocking(&path, opts).unwrap();
    let s = accept_or_refusal(&l).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let c = loop {
        if let Some(c) = connecting.try_finish().unwrap() {
            break c;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "no answer to the offer in 10 s");
        procwire::sys::fd::wait_readable(std::os::fd::AsFd::as_fd(&connecting), Some(left))
            .unwrap();
    };
    std::fs::remove_file(&path).unwrap();
    (c, s)
}

/// `n` bytes of a pattern that differs with `seed`.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Sends each size in pieces of at most a ring and reads each piece back.
pub fn echo_round_trips(c: &mut ShmStream, ring: usize) {
    for (k, &size) in SIZES.iter().enumerate() {
        let data = pattern(size, k as u8);
        let mut back = vec![0u8; size];
        let mut at = 0;
        while at < size {
            let n = (size - at).min(ring);
            c.write_all(&data[at..at + n]).unwrap();
            c.read_exact(&mut back[at..at + n]).unwrap();
            at += n;
        }
        assert_eq!(back, data, "size {size}");
    }
}

/// The next connection `l` accepts, or why it refused the next one: the
/// listener never returns a peer's bad handshake as its error, so tests of
/// refusals read its count and reason. Leaves `l` in non-blocking mode;
/// panics after 10 s. Runs on the calling thread alone (no helper thread:
/// `shm_fork.rs` forks).
pub fn accept_or_refusal(l: &ShmListener) -> Result<ShmStream, String> {
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};
    let refused = l.stats().refused;
    l.set_nonblocking(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match l.accept() {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("the listener's own error: {e}"),
        }
        if l.stats().refused > refused {
            return Err(l.last_refusal().expect("a refusal has a reason"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::ZERO,
            "neither accepted nor refused in 10 s"
        );
        procwire::sys::fd::wait_readable(l.as_fd(), Some(left)).unwrap();
    }
}
