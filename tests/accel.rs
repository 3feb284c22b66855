//! The accelerated-socket protocol of `ipc::accel` (what the preload runs
//! inside programs) between two ends of a socketpair in this process:
//! the socket's readiness mirrors the rings, and a peer that scribbles
//! over the segment gets errors, never a crash or a hang.
#![cfg(target_os = "linux")]

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use procwire::ipc::accel::{self, Accel, Attach, Flags};
use procwire::sys::fd::{wait_readable, wait_writable};

const RING: usize = 4096;

/// A connected pair, server and client, both attached and non-blocking.
fn pair() -> (UnixStream, Accel, UnixStream, Accel) {
    pair_with(RING)
}

/// [`pair`] with rings of `ring` bytes.
fn pair_with(ring: usize) -> (UnixStream, Accel, UnixStream, Accel) {
    let (s, c) = UnixStream::pair().unwrap();
    s.set_nonblocking(true).unwrap();
    c.set_nonblocking(true).unwrap();
    let server = Accel::offer(s.as_fd(), ring).unwrap();
    let client = match accel::try_attach(c.as_fd(), 0, false).unwrap() {
        Attach::Attached(a) => a,
        other => panic!("no attach: {other:?}"),
    };
    (s, server, c, client)
}

fn nb() -> Flags {
    Flags::from_bits(0)
}

fn readable(s: &UnixStream) -> bool {
    wait_readable(s.as_fd(), Some(Duration::ZERO)).unwrap()
}

fn writable(s: &UnixStream) -> bool {
    wait_writable(s.as_fd(), Some(Duration::ZERO)).unwrap()
}

#[test]
fn the_socket_is_readable_exactly_while_the_ring_has_bytes() {
    let (s, server, c, client) = pair();
    assert!(!readable(&c), "nothing sent yet");
    assert_eq!(server.send(s.as_fd(), &[b"hello"], nb()).unwrap(), 5);
    assert!(readable(&c), "a doorbell for the bytes");
    let mut b = [0u8; 3];
    assert_eq!(client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap(), 3);
    assert_eq!(&b, b"hel");
    assert!(readable(&c), "two bytes are left");
    assert_eq!(client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap(), 2);
    assert!(
        !readable(&c),
        "emptied: the doorbell is taken off with the last byte"
    );
    let e = client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap_err();
    assert!(e.is_would_block(), "{e}");
    // Armed again: the next bytes ring again.
    assert_eq!(server.send(s.as_fd(), &[b"x"], nb()).unwrap(), 1);
    assert!(readable(&c));
    // Several doorbells (a reader that is closing makes every write ring):
    // emptying the ring takes all of them off.
    client.closing();
    for b in [b"a", b"b", b"c"] {
        assert_eq!(server.send(s.as_fd(), &[b], nb()).unwrap(), 1);
    }
    let mut b = [0u8; 8];
    assert_eq!(client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap(), 4);
    assert_eq!(&b[..4], b"xabc");
    assert!(!readable(&c), "every doorbell was taken off");
}

#[test]
fn a_full_ring_makes_the_socket_unwritable_until_the_reader_frees_space() {
    let (s, server, c, client) = pair();
    let big = vec![7u8; RING * 3];
    assert!(writable(&s));
    assert_eq!(
        server.send(s.as_fd(), &[&big[..]], nb()).unwrap(),
        RING,
        "a partial write"
    );
    let e = server.send(s.as_fd(), &[&big[..]], nb()).unwrap_err();
    assert!(e.is_would_block(), "{e}");
    assert!(!writable(&s), "fillers switched writability off");
    let mut all = vec![0u8; RING * 2];
    let mut got = 0;
    let mut take = |n: usize| {
        assert_eq!(
            client
                .recv(c.as_fd(), &mut [&mut all[got..got + n]], nb())
                .unwrap(),
            n
        );
        got += n;
    };
    // The kernel's rule for a Unix socket's writer: woken once no more
    // than a quarter of what it queued is left.
    take(100);
    assert!(!writable(&s), "most of the ring is still unread");
    take(RING * 3 / 4 - 101);
    assert!(!writable(&s), "one byte more than a quarter is unread");
    take(1);
    assert!(
        writable(&s),
        "a quarter left: the reader drained the fillers"
    );
    assert!(
        readable(&c),
        "one non-data byte is kept while the ring still has bytes"
    );
    assert_eq!(
        server.send(s.as_fd(), &[&big[..]], nb()).unwrap(),
        RING * 3 / 4,
        "the room the reader made"
    );
    // Everything arrives, in order, whatever was on the socket.
    while got < RING + RING * 3 / 4 {
        got += client
            .recv(c.as_fd(), &mut [&mut all[got..]], nb())
            .unwrap();
    }
    assert!(all[..got].iter().all(|&x| x == 7));
}

/// A downgrade by one thread of a side waits for the fillers its other
/// threads are sending; one of them blocked on a full ring (in the
/// kernel, on its fillers) goes on at the reader's next read, however much
/// of the ring is left unread, so the downgrade finishes: it must not wait
/// for the reader to read three quarters of a ring (and give up as broken
/// after its patience).
#[test]
fn a_downgrade_wakes_a_blocked_writer_at_the_next_read() {
    let (s, server, c, client) = pair();
    s.set_nonblocking(false).unwrap();
    let data: Vec<u8> = (0..RING * 2).map(|i| (i % 251) as u8).collect();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let (down_tx, down_rx) = std::sync::mpsc::channel();
    // However the test ends, a writer still blocked is let go (a closed
    // peer), so that the scope's join never hangs.
    struct LetGo<'a>(&'a UnixStream);
    impl Drop for LetGo<'_> {
        fn drop(&mut self) {
            let _ = self.0.shutdown(std::net::Shutdown::Both);
        }
    }
    std::thread::scope(|scope| {
        let _let_go = LetGo(&c);
        scope.spawn(|| {
            // Blocks once the ring and the socket (with fillers) are full.
            let r = server.send(s.as_fd(), &[&data[..]], nb());
            sent_tx.send(r.map_err(|e| e.to_string())).unwrap();
        });
        // The writer is blocked once the fillers made its socket
        // unwritable (bounded: a writer that never got there fails).
        let start = Instant::now();
        while writable(&s) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the ring never filled"
            );
            std::thread::yield_now();
        }
        scope.spawn(|| {
            let r = server.downgrade_tx(s.as_fd());
            down_tx.send(r.map_err(|e| e.to_string())).unwrap();
        });
        while !client.downgrading() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no downgrade began"
            );
            std::thread::yield_now();
        }
        let mut got = vec![0u8; 100];
        assert_eq!(
            client.recv(c.as_fd(), &mut [&mut got[..]], nb()).unwrap(),
            100
        );
        let down = down_rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(
            down,
            Ok(Ok(())),
            "the downgrade did not finish after the read"
        );
        let sent = sent_rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(sent, Ok(Ok(RING * 2)), "the writer's call");
        got.extend(read_all(&c, &client));
        assert_eq!(got, data, "every byte, once, in order");
    });
}

#[test]
fn peek_waitall_and_vectors_keep_socket_semantics() {
    let (s, server, c, client) = pair();
    let parts: [&[u8]; 3] = [b"ab", b"", b"cdef"];
    assert_eq!(server.send(s.as_fd(), &parts, nb()).unwrap(), 6);
    let mut p = [0u8; 4];
    let peek = Flags::from_bits(procwire::sys::interpose::ffi::MSG_PEEK);
    assert_eq!(client.recv(c.as_fd(), &mut [&mut p[..]], peek).unwrap(), 4);
    assert_eq!(&p, b"abcd");
    assert_eq!(client.readable(), Some(6), "a peek takes nothing");
    let (mut x, mut y) = ([0u8; 1], [0u8; 5]);
    assert_eq!(
        client
            .recv(c.as_fd(), &mut [&mut x[..], &mut y[..]], nb())
            .unwrap(),
        6
    );
    assert_eq!((&x, &y), (b"a", b"bcdef"));
    assert_eq!(client.readable(), Some(0));
    // A first vector that takes all there is: the second gets nothing,
    // peeked or read (a second look must not see the same bytes again).
    assert_eq!(server.send(s.as_fd(), &[b"xyz"], nb()).unwrap(), 3);
    for flags in [peek, nb()] {
        let (mut x, mut y) = ([0u8; 3], [0u8; 4]);
        assert_eq!(
            client
                .recv(c.as_fd(), &mut [&mut x[..], &mut y[..]], flags)
                .unwrap(),
            3
        );
        assert_eq!((&x, &y), (b"xyz", &[0u8; 4]));
    }
    assert_eq!(client.readable(), Some(0));
}

#[test]
fn a_peer_gone_is_end_of_file_and_epipe() {
    let (s, server, c, client) = pair();
    assert_eq!(server.send(s.as_fd(), &[b"last"], nb()).unwrap(), 4);
    drop(server);
    drop(s);
    let mut b = [0u8; 8];
    assert_eq!(
        client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap(),
        4,
        "bytes first"
    );
    assert_eq!(
        client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap(),
        0,
        "then end-of-file"
    );
    let nosig = Flags::from_bits(procwire::sys::interpose::ffi::MSG_NOSIGNAL);
    let mut last = Ok(0);
    for _ in 0..2 {
        last = client.send(c.as_fd(), &[b"x"], nosig);
    }
    let e = last.unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        procwire::sys::interpose::ffi::EPIPE,
        "{e}"
    );
}

/// A word of the segment's header, as a hostile peer would write it.
fn word64(a: &Accel, offset: usize) -> &AtomicU64 {
    let (p, len) = a.segment_for_tests();
    assert!(offset + 8 <= len);
    // SAFETY: inside the live mapping, 8-aligned (offsets of the layout).
    unsafe { &*p.add(offset).cast::<AtomicU64>() }
}

fn word32(a: &Accel, offset: usize) -> &AtomicU32 {
    let (p, len) = a.segment_for_tests();
    assert!(offset + 4 <= len);
    // SAFETY: as in `word64`, 4-aligned.
    unsafe { &*p.add(offset).cast::<AtomicU32>() }
}

use accel::layout;
const S2C_TAIL: usize = layout::dir(1) + layout::TAIL;
const C2S_HEAD: usize = layout::dir(0) + layout::HEAD;
const S2C_RLOCK: usize = layout::dir(1) + layout::RLOCK;

#[test]
fn an_impossible_index_is_an_error_on_that_connection() {
    let (s, server, c, client) = pair();
    assert_eq!(server.send(s.as_fd(), &[b"fine"], nb()).unwrap(), 4);
    word64(&server, S2C_TAIL).store(u64::MAX - 3, Ordering::SeqCst);
    let mut b = [0u8; 8];
    let e = client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap_err();
    assert_eq!(e.raw_os_error(), procwire::sys::interpose::ffi::EIO, "{e}");
    // The client writing: a head from beyond what was written, seen when
    // the room the writer knows of is too little (here, from its start).
    assert_eq!(client.send(c.as_fd(), &[b"x"], nb()).unwrap(), 1);
    word64(&client, C2S_HEAD).store(1 << 40, Ordering::SeqCst);
    let e = client
        .send(c.as_fd(), &[&vec![0u8; RING][..]], nb())
        .unwrap_err();
    assert_eq!(e.raw_os_error(), procwire::sys::interpose::ffi::EIO, "{e}");
}

#[test]
fn random_bytes_over_the_header_never_crash_or_hang() {
    let (s, server, c, client) = pair();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let started = Instant::now();
    for round in 0..2000 {
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Any 8-byte word of the two directions, but those of the
            // lock words (a held lock is the next test's).
            let at = ((x as usize >> 8) % (2 * layout::DIR_LEN / 8)) * 8;
            let within = at % layout::DIR_LEN;
            if within == layout::WLOCK & !7 || within == layout::RLOCK & !7 {
                continue;
            }
            let off = layout::dir(0) + at;
            word64(&server, off).store(x, Ordering::SeqCst);
        }
        let _ = server.send(s.as_fd(), &[&[round as u8; 100][..]], nb());
        let mut b = [0u8; 300];
        let _ = client.recv(c.as_fd(), &mut [&mut b[..]], nb());
        let _ = client.send(c.as_fd(), &[&b[..50]], nb());
        let _ = server.recv(s.as_fd(), &mut [&mut b[..]], nb());
        let _ = client.readable();
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_lock_held_by_a_live_stranger_fails_the_call_after_the_patience() {
    let (_s, _server, c, client) = pair();
    // pid 1 is alive and is not this process.
    word32(&client, S2C_RLOCK).store(1, Ordering::SeqCst);
    let started = Instant::now();
    let mut b = [0u8; 8];
    let e = client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap_err();
    assert_eq!(e.raw_os_error(), procwire::sys::interpose::ffi::EIO, "{e}");
    let took = started.elapsed();
    assert!(
        took >= accel::LOCK_PATIENCE && took < accel::LOCK_PATIENCE * 5,
        "{took:?}"
    );
}

#[test]
fn a_lock_left_by_a_dead_thread_is_taken_over() {
    let (s, server, c, client) = pair();
    let t = std::thread::spawn(procwire::sys::interpose::thread_id);
    let dead = t.join().unwrap();
    // The kernel may take a moment to reap it: wait until it is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while procwire::sys::interpose::thread_alive(dead) {
        assert!(Instant::now() < deadline, "thread {dead} still shown");
        std::thread::yield_now();
    }
    word32(&client, S2C_RLOCK).store(dead as u32, Ordering::SeqCst);
    assert_eq!(server.send(s.as_fd(), &[b"ok"], nb()).unwrap(), 2);
    let mut b = [0u8; 8];
    assert_eq!(client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap(), 2);
}

#[test]
fn a_hello_without_a_segment_or_of_another_version_is_refused() {
    use procwire::sys::fdpass::send_with_fds;
    // Magic right, no descriptor: the stream can't be handed back whole.
    let (s, c) = UnixStream::pair().unwrap();
    let mut hello = [0u8; accel::HELLO_LEN];
    hello[..8].copy_from_slice(&accel::HELLO_MAGIC);
    hello[8..12].copy_from_slice(&accel::VERSION.to_le_bytes());
    hello[12..16].copy_from_slice(&(RING as u32).to_le_bytes());
    send_with_fds(s.as_fd(), &hello, &[]).unwrap_or_else(|_| {
        use std::io::Write;
        (&s).write(&hello).unwrap()
    });
    assert!(accel::try_attach(c.as_fd(), 0, false).is_err());
    // Not a hello at all: plain for good, nothing taken.
    let (s, c) = UnixStream::pair().unwrap();
    {
        use std::io::Write;
        (&s).write_all(b"GET / HTTP/1.0\r\n").unwrap();
    }
    assert!(matches!(
        accel::try_attach(c.as_fd(), 0, false).unwrap(),
        Attach::Plain
    ));
    let mut b = [0u8; 3];
    {
        use std::io::Read;
        (&c).read_exact(&mut b).unwrap();
    }
    assert_eq!(&b, b"GET");
    // Another version, with a segment: refused before it is mapped.
    let (s, c) = UnixStream::pair().unwrap();
    hello[8..12].copy_from_slice(&(accel::VERSION + 1).to_le_bytes());
    let memfd = procwire::sys::shm::sealed_memfd("procwire-test", 1 << 16).unwrap();
    send_with_fds(s.as_fd(), &hello, &[memfd.as_fd()]).unwrap();
    assert!(accel::try_attach(c.as_fd(), 0, false).is_err());
    // Nothing yet: not yet.
    let (_s, c) = UnixStream::pair().unwrap();
    c.set_nonblocking(true).unwrap();
    assert!(matches!(
        accel::try_attach(c.as_fd(), 0, false).unwrap(),
        Attach::NotYet
    ));
}

/// Reads everything `a` gets on `s` until `EAGAIN` (non-blocking fds).
fn read_all(s: &UnixStream, a: &Accel) -> Vec<u8> {
    let mut got = Vec::new();
    let mut b = [0u8; 1000];
    loop {
        match a.recv(s.as_fd(), &mut [&mut b[..]], nb()) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) if e.is_would_block() => return got,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_downgrade_keeps_every_byte_in_order_both_ways() {
    let (s, server, c, client) = pair();
    // Bytes in the rings both ways, unread, with their doorbells.
    assert_eq!(server.send(s.as_fd(), &[b"ring-s "], nb()).unwrap(), 7);
    assert_eq!(client.send(c.as_fd(), &[b"ring-c "], nb()).unwrap(), 7);
    // The server's side goes back to the socket (as before ancillary data).
    server.downgrade_tx(s.as_fd()).unwrap();
    server.flush_tx(s.as_fd(), true).unwrap();
    assert_eq!(server.send(s.as_fd(), &[b"plain-s"], nb()).unwrap(), 7);
    // The client follows at its next call; its ring bytes come again first.
    assert_eq!(client.send(c.as_fd(), &[b"plain-c"], nb()).unwrap(), 7);
    assert_eq!(read_all(&c, &client), b"ring-s plain-s");
    assert_eq!(read_all(&s, &server), b"ring-c plain-c");
    assert!(server.is_plain() && client.is_plain());
    // From here the socket alone carries them.
    use std::io::{Read, Write};
    (&s).write_all(b"raw").unwrap();
    let mut b = [0u8; 3];
    (&c).read_exact(&mut b).unwrap();
    assert_eq!(&b, b"raw");
}

/// The server leaves while the client answers from another thread, as a
/// peer process would at its next call: it wakes on the byte the leaving
/// side sends, and reads what comes. Returns what it read, and the client.
fn leave_while_the_client_answers(
    s: &UnixStream,
    server: &Accel,
    c: &UnixStream,
    client: Accel,
) -> (Vec<u8>, Accel) {
    let (c2, done) = (c.try_clone().unwrap(), std::sync::mpsc::channel::<()>());
    let t = std::thread::spawn(move || {
        assert!(wait_readable(c2.as_fd(), Some(Duration::from_secs(10))).unwrap());
        let got = read_all(&c2, &client);
        let _ = done.1.recv_timeout(Duration::from_secs(10));
        (got, client)
    });
    server.leave(s.as_fd(), Duration::from_secs(10)).unwrap();
    done.0.send(()).unwrap();
    t.join().unwrap()
}

#[test]
fn a_side_that_leaves_finds_the_socket_whole() {
    let (s, server, c, client) = pair();
    let big: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    assert_eq!(client.send(c.as_fd(), &[&big[..]], nb()).unwrap(), 3000);
    assert_eq!(
        server.send(s.as_fd(), &[b"to the client"], nb()).unwrap(),
        13
    );
    // The client answers from another thread, as a peer process would at
    // its next call: it wakes on the byte the leaving side sends.
    let (got, client) = leave_while_the_client_answers(&s, &server, &c, client);
    assert_eq!(got, b"to the client");
    assert!(
        client.is_plain(),
        "the client took its bytes back and sent them"
    );
    // The server's socket now holds exactly the client's 3000 bytes.
    use std::io::Read;
    s.set_nonblocking(false).unwrap();
    let mut b = vec![0u8; 3000];
    (&s).read_exact(&mut b).unwrap();
    assert_eq!(b, big);
    s.set_nonblocking(true).unwrap();
    let mut one = [0u8; 1];
    assert!((&s).read(&mut one).is_err(), "nothing more");
}

#[test]
fn a_leave_the_peer_never_answers_fails_after_the_patience() {
    let (s, server, _c, _client) = pair();
    let started = Instant::now();
    let e = server
        .leave(s.as_fd(), Duration::from_millis(200))
        .unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        procwire::sys::interpose::ffi::ETIMEDOUT,
        "{e}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn a_server_that_leaves_before_the_client_attaches_refuses_it() {
    let (s, c) = UnixStream::pair().unwrap();
    s.set_nonblocking(true).unwrap();
    c.set_nonblocking(true).unwrap();
    use std::io::{Read, Write};
    (&c).write_all(b"early").unwrap();
    let server = Accel::offer(s.as_fd(), RING).unwrap();
    assert_eq!(server.send(s.as_fd(), &[b"greeting"], nb()).unwrap(), 8);
    server.leave(s.as_fd(), Duration::from_secs(5)).unwrap();
    // The server's socket holds the client's plain bytes only.
    let mut b = [0u8; 5];
    (&s).read_exact(&mut b).unwrap();
    assert_eq!(&b, b"early");
    // The client attaches late, and finds a plain connection.
    let client = match accel::try_attach(c.as_fd(), 5, false).unwrap() {
        Attach::Attached(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!(read_all(&c, &client), b"greeting");
    assert!(client.is_plain());
    assert_eq!(client.send(c.as_fd(), &[b"late"], nb()).unwrap(), 4);
    let mut b = [0u8; 4];
    (&s).read_exact(&mut b).unwrap();
    assert_eq!(&b, b"late");
}

#[test]
fn a_server_that_leaves_gives_back_the_pre_attach_bytes_it_had_not_read() {
    let (s, c) = UnixStream::pair().unwrap();
    s.set_nonblocking(true).unwrap();
    c.set_nonblocking(true).unwrap();
    use std::io::{Read, Write};
    // The client wrote before it attached, then through the ring.
    (&c).write_all(b"pre-attach ").unwrap();
    let server = Accel::offer(s.as_fd(), RING).unwrap();
    let client = match accel::try_attach(c.as_fd(), 11, false).unwrap() {
        Attach::Attached(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!(client.send(c.as_fd(), &[b"ring bytes"], nb()).unwrap(), 10);
    let mut b = [0u8; 4];
    assert_eq!(server.recv(s.as_fd(), &mut [&mut b[..]], nb()).unwrap(), 4);
    assert_eq!(&b, b"pre-");
    let (_, client) = leave_while_the_client_answers(&s, &server, &c, client);
    assert!(client.is_plain());
    // The socket holds the rest of the pre-attach bytes, then the ring's,
    // and nothing else.
    s.set_nonblocking(false).unwrap();
    let mut rest = [0u8; 17];
    (&s).read_exact(&mut rest).unwrap();
    assert_eq!(&rest, b"attach ring bytes");
    s.set_nonblocking(true).unwrap();
    let mut one = [0u8; 1];
    assert!((&s).read(&mut one).is_err(), "nothing more");
}

/// A client that wrote `pre` to the socket before attaching to a server
/// with rings of `ring` bytes.
fn pair_with_pre_attach(ring: usize, pre: &[u8]) -> (UnixStream, Accel, UnixStream, Accel) {
    use std::io::Write;
    let (s, c) = UnixStream::pair().unwrap();
    s.set_nonblocking(true).unwrap();
    c.set_nonblocking(true).unwrap();
    (&c).write_all(pre).unwrap();
    let server = Accel::offer(s.as_fd(), ring).unwrap();
    let client = match accel::try_attach(c.as_fd(), pre.len() as u64, false).unwrap() {
        Attach::Attached(a) => a,
        other => panic!("{other:?}"),
    };
    (s, server, c, client)
}

#[test]
fn pre_attach_bytes_that_do_not_fit_beside_the_ring_fail_the_leave() {
    let pre = vec![1u8; 3000];
    let (s, server, c, client) = pair_with_pre_attach(RING, &pre);
    assert_eq!(
        client.send(c.as_fd(), &[&[2u8; 2000][..]], nb()).unwrap(),
        2000
    );
    let e = server.leave(s.as_fd(), Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.raw_os_error(), procwire::sys::interpose::ffi::EIO, "{e}");
}

#[test]
fn many_pre_attach_bytes_go_back_whole_and_in_order() {
    let pre: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
    let (s, server, c, client) = pair_with_pre_attach(16384, &pre);
    let ring: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(7)).collect();
    assert_eq!(client.send(c.as_fd(), &[&ring[..]], nb()).unwrap(), 100);
    let mut b = [0u8; 10];
    assert_eq!(server.recv(s.as_fd(), &mut [&mut b[..]], nb()).unwrap(), 10);
    assert_eq!(&b[..], &pre[..10]);
    let (_, client) = leave_while_the_client_answers(&s, &server, &c, client);
    // Sent in chunks as the socket takes them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client.is_plain() {
        assert!(Instant::now() < deadline, "the resend never finished");
        let _ = client.send(c.as_fd(), &[], nb());
        let _ = read_all(&c, &client);
        std::thread::yield_now();
    }
    use std::io::Read;
    s.set_nonblocking(false).unwrap();
    let mut rest = vec![0u8; 5990 + 100];
    (&s).read_exact(&mut rest).unwrap();
    assert_eq!(&rest[..5990], &pre[10..]);
    assert_eq!(&rest[5990..], &ring[..]);
}

#[test]
fn a_server_that_downgrades_first_gives_back_the_pre_attach_bytes_then_leaves_whole() {
    // The order of the splice scenario: the server downgrades the way it
    // writes (sendfile), the client notices at its next calls while the
    // server has not read its pre-attach bytes, and only then does the
    // server leave (splice from the socket).
    let (s, server, c, client) = pair_with_pre_attach(RING, b"pre-attach ");
    assert_eq!(client.send(c.as_fd(), &[b"ring "], nb()).unwrap(), 5);
    server.downgrade_tx(s.as_fd()).unwrap();
    server.flush_tx(s.as_fd(), true).unwrap();
    // The server put the pre-attach bytes it had not read into the ring
    // first, so the client, switching at its next call, sends them again
    // ahead of its ring's bytes.
    assert_eq!(client.send(c.as_fd(), &[b"more"], nb()).unwrap(), 4);
    assert!(read_all(&c, &client).is_empty());
    assert!(client.is_plain());
    server.leave(s.as_fd(), Duration::from_secs(5)).unwrap();
    use std::io::Read;
    s.set_nonblocking(false).unwrap();
    let mut all = [0u8; 20];
    (&s).read_exact(&mut all).unwrap();
    assert_eq!(&all, b"pre-attach ring more");
    s.set_nonblocking(true).unwrap();
    let mut one = [0u8; 1];
    assert!((&s).read(&mut one).is_err(), "nothing more");
}

#[test]
fn a_server_leave_after_the_client_resent_on_its_own_is_an_error_not_a_reorder() {
    let (s, server, c, client) = pair_with_pre_attach(RING, b"pre-attach ");
    assert_eq!(client.send(c.as_fd(), &[b"ring "], nb()).unwrap(), 5);
    // The client goes back to the socket first (ancillary data, say): its
    // ring bytes are resent behind its pre-attach bytes and non-data bytes.
    client.downgrade_tx(c.as_fd()).unwrap();
    client.flush_tx(c.as_fd(), true).unwrap();
    let e = server.leave(s.as_fd(), Duration::from_secs(5)).unwrap_err();
    assert_eq!(e.raw_os_error(), procwire::sys::interpose::ffi::EIO, "{e}");
}

/// Bytes of memory the segment behind `a` holds (its memfd's blocks, found
/// through the mapping: the fd itself was closed after mapping).
fn segment_bytes(a: &Accel) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let (p, len) = a.segment_for_tests();
    let path = format!(
        "/proc/self/map_files/{:x}-{:x}",
        p as usize,
        p as usize + len
    );
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn a_first_lap_populates_pages_before_the_writes_reach_them() {
    let page = procwire::sys::shm::page_size();
    let (s, server, _c, _client) = pair_with(1 << 20);
    let before = segment_bytes(&server);
    assert!(before <= 4096, "only the header is written: {before}");
    let msg = [7u8; 1000];
    let mut sent: usize = 0;
    while sent < 300 * 1000 {
        assert_eq!(server.send(s.as_fd(), &[&msg[..]], nb()).unwrap(), 1000);
        sent += 1000;
    }
    let touched = sent.div_ceil(page) as u64 * page as u64;
    let backed = segment_bytes(&server) - before;
    // Each step populates as much again as so far (a page, two, four...),
    // at most 64 KiB: 128 KiB, 192, 256, then 320 KiB with the write that
    // passed 256 KiB, before any byte reached the pages past 300 KB.
    assert!(
        backed > touched,
        "{backed} bytes backed for {touched} written"
    );
    assert_eq!(backed, 320 << 10, "{touched} written");
}

/// Just past where the writer of small messages jumps back (4 KiB): 5
/// messages of 1000 bytes from the server, each read by the client, on
/// rings of 1 MiB. The server's next small message jumps to the ring's
/// start.
fn past_the_window() -> (UnixStream, Accel, UnixStream, Accel) {
    let (s, server, c, client) = pair_with(1 << 20);
    let mut b = [0u8; 1000];
    for i in 0..5u8 {
        assert_eq!(
            server.send(s.as_fd(), &[&[i; 1000][..]], nb()).unwrap(),
            1000
        );
        assert_eq!(
            client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap(),
            1000
        );
        assert_eq!(b, [i; 1000]);
    }
    (s, server, c, client)
}

#[test]
fn small_messages_keep_reusing_the_start_of_the_ring() {
    let (s, server, c, client) = pair_with(1 << 20);
    let mut b = [0u8; 2000];
    for round in 0..300u32 {
        let msg: Vec<u8> = (0..1000u32).map(|i| (i * 7 + round) as u8).collect();
        assert_eq!(server.send(s.as_fd(), &[&msg[..]], nb()).unwrap(), 1000);
        // Whether or not the writer jumped, the reader is told of 1000.
        assert_eq!(client.readable(), Some(1000), "round {round}");
        assert_eq!(
            client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap(),
            1000
        );
        assert_eq!(b[..1000], msg[..], "round {round}");
    }
    // 300 KB went through, yet the ring's pages past its first 64 KiB
    // were never needed (the header's page is the rest).
    let backed = segment_bytes(&server);
    assert!(backed <= (64 << 10) + 4096, "{backed} bytes backed");
}

#[test]
fn a_writer_with_unread_bytes_does_not_jump() {
    let (s, server, c, client) = past_the_window();
    // Unread bytes past the window: the next message goes after them.
    assert_eq!(
        server.send(s.as_fd(), &[&[1u8; 1000][..]], nb()).unwrap(),
        1000
    );
    assert_eq!(
        server.send(s.as_fd(), &[&[2u8; 1000][..]], nb()).unwrap(),
        1000
    );
    assert_eq!(client.readable(), Some(2000));
    let mut b = [0u8; 2000];
    assert_eq!(
        client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap(),
        2000
    );
    assert_eq!(b[..1000], [1u8; 1000]);
    assert_eq!(b[1000..], [2u8; 1000]);
}

#[test]
fn a_jump_is_followed_by_peek_and_by_a_downgrade() {
    let (s, server, c, client) = past_the_window();
    // The writer jumps back to the start for these.
    assert_eq!(server.send(s.as_fd(), &[b"after "], nb()).unwrap(), 6);
    assert_eq!(server.send(s.as_fd(), &[b"the jump "], nb()).unwrap(), 9);
    let mut b = [0u8; 15];
    let peek = Flags::from_bits(procwire::sys::interpose::ffi::MSG_PEEK);
    assert_eq!(client.recv(c.as_fd(), &mut [&mut b[..]], peek).unwrap(), 15);
    assert_eq!(&b, b"after the jump ");
    // A jump not yet followed by the reader: the bytes taken back are the
    // message's, not the positions skipped.
    let (s, server, c, client) = past_the_window();
    assert_eq!(
        server.send(s.as_fd(), &[b"after the jump "], nb()).unwrap(),
        15
    );
    server.downgrade_tx(s.as_fd()).unwrap();
    server.flush_tx(s.as_fd(), true).unwrap();
    assert_eq!(server.send(s.as_fd(), &[b"plain"], nb()).unwrap(), 5);
    assert_eq!(read_all(&c, &client), b"after the jump plain");
}

#[test]
fn a_jump_the_reader_has_not_followed_leaves_the_writer_the_whole_ring() {
    let (s, server, c, client) = past_the_window();
    // The first message jumps to the ring's start; the reader reads
    // nothing meanwhile, yet the writer has the whole ring: the positions
    // it skipped hold nothing the reader will read. (Counting them as
    // taken left it 33,000 bytes, and two programs that each write before
    // they read, as socat relaying to `cat` does, both blocked.)
    let mut sent = Vec::new();
    for i in 0u32.. {
        assert!(
            ring_writable_or_full(&server, sent.len()),
            "after {}",
            sent.len()
        );
        let msg: Vec<u8> = (0..1000u32).map(|k| (k * 13 + i) as u8).collect();
        match server.send(s.as_fd(), &[&msg[..]], nb()) {
            Ok(n) => {
                sent.extend_from_slice(&msg[..n]);
                if n < msg.len() {
                    break;
                }
            }
            Err(e) if e.is_would_block() => break,
            Err(e) => panic!("{e}"),
        }
        assert!(sent.len() <= 1 << 20, "more than a ring");
    }
    assert_eq!(sent.len(), 1 << 20);
    assert_eq!(server.ring_writable(), Some(false));
    assert_eq!(client.readable(), Some(1 << 20));
    assert_eq!(read_all(&c, &client), sent);
    assert_eq!(server.ring_writable(), Some(true));
}

/// Whether the ring says writable while `sent` bytes (since the jump) are
/// fewer than a ring.
fn ring_writable_or_full(a: &Accel, sent: usize) -> bool {
    a.ring_writable() == Some(sent < 1 << 20)
}

/// The writer of small messages jumps back once it is at 4 KiB or past
/// it, and not before: `len` bytes in messages of at most 1024, each read
/// at once, then one byte; where the jump record says that byte went.
fn jump_after(len: usize) -> (u64, u64) {
    let (s, server, c, client) = pair_with(1 << 20);
    let mut left = len;
    let mut b = [0u8; 1024];
    while left > 0 {
        let n = left.min(1024);
        assert_eq!(server.send(s.as_fd(), &[&b[..n]], nb()).unwrap(), n);
        assert_eq!(client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap(), n);
        left -= n;
    }
    assert_eq!(server.send(s.as_fd(), &[b"x"], nb()).unwrap(), 1);
    let from = word64(&server, layout::dir(1) + layout::SKIP_FROM).load(Ordering::SeqCst);
    let to = word64(&server, layout::dir(1) + layout::SKIP_TO).load(Ordering::SeqCst);
    (from, to)
}

#[test]
fn the_jump_back_begins_at_the_rings_first_page() {
    assert_eq!(jump_after(4095), (0, 0), "not yet: no jump recorded");
    assert_eq!(
        jump_after(4096),
        (4096, 1 << 20),
        "at 4 KiB: to the next lap"
    );
}

#[test]
fn a_jump_to_anywhere_but_a_ring_start_is_an_error() {
    let (s, server, c, client) = past_the_window();
    assert_eq!(server.send(s.as_fd(), &[b"x"], nb()).unwrap(), 1);
    // The jump the server recorded, moved off the ring's start.
    let to = word64(&server, layout::dir(1) + layout::SKIP_TO);
    let jumped = to.load(Ordering::SeqCst);
    assert_eq!(jumped, 1 << 20, "the jump is to the second lap");
    assert_eq!(
        word64(&server, layout::dir(1) + layout::SKIP_FROM).load(Ordering::SeqCst),
        5_000
    );
    to.store(jumped - 8, Ordering::SeqCst);
    let mut b = [0u8; 8];
    let e = client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap_err();
    assert_eq!(e.raw_os_error(), procwire::sys::interpose::ffi::EIO, "{e}");
    // Or past the bytes written after it.
    let (s, server, c, client) = past_the_window();
    assert_eq!(server.send(s.as_fd(), &[b"x"], nb()).unwrap(), 1);
    word64(&server, layout::dir(1) + layout::SKIP_TO).store(2 << 20, Ordering::SeqCst);
    let e = client.recv(c.as_fd(), &mut [&mut b[..]], nb()).unwrap_err();
    assert_eq!(e.raw_os_error(), procwire::sys::interpose::ffi::EIO, "{e}");
    assert_eq!(
        client.readable(),
        Some(0),
        "nothing to read, as far as it says"
    );
}

/// A writer of small messages jumps back to the ring's start whenever it
/// finds the ring empty past the window, which a reader that keeps up
/// makes it do all the time; a read that looks at the ring meanwhile (on
/// its first look, or after a first vector that emptied it) must follow
/// the jump, never take the skipped positions for bytes. A reader that
/// polls the ring and reads into two vectors, a writer on another thread,
/// both on one CPU so that the reader is preempted at random points of its
/// call and the writer runs meanwhile: every byte arrives in order. (Before
/// the reader kept to what it had looked at, this failed with `EIO` or
/// read the skipped positions within a few seconds.)
#[test]
fn a_reader_racing_a_writer_that_jumps_reads_every_byte_in_order() {
    let (s, server, c, client) = pair_with(1 << 16);
    procwire::sys::cpu::pin_to(&[procwire::sys::cpu::current_cpu()]).unwrap();
    // Bounded in bytes and in time: the writer stops at whichever comes
    // first and says how much it sent.
    const TOTAL: usize = 64 << 20;
    let writing = Duration::from_secs(10);
    let byte = |i: usize| (i % 251) as u8;
    let deadline = Instant::now() + Duration::from_secs(60);
    let reader_done = std::sync::atomic::AtomicBool::new(false);
    let sent_all = AtomicU64::new(u64::MAX);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let stop = Instant::now() + writing;
            let mut sent = 0;
            let mut k = 0usize;
            let mut msg = Vec::new();
            while sent < TOTAL && Instant::now() < stop {
                let len = (1 + k * 7919 % 3000).min(TOTAL - sent);
                k += 1;
                msg.clear();
                msg.extend((sent..sent + len).map(byte));
                let mut off = 0;
                while off < len {
                    if reader_done.load(Ordering::Relaxed) {
                        // The reader failed (its panic says why).
                        return;
                    }
                    assert!(Instant::now() < deadline, "the writer timed out");
                    match server.send(s.as_fd(), &[&msg[off..]], nb()) {
                        Ok(n) => off += n,
                        Err(e) if e.is_would_block() => {
                            wait_writable(s.as_fd(), Some(Duration::from_millis(10))).unwrap();
                        }
                        Err(e) => panic!("send: {e}"),
                    }
                }
                sent += len;
            }
            sent_all.store(sent as u64, Ordering::Release);
        });
        // Tells the writer to stop however the reader ends.
        struct Done<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _done = Done(&reader_done);
        let mut got = 0;
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
        let mut k = 0usize;
        while got as u64 != sent_all.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the reader timed out at {got}");
            let first = 1 + k * 104_729 % 4096;
            k += 1;
            let n = match client.recv(c.as_fd(), &mut [&mut a[..first], &mut b[..]], nb()) {
                Ok(0) => panic!("end of file at {got}"),
                Ok(n) => n,
                Err(e) if e.is_would_block() => continue,
                Err(e) => panic!("recv at {got}: {e}"),
            };
            for (i, &x) in a[..first].iter().chain(b.iter()).take(n).enumerate() {
                assert_eq!(x, byte(got + i), "byte {} of the stream", got + i);
            }
            got += n;
        }
        assert!(got > 1 << 20, "only {got} bytes in the time");
    });
}
