//! The event loop over real sockets: modes, timers, the waker, stale tokens,
//! self-deregistration, errors, and the server building blocks.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use procwire::net::event::{EventLoop, Interest, Mode, OnError};
use procwire::net::server::{serve, Output, Protocol, ServerOptions};
use procwire::sys::socket::{socketpair, Domain, Socket, Type};

const LONG: Duration = Duration::from_secs(10);

fn pair() -> (Socket, Socket) {
    let (a, b) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// Runs turns until `done()` or 10 s pass.
fn run_until(lp: &EventLoop, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !done() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        lp.run_once(Some(Duration::from_millis(50))).unwrap();
    }
}

fn counter() -> Rc<Cell<usize>> {
    Rc::new(Cell::new(0))
}

#[test]
fn level_edge_and_oneshot_delivery() {
    for (mode, expect_second) in [
        (Mode::Level, true),
        (Mode::Edge, false),
        (Mode::Oneshot, false),
    ] {
        let lp = EventLoop::new().unwrap();
        let (a, b) = pair();
        let calls = counter();
        let c = calls.clone();
        let _reg = lp
            .register_with(b, Interest::READABLE, mode, move |_, _, r| {
                assert!(r.is_readable());
                c.set(c.get() + 1);
                Ok(())
            })
            .unwrap();
        a.send(b"x").unwrap();
        run_until(&lp, || calls.get() == 1);
        // The byte is never read: only level reports it again.
        lp.run_once(Some(Duration::from_millis(50))).unwrap();
        assert_eq!(calls.get() > 1, expect_second, "{mode:?}");
    }
}

#[test]
fn deferred_calls_come_once_after_every_event_of_the_turn() {
    let lp = EventLoop::new().unwrap();
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let (a1, b1) = pair();
    let (a2, b2) = pair();
    let (l1, l2) = (log.clone(), log.clone());
    let again = Rc::new(Cell::new(true));
    let again2 = again.clone();
    let _r1 = lp
        .register(b1, Interest::READABLE, move |cx, s: &Socket, r| {
            if r.is_deferred() {
                assert!(!r.is_readable() && !r.is_writable());
                l1.borrow_mut().push("first deferred".into());
                if again2.replace(false) {
                    // Asked from the deferred call: the end of the next turn.
                    cx.defer();
                }
                return Ok(());
            }
            let mut b = [0u8; 8];
            while s.recv(&mut b).is_ok() {}
            l1.borrow_mut().push("first".into());
            cx.defer();
            cx.defer();
            Ok(())
        })
        .unwrap();
    let _r2 = lp
        .register(b2, Interest::READABLE, move |_, s: &Socket, _| {
            let mut b = [0u8; 8];
            while s.recv(&mut b).is_ok() {}
            l2.borrow_mut().push("second".into());
            Ok(())
        })
        .unwrap();
    a1.send(b"x").unwrap();
    a2.send(b"y").unwrap();
    run_until(&lp, || log.borrow().len() >= 3);
    {
        let log = log.borrow();
        assert_eq!(log.len(), 3, "{log:?}");
        assert_eq!(log[2], "first deferred", "{log:?}");
        assert!(log[..2].contains(&"first".to_string()), "{log:?}");
        assert!(log[..2].contains(&"second".to_string()), "{log:?}");
    }
    // The deferral asked for inside the deferred call comes next turn, even
    // with nothing ready; and then no more.
    lp.run_once(Some(Duration::from_millis(0))).unwrap();
    assert_eq!(log.borrow().len(), 4);
    assert_eq!(log.borrow()[3], "first deferred");
    lp.run_once(Some(Duration::from_millis(20))).unwrap();
    assert_eq!(log.borrow().len(), 4, "{:?}", log.borrow());
}

#[test]
fn oneshot_rearms_with_reregister() {
    let lp = EventLoop::new().unwrap();
    let (a, b) = pair();
    let calls = counter();
    let c = calls.clone();
    let reg = lp
        .register_with(
            b,
            Interest::READABLE,
            Mode::Oneshot,
            move |_, s: &Socket, _| {
                let _ = s.recv(&mut [0u8; 16]);
                c.set(c.get() + 1);
                Ok(())
            },
        )
        .unwrap();
    a.send(b"1").unwrap();
    run_until(&lp, || calls.get() == 1);
    a.send(b"2").unwrap();
    lp.run_once(Some(Duration::from_millis(50))).unwrap();
    assert_eq!(calls.get(), 1, "disarmed after one report");
    reg.reregister_with(Interest::READABLE, Mode::Oneshot)
        .unwrap();
    run_until(&lp, || calls.get() == 2);
}

#[test]
fn timers_fire_in_order_and_not_early() {
    let lp = EventLoop::new().unwrap();
    let log: Rc<RefCell<Vec<(u32, Duration)>>> = Rc::default();
    let start = Instant::now();
    for (id, ms) in [(3u32, 30u64), (1, 10), (2, 20), (4, 30)] {
        let log = log.clone();
        lp.after(Duration::from_millis(ms), move |_| {
            log.borrow_mut().push((id, start.elapsed()))
        });
    }
    run_until(&lp, || log.borrow().len() == 4);
    let got: Vec<u32> = log.borrow().iter().map(|e| e.0).collect();
    assert_eq!(got, [1, 2, 3, 4], "deadline order, ties in creation order");
    for &(id, at) in log.borrow().iter() {
        let due = Duration::from_millis([0, 10, 20, 30, 30][id as usize]);
        assert!(at >= due, "timer {id} fired at {at:?}, before {due:?}");
    }
}

#[test]
fn a_cancelled_timer_never_fires_and_every_repeats() {
    let lp = EventLoop::new().unwrap();
    let fired = counter();
    let f = fired.clone();
    let t = lp.after(Duration::from_millis(20), move |_| f.set(f.get() + 100));
    assert!(lp.cancel(t));
    assert!(!lp.cancel(t), "cancel twice");
    let ticks = counter();
    let k = ticks.clone();
    let every = lp.every(Duration::from_millis(5), move |_| k.set(k.get() + 1));
    // A timer cancelled from another timer's callback in the same turn.
    let victim = lp.after(Duration::from_millis(30), {
        let f = fired.clone();
        move |_| f.set(f.get() + 1000)
    });
    lp.after(Duration::from_millis(29), move |cx| {
        cx.cancel(victim);
    });
    run_until(&lp, || ticks.get() >= 5);
    lp.cancel(every);
    let at = ticks.get();
    let end = Instant::now() + Duration::from_millis(60);
    while Instant::now() < end {
        lp.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(ticks.get(), at, "a cancelled periodic timer stops");
    assert_eq!(fired.get(), 0, "no cancelled timer fired");
}

#[test]
fn waker_wakes_a_loop_blocked_without_timeout() {
    let lp = EventLoop::new().unwrap();
    let woke = counter();
    let w = woke.clone();
    let waker = lp
        .waker(move |cx| {
            w.set(w.get() + 1);
            cx.stop();
        })
        .unwrap();
    let remote = waker.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..10 {
            remote.wake().unwrap();
        }
    });
    let start = Instant::now();
    lp.run().unwrap();
    t.join().unwrap();
    assert!(woke.get() >= 1 && start.elapsed() < LONG);
    // The waker works again afterwards.
    waker.wake().unwrap();
    lp.run().unwrap();
}

/// The `write` system calls this thread has made (Linux), from
/// `/proc/thread-self/io`.
#[cfg(target_os = "linux")]
fn writes_by_this_thread() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("syscw: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a syscw line")
}

#[test]
fn wakes_coalesce_into_one_call_and_one_write() {
    let lp = EventLoop::new().unwrap();
    let woke = counter();
    let w = woke.clone();
    let again = Rc::new(RefCell::new(None::<procwire::net::event::Waker>));
    let ag = again.clone();
    let waker = lp
        .waker(move |_| {
            w.set(w.get() + 1);
            // A wake that comes while the callback runs is not lost.
            if let Some(wk) = ag.borrow_mut().take() {
                wk.wake().unwrap();
            }
        })
        .unwrap();
    #[cfg(target_os = "linux")]
    let before = writes_by_this_thread();
    for _ in 0..1000 {
        waker.wake().unwrap();
    }
    #[cfg(target_os = "linux")]
    {
        let writes = writes_by_this_thread() - before;
        assert_eq!(writes, 1, "1000 pending wakes cost one write(2)");
    }
    lp.run_once(Some(LONG)).unwrap();
    assert_eq!(woke.get(), 1, "1000 wakes before a turn make one call");
    for _ in 0..3 {
        lp.run_once(Some(Duration::ZERO)).unwrap();
    }
    assert_eq!(woke.get(), 1, "and no more afterwards");
    *again.borrow_mut() = Some(waker.clone());
    waker.wake().unwrap();
    lp.run_once(Some(LONG)).unwrap();
    assert_eq!(woke.get(), 2);
    lp.run_once(Some(LONG)).unwrap();
    assert_eq!(
        woke.get(),
        3,
        "the wake made inside the callback came through"
    );
}

#[test]
fn a_stale_token_is_not_delivered_after_fd_reuse() {
    // Two sources are ready in the same wait. The first handler to run
    // deregisters the other one (closing its fd) and registers a new source
    // into the slot it freed, most likely on the same fd number; the old
    // source's event is still in the batch the loop is walking, and must not
    // reach the new handler.
    let lp = EventLoop::new().unwrap();
    let (a1, b1) = pair();
    let (a2, b2) = pair();
    let victim_calls = counter();
    let vc = victim_calls.clone();
    let victim = Rc::new(RefCell::new(Some(
        lp.register_with(b2, Interest::READABLE, Mode::Level, move |_, _, _| {
            vc.set(vc.get() + 1);
            Ok(())
        })
        .unwrap(),
    )));
    let new_calls = counter();
    let new_key = Rc::new(Cell::new(None));
    let first_calls = counter();
    let (v, nc, nk, fc) = (
        victim.clone(),
        new_calls.clone(),
        new_key.clone(),
        first_calls.clone(),
    );
    let keep = Rc::new(RefCell::new(Vec::new()));
    let kept = keep.clone();
    let _first = lp
        .register_with(
            b1,
            Interest::READABLE,
            Mode::Level,
            move |cx, s: &Socket, _| {
                let _ = s.recv(&mut [0u8; 8]);
                fc.set(fc.get() + 1);
                if let Some(old) = v.borrow_mut().take() {
                    let old_key = old.key();
                    old.deregister().unwrap();
                    let (peer, fresh) = pair();
                    let nc = nc.clone();
                    let reg = cx
                        .register_with(fresh, Interest::READABLE, Mode::Level, move |_, _, _| {
                            nc.set(nc.get() + 1);
                            Ok(())
                        })
                        .unwrap();
                    nk.set(Some((old_key, reg.key())));
                    kept.borrow_mut().push((peer, reg));
                }
                Ok(())
            },
        )
        .unwrap();
    // a1 first, so that b1's handler comes first in the batch.
    a1.send(b"x").unwrap();
    a2.send(b"y").unwrap();
    lp.run_once(Some(LONG)).unwrap();
    assert_eq!(first_calls.get(), 1);
    let (old_key, fresh_key) = new_key.get().expect("the first handler ran");
    assert_ne!(old_key, fresh_key, "the slot's generation moved on");
    assert_eq!(
        format!("{old_key:?}").split(',').next(),
        format!("{fresh_key:?}").split(',').next(),
        "the new source took the freed slot (same index)"
    );
    assert_eq!(victim_calls.get(), 0, "the deregistered handler never ran");
    assert_eq!(
        new_calls.get(),
        0,
        "the new handler got nothing meant for the old source"
    );
    // The new source works once it has data of its own.
    keep.borrow()[0].0.send(b"z").unwrap();
    run_until(&lp, || new_calls.get() >= 1);
    drop(a2);
}

#[test]
fn a_handler_deregisters_itself_and_registers_another() {
    let lp = EventLoop::new().unwrap();
    let (a, b) = pair();
    let (c, d) = pair();
    let second = counter();
    let s2 = second.clone();
    let d = RefCell::new(Some(d));
    let _reg = lp
        .register(b, Interest::READABLE, move |cx, _, _| {
            cx.deregister_current();
            if let Some(d) = d.borrow_mut().take() {
                let s2 = s2.clone();
                cx.register(d, Interest::READABLE, move |cx, _, _| {
                    s2.set(s2.get() + 1);
                    cx.stop();
                    Ok(())
                })?
                .detach();
            }
            Ok(())
        })
        .unwrap();
    a.send(b"x").unwrap();
    run_until(&lp, || lp.len() == 1);
    c.send(b"y").unwrap();
    lp.run().unwrap();
    assert_eq!(second.get(), 1);
    // The first registration's socket was dropped: its peer sees EOF.
    let mut buf = [0u8; 1];
    a.set_nonblocking(false).unwrap();
    match a.recv(&mut buf) {
        // Closed with the byte unread: Linux reports a reset.
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn handler_errors_reach_run_or_the_hook() {
    let lp = EventLoop::new().unwrap();
    let (a, b) = pair();
    let _reg = lp
        .register(b, Interest::READABLE, |_, _, _| {
            Err(std::io::Error::other("boom"))
        })
        .unwrap();
    a.send(b"x").unwrap();
    let e = lp.run().unwrap_err();
    assert_eq!(e.to_string(), "boom");
    assert_eq!(lp.len(), 0, "the failing registration was removed");

    let lp = EventLoop::new().unwrap();
    let (a, b) = pair();
    let seen = counter();
    let s = seen.clone();
    lp.set_error_hook(move |_, _| {
        s.set(s.get() + 1);
        OnError::Continue
    });
    let _reg = lp
        .register_with(b, Interest::READABLE, Mode::Level, |_, _, _| {
            Err(std::io::Error::other("again"))
        })
        .unwrap();
    a.send(b"x").unwrap();
    run_until(&lp, || seen.get() >= 3);
    assert_eq!(lp.len(), 1, "Continue keeps it");
}

#[test]
fn peer_reset_and_closed_fds_do_not_panic_the_loop() {
    let lp = EventLoop::new().unwrap();
    let (a, b) = pair();
    let closed = counter();
    let c = closed.clone();
    let _reg = lp
        .register(
            b,
            Interest::READABLE | Interest::WRITABLE,
            move |cx, s: &Socket, r| {
                if r.is_read_closed() {
                    let _ = s.recv(&mut [0u8; 8]);
                    c.set(1);
                    cx.deregister_current();
                }
                Ok(())
            },
        )
        .unwrap();
    drop(a);
    run_until(&lp, || closed.get() == 1);
}

/// An echo protocol that records the most it ever buffered.
struct Echo {
    peak: Rc<Cell<usize>>,
}

impl Protocol for Echo {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> std::io::Result<usize> {
        out.write(input)?;
        self.peak.set(self.peak.get().max(out.queued()));
        Ok(input.len())
    }
}

fn tcp_listener() -> (Socket, std::net::SocketAddr) {
    let l = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    l.bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap();
    l.listen(128).unwrap();
    let addr = l.local_addr().unwrap().as_inet().unwrap();
    (l, addr)
}

/// An echo server on a fresh loop: the loop, its registration (keep it),
/// its address, and the most output any connection had queued.
fn echo_server(
    opts: ServerOptions,
) -> (
    EventLoop,
    procwire::net::event::Registration,
    std::net::SocketAddr,
    Rc<Cell<usize>>,
) {
    let lp = EventLoop::new().unwrap();
    let (l, addr) = tcp_listener();
    let peak = Rc::new(Cell::new(0));
    let p = peak.clone();
    let srv = serve(&lp, l, opts, move |_| Echo { peak: p.clone() }).unwrap();
    (lp, srv, addr, peak)
}

#[test]
fn a_client_that_never_reads_stays_bounded_and_others_are_served() {
    let (lp, _srv, addr, peak) = echo_server(ServerOptions::default().max_output(64 * 1024));

    // The hog writes up to 64 MiB and never reads. Its own buffers are
    // small; what the kernel buffers on the server side is bounded by the
    // socket buffer limits, far under 64 MiB.
    let hog = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    hog.set_recv_buffer_size(64 * 1024).unwrap();
    hog.set_send_buffer_size(64 * 1024).unwrap();
    hog.connect(addr).unwrap();
    hog.set_nonblocking(true).unwrap();
    let chunk = vec![b'h'; 64 * 1024];
    let mut sent = 0usize;
    let deadline = Instant::now() + LONG;
    let mut stalled_turns = 0;
    while sent < 64 << 20 && stalled_turns < 50 && Instant::now() < deadline {
        match (&hog).write(&chunk) {
            Ok(n) => {
                sent += n;
                stalled_turns = 0;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stalled_turns += 1,
            Err(e) => panic!("{e}"),
        }
        lp.run_once(Some(Duration::from_millis(5))).unwrap();
    }
    assert!(
        stalled_turns >= 50,
        "the server kept reading from a peer that doesn't read ({sent} bytes)"
    );
    // Bounded by max_output plus one read's reply.
    assert!(
        peak.get() <= 64 * 1024 + 64 * 1024,
        "queued {} bytes",
        peak.get()
    );

    // Another client is still served.
    let mut other = std::net::TcpStream::connect(addr).unwrap();
    other.write_all(b"still here").unwrap();
    other.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    run_until(&lp, || {
        let mut b = [0u8; 32];
        if let Ok(n) = other.read(&mut b) {
            got.extend_from_slice(&b[..n]);
        }
        got == b"still here"
    });
}

#[test]
fn batched_and_unbatched_replies_arrive_whole_and_in_order() {
    for batch_writes in [true, false] {
        let (lp, _srv, addr, _) = echo_server(ServerOptions::default().batch_writes(batch_writes));
        // 4 MiB in uneven pieces, read back while sending: replies larger
        // than the batch limit, a full socket, and small tail pieces.
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_nonblocking(true).unwrap();
        let (mut sent, mut got) = (0usize, Vec::with_capacity(data.len()));
        let mut piece = 1usize;
        let deadline = Instant::now() + LONG;
        while got.len() < data.len() {
            assert!(Instant::now() < deadline, "echo incomplete: {}", got.len());
            if sent < data.len() {
                let end = (sent + piece).min(data.len());
                piece = piece * 3 % 200_003 + 1;
                match c.write(&data[sent..end]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            lp.run_once(Some(Duration::from_millis(1))).unwrap();
            let mut b = [0u8; 65536];
            loop {
                match c.read(&mut b) {
                    Ok(0) => panic!("server closed"),
                    Ok(n) => got.extend_from_slice(&b[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert!(got == data, "batch_writes {batch_writes}: echo differs");
    }
}

#[test]
fn an_oversized_frame_closes_only_that_connection() {
    use procwire::net::frame::{encode_frame, parse_frame};
    struct Frames;
    impl Protocol for Frames {
        fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> std::io::Result<usize> {
            match parse_frame(input, 1024)? {
                Some((payload, n)) => {
                    let mut reply = Vec::new();
                    encode_frame(payload, 1024, &mut reply)?;
                    out.write(&reply)?;
                    Ok(n)
                }
                None => Ok(0),
            }
        }
    }
    let lp = EventLoop::new().unwrap();
    let (l, addr) = tcp_listener();
    let _srv = serve(&lp, l, ServerOptions::default(), |_| Frames).unwrap();
    let mut good = std::net::TcpStream::connect(addr).unwrap();
    let mut bad = std::net::TcpStream::connect(addr).unwrap();
    bad.write_all(&[0, 1, 0, 0, 1, 2, 3]).unwrap(); // 65536 > 1024
    let mut frame = Vec::new();
    encode_frame(b"fine", 1024, &mut frame).unwrap();
    good.write_all(&frame).unwrap();
    good.set_nonblocking(true).unwrap();
    bad.set_nonblocking(true).unwrap();
    let mut echoed = Vec::new();
    let mut bad_closed = false;
    run_until(&lp, || {
        let mut b = [0u8; 64];
        if let Ok(n) = good.read(&mut b) {
            echoed.extend_from_slice(&b[..n]);
        }
        match bad.read(&mut b) {
            Ok(0) => bad_closed = true,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => bad_closed = true,
            _ => {}
        }
        echoed == frame && bad_closed
    });
}

/// The disposition of `signo` in this process (its handler address).
fn disposition(signo: i32) -> usize {
    // SAFETY: a zeroed sigaction is a valid value for the kernel to fill;
    // a null new action only reads the current one.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signo, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

/// Sets the disposition of `signo` to `handler` (SIG_IGN, SIG_DFL).
fn set_disposition(signo: i32, handler: usize) {
    // SAFETY: as above, with a plain handler value and an empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        assert_eq!(libc::sigaction(signo, &sa, std::ptr::null_mut()), 0);
    }
}

#[test]
fn signals_reach_every_loop_that_asked_and_the_old_disposition_comes_back() {
    use procwire::sys::process::{getpid, kill};
    use procwire::sys::signal::Signal;
    // SIGUSR2 is this test's alone in this binary. Ignored to begin with, so
    // a signal that arrives after the loops are gone does no harm.
    set_disposition(libc::SIGUSR2, libc::SIG_IGN);
    let loops: Vec<(EventLoop, Rc<Cell<usize>>)> = (0..2)
        .map(|_| {
            let lp = EventLoop::new().unwrap();
            let got = counter();
            let g = got.clone();
            lp.on_signals(&[Signal::USR2], move |cx, s| {
                assert_eq!(s, Signal::USR2);
                g.set(g.get() + 1);
                cx.stop();
            })
            .unwrap();
            (lp, got)
        })
        .collect();
    assert_ne!(disposition(libc::SIGUSR2), libc::SIG_IGN, "caught now");
    // A process-directed signal: any thread of the harness may take it.
    kill(getpid(), Signal::USR2).unwrap();
    for (lp, got) in &loops {
        run_until(lp, || got.get() == 1);
    }
    let mut loops = loops;
    let (gone, _) = loops.remove(0);
    drop(gone);
    assert_ne!(
        disposition(libc::SIGUSR2),
        libc::SIG_IGN,
        "still caught for the other loop"
    );
    kill(getpid(), Signal::USR2).unwrap();
    let (lp, got) = &loops[0];
    run_until(lp, || got.get() == 2);
    drop(loops);
    assert_eq!(
        disposition(libc::SIGUSR2),
        libc::SIG_IGN,
        "the disposition from before the first loop is back"
    );
}

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut ru), 0);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
fn busy_polling_keeps_timeouts_timers_and_events() {
    let lp = EventLoop::new().unwrap();
    // Busy polling follows a burst of I/O: a registered pair to make one.
    let (a, b) = pair();
    let got = counter();
    let g = got.clone();
    let _reg = lp
        .register(b, Interest::READABLE, move |_, s: &Socket, _| {
            let mut buf = [0u8; 8];
            while let Ok(n) = s.recv(&mut buf) {
                g.set(g.get() + n);
            }
            Ok(())
        })
        .unwrap();
    let burst = |want: usize| {
        a.send(b"x").unwrap();
        run_until(&lp, || got.get() == want);
    };
    lp.set_busy_poll(Duration::from_millis(2));
    burst(1);
    // A wait with nothing ready lasts its timeout, busy part included.
    let t = Instant::now();
    lp.run_once(Some(Duration::from_millis(20))).unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(20), "{took:?}");
    assert!(took < LONG, "{took:?}");
    // A timer shorter than the budget fires on time, not after the budget.
    lp.set_busy_poll(Duration::from_secs(2));
    burst(2);
    let fired = Rc::new(Cell::new(None));
    let f = fired.clone();
    let start = Instant::now();
    lp.after(Duration::from_millis(5), move |_| {
        f.set(Some(start.elapsed()))
    });
    run_until(&lp, || fired.get().is_some());
    let at = fired.get().unwrap();
    assert!(at >= Duration::from_millis(5), "{at:?}");
    // Polling stops at the timer's deadline, not at the 2 s budget.
    assert!(at < Duration::from_secs(1), "{at:?}");
    // An event that arrives while the loop polls is delivered.
    burst(3);
    let a2 = a.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1));
        a2.send(b"busy").unwrap();
    });
    run_until(&lp, || got.get() == 7);
    sender.join().unwrap();
    // Turns woken only by a timer end the burst: a loop ticking every
    // millisecond after one event sleeps between ticks instead of polling
    // through them.
    lp.set_busy_poll(Duration::from_millis(50));
    let ticks = counter();
    let tk = ticks.clone();
    let id = lp.every(Duration::from_millis(1), move |_| tk.set(tk.get() + 1));
    burst(8);
    let (wall, cpu) = (Instant::now(), thread_cpu());
    run_until(&lp, || ticks.get() >= 200);
    let (wall, cpu) = (wall.elapsed(), thread_cpu() - cpu);
    lp.cancel(id);
    eprintln!("{cpu:?} of CPU in {wall:?} of 1 ms ticks");
    assert!(cpu < wall / 2, "{cpu:?} of CPU in {wall:?}");
}

#[test]
fn a_request_followed_by_a_half_close_gets_its_reply_and_then_eof() {
    // The request and the FIN arrive together: the read of the request is
    // short, and the end of the stream must still be seen (no new edge
    // will come for it).
    let (lp, _srv, addr, _) = echo_server(ServerOptions::default());
    let client = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"last words").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        c.set_read_timeout(Some(LONG)).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        got
    });
    let deadline = Instant::now() + LONG;
    while !client.is_finished() {
        assert!(Instant::now() < deadline, "the server never closed");
        lp.run_once(Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(client.join().unwrap(), b"last words");
}

#[test]
fn a_paused_connection_resumes_once_its_peer_reads_again() {
    // The peer sends far more than max_output before reading anything: the
    // server stops reading, and must start again by itself once the queue
    // drains (nothing new arrives to wake it), in both write modes.
    for batch_writes in [true, false] {
        let (lp, _srv, addr, _) = echo_server(
            ServerOptions::default()
                .max_output(64 * 1024)
                .batch_writes(batch_writes),
        );
        let data: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_nonblocking(true).unwrap();
        // Send until the send buffers are full, without reading.
        let mut sent = 0;
        let mut stalled = 0;
        let deadline = Instant::now() + LONG;
        while sent < data.len() && stalled < 50 {
            assert!(Instant::now() < deadline);
            match c.write(&data[sent..]) {
                Ok(n) => {
                    sent += n;
                    stalled = 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stalled += 1,
                Err(e) => panic!("{e}"),
            }
            lp.run_once(Some(Duration::from_millis(1))).unwrap();
        }
        // Now read, send the rest as it fits, then half-close: the end of
        // the stream reaches the server while it is still paused, and must
        // not be lost when it resumes.
        let mut got = Vec::new();
        let mut b = vec![0u8; 65536];
        let mut shut = false;
        loop {
            assert!(
                Instant::now() < deadline,
                "batch_writes {batch_writes}: stuck at {} of {}",
                got.len(),
                data.len()
            );
            if sent < data.len() {
                if let Ok(n) = c.write(&data[sent..]) {
                    sent += n;
                }
            } else if !shut {
                c.shutdown(std::net::Shutdown::Write).unwrap();
                shut = true;
            }
            lp.run_once(Some(Duration::from_millis(1))).unwrap();
            match c.read(&mut b) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(got == data, "batch_writes {batch_writes}: echo differs");
    }
}

/// `WORK n` lines, each done in `n` slices of one call each, with
/// [`Output::resume_later`] between them (and between jobs); every call is
/// logged with the loop's turn.
struct Sliced {
    id: usize,
    done: usize,
    turn: Rc<Cell<usize>>,
    log: Rc<RefCell<Vec<(usize, usize)>>>,
}

impl Protocol for Sliced {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> std::io::Result<usize> {
        let Some(end) = input.iter().position(|&c| c == b'\n') else {
            return Ok(0);
        };
        let n: usize = std::str::from_utf8(&input[5..end])
            .unwrap()
            .parse()
            .unwrap();
        self.log.borrow_mut().push((self.id, self.turn.get()));
        self.done += 1;
        if self.done < n {
            out.resume_later();
            return Ok(0);
        }
        self.done = 0;
        out.write(format!("done {n}\n").as_bytes())?;
        if input.len() > end + 1 {
            // The next job waits for the next turn too.
            out.resume_later();
        }
        Ok(end + 1)
    }
}

#[test]
fn work_cut_in_slices_lets_other_connections_run_between_them() {
    for batch_writes in [true, false] {
        let lp = EventLoop::new().unwrap();
        let (l, addr) = tcp_listener();
        let log = Rc::new(RefCell::new(Vec::new()));
        let turn = Rc::new(Cell::new(0));
        let (lg, tn, ids) = (log.clone(), turn.clone(), Cell::new(0));
        let opts = ServerOptions::default().batch_writes(batch_writes);
        let _srv = serve(&lp, l, opts, move |_| {
            ids.set(ids.get() + 1);
            Sliced {
                id: ids.get(),
                done: 0,
                turn: tn.clone(),
                log: lg.clone(),
            }
        })
        .unwrap();
        let open = |req: &[u8]| {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(req).unwrap();
            c.set_nonblocking(true).unwrap();
            c
        };
        let read = |c: &mut std::net::TcpStream, got: &mut Vec<u8>| {
            let mut b = [0u8; 256];
            match c.read(&mut b) {
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        };
        // Turns counted, so the log tells which calls shared one.
        let run_until = |lp: &EventLoop, mut done: Box<dyn FnMut() -> bool + '_>| {
            let deadline = Instant::now() + LONG;
            while !done() {
                assert!(Instant::now() < deadline, "condition not reached in time");
                turn.set(turn.get() + 1);
                lp.run_once(Some(Duration::from_millis(50))).unwrap();
            }
        };
        // A long job and a short one pipelined behind it, then the end of
        // the stream: nothing more arrives while the slices run.
        let mut long = open(b"WORK 2000\nWORK 2\n");
        long.shutdown(std::net::Shutdown::Write).unwrap();
        run_until(&lp, Box::new(|| !log.borrow().is_empty()));
        let mut short = open(b"WORK 1\n");
        let (mut got_short, mut got_long) = (Vec::new(), Vec::new());
        run_until(
            &lp,
            Box::new(|| {
                read(&mut short, &mut got_short);
                got_short == b"done 1\n"
            }),
        );
        let long_slices = log.borrow().iter().filter(|e| e.0 == 1).count();
        assert!(
            long_slices < 2000,
            "the short job waited for the long one ({batch_writes})"
        );
        run_until(
            &lp,
            Box::new(|| {
                read(&mut long, &mut got_long);
                got_long.ends_with(b"done 2\n")
            }),
        );
        assert_eq!(got_long, b"done 2000\ndone 2\n");
        let log = log.borrow();
        assert_eq!(log.iter().filter(|e| e.0 == 1).count(), 2002);
        // One call per connection per turn: never called again at once.
        let unique: std::collections::HashSet<_> = log.iter().collect();
        assert_eq!(
            unique.len(),
            log.len(),
            "a connection was called twice in a turn"
        );
        // Then the end of its stream.
        long.set_nonblocking(false).unwrap();
        long.set_read_timeout(Some(LONG)).unwrap();
        let mut rest = Vec::new();
        let reader = std::thread::spawn(move || long.read_to_end(&mut rest).map(|_| rest));
        let deadline = Instant::now() + LONG;
        while !reader.is_finished() {
            assert!(Instant::now() < deadline, "no EOF after the last reply");
            lp.run_once(Some(Duration::from_millis(10))).unwrap();
        }
        assert_eq!(reader.join().unwrap().unwrap(), b"");
    }
}

#[test]
fn into_source_gives_the_source_back_and_the_handler_is_not_called_again() {
    use std::os::fd::AsRawFd;
    let lp = EventLoop::new().unwrap();
    let (a, b) = pair();
    let raw = b.as_raw_fd();
    let calls = counter();
    let c = calls.clone();
    let reg = lp
        .register_with(b, Interest::READABLE, Mode::Level, move |_, s, _| {
            let mut buf = [0u8; 16];
            let _ = s.recv(&mut buf);
            c.set(c.get() + 1);
            Ok(())
        })
        .unwrap();
    a.send(b"1").unwrap();
    run_until(&lp, || calls.get() == 1);
    let b: Socket = reg.into_source().unwrap();
    assert_eq!(b.as_raw_fd(), raw, "the same socket");
    a.send(b"2").unwrap();
    lp.run_once(Some(Duration::from_millis(50))).unwrap();
    assert_eq!(calls.get(), 1, "deregistered");
    let mut buf = [0u8; 4];
    assert_eq!(
        b.recv(&mut buf).unwrap(),
        1,
        "and still open, with its byte"
    );

    // The wrong type: EINVAL.
    let reg = lp
        .register(b, Interest::READABLE, |_, _, _| Ok(()))
        .unwrap();
    let e = reg.into_source::<std::fs::File>().unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EINVAL, "{e}");

    // From inside its own handler: EBUSY, and the source goes with the call.
    let (a, b) = pair();
    let slot: Rc<RefCell<Option<procwire::net::event::Registration>>> = Rc::default();
    let got = Rc::new(Cell::new(0));
    let (s2, g2) = (slot.clone(), got.clone());
    let reg = lp
        .register(b, Interest::READABLE, move |_, _, _| {
            if let Some(r) = s2.borrow_mut().take() {
                let e = r.into_source::<Socket>().unwrap_err();
                g2.set(e.raw_os_error());
            }
            Ok(())
        })
        .unwrap();
    *slot.borrow_mut() = Some(reg);
    a.send(b"x").unwrap();
    run_until(&lp, || got.get() != 0);
    assert_eq!(got.get(), libc::EBUSY);
}
