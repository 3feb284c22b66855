//! The selector over real socketpairs: level, edge and oneshot readiness, a
//! wait that times out, and registration errors naming the fds.

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use procwire::sys::event::{Events, Interest, Mode, Selector, Token};
use procwire::sys::socket::{socketpair, Domain, Socket, Type};

const SHORT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(10);

/// `Selector::register` for these tests. Each fd registered here is a
/// socket or eventfd of the test's own that no other fd refers to, so
/// closing it takes it out of the set, and nothing waits after that.
fn watch(
    sel: &Selector,
    fd: std::os::fd::BorrowedFd<'_>,
    token: Token,
    interest: Interest,
    mode: Mode,
) -> procwire::sys::Result<()> {
    // SAFETY: see above: the file behind `fd` has this one fd only.
    unsafe { sel.register(fd, token, interest, mode) }
}

fn setup(mode: Mode) -> (Selector, Socket, Socket, Events) {
    let sel = Selector::new().unwrap();
    let (a, b) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    b.set_nonblocking(true).unwrap();
    watch(&sel, b.as_fd(), Token(7), Interest::READABLE, mode).unwrap();
    (sel, a, b, Events::with_capacity(8))
}

fn tokens(ev: &Events) -> Vec<(usize, bool)> {
    ev.iter().map(|e| (e.token().0, e.is_readable())).collect()
}

#[test]
fn level_reports_until_drained() {
    let (sel, a, b, mut ev) = setup(Mode::Level);
    sel.wait(&mut ev, Some(Duration::ZERO)).unwrap();
    assert!(ev.is_empty(), "nothing written yet");
    a.send(b"xy").unwrap();
    sel.wait(&mut ev, Some(LONG)).unwrap();
    assert_eq!(tokens(&ev), [(7, true)]);
    sel.wait(&mut ev, Some(LONG)).unwrap();
    assert_eq!(
        tokens(&ev),
        [(7, true)],
        "level: still readable while data is left"
    );
    let mut buf = [0u8; 8];
    assert_eq!(b.recv(&mut buf).unwrap(), 2);
    sel.wait(&mut ev, Some(Duration::ZERO)).unwrap();
    assert!(ev.is_empty(), "drained: no more reports");
}

#[test]
fn edge_reports_once_per_arrival() {
    let (sel, a, _b, mut ev) = setup(Mode::Edge);
    a.send(b"x").unwrap();
    sel.wait(&mut ev, Some(LONG)).unwrap();
    assert_eq!(tokens(&ev), [(7, true)]);
    sel.wait(&mut ev, Some(SHORT)).unwrap();
    assert!(
        ev.is_empty(),
        "edge: no second report for the same unread data"
    );
    a.send(b"y").unwrap();
    sel.wait(&mut ev, Some(LONG)).unwrap();
    assert_eq!(tokens(&ev), [(7, true)], "new data is a new edge");
}

#[test]
fn oneshot_reports_once_until_rearmed() {
    let (sel, a, b, mut ev) = setup(Mode::Oneshot);
    a.send(b"x").unwrap();
    sel.wait(&mut ev, Some(LONG)).unwrap();
    assert_eq!(tokens(&ev), [(7, true)]);
    a.send(b"y").unwrap();
    sel.wait(&mut ev, Some(SHORT)).unwrap();
    assert!(ev.is_empty(), "oneshot: disabled after one report");
    sel.reregister(b.as_fd(), Token(8), Interest::READABLE, Mode::Oneshot)
        .unwrap();
    sel.wait(&mut ev, Some(LONG)).unwrap();
    assert_eq!(tokens(&ev), [(8, true)], "re-armed with the new token");
}

#[test]
fn wait_times_out_with_no_events() {
    let (sel, _a, _b, mut ev) = setup(Mode::Level);
    let t = Instant::now();
    sel.wait(&mut ev, Some(Duration::from_millis(30))).unwrap();
    assert!(ev.is_empty());
    assert!(
        t.elapsed() >= Duration::from_millis(30),
        "returned early: {:?}",
        t.elapsed()
    );
}

#[test]
fn writable_and_peer_close() {
    let (sel, a, b, mut ev) = setup(Mode::Level);
    sel.reregister(
        b.as_fd(),
        Token(9),
        Interest::READABLE | Interest::WRITABLE,
        Mode::Level,
    )
    .unwrap();
    sel.wait(&mut ev, Some(LONG)).unwrap();
    let e = ev.iter().next().unwrap();
    assert!(e.is_writable() && !e.is_readable());
    drop(a);
    sel.wait(&mut ev, Some(LONG)).unwrap();
    let e = ev
        .iter()
        .find(|e| e.is_read_closed())
        .expect("a read-closed report after the peer closed");
    assert_eq!(e.token(), Token(9));
    sel.deregister(b.as_fd()).unwrap();
    sel.wait(&mut ev, Some(Duration::ZERO)).unwrap();
    assert!(ev.is_empty(), "deregistered: no more reports");
}

#[test]
fn capacity_bounds_one_wait() {
    let sel = Selector::new().unwrap();
    let pairs: Vec<_> = (0..5)
        .map(|_| socketpair(Domain::UNIX, Type::STREAM).unwrap())
        .collect();
    for (i, (a, b)) in pairs.iter().enumerate() {
        watch(&sel, b.as_fd(), Token(i), Interest::READABLE, Mode::Level).unwrap();
        a.send(b"x").unwrap();
    }
    let mut ev = Events::with_capacity(2);
    sel.wait(&mut ev, Some(LONG)).unwrap();
    assert!(ev.len() <= ev.capacity() && !ev.is_empty());
}

#[test]
fn registration_errors_name_the_fds() {
    let (sel, _a, b, _ev) = setup(Mode::Level);
    let e = watch(&sel, b.as_fd(), Token(1), Interest::READABLE, Mode::Edge).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EEXIST);
    assert!(
        e.to_string().starts_with(&format!(
            "epoll_ctl(fd {}, ADD, fd {}, Interest(READABLE), Edge): ",
            sel.as_fd().as_raw_fd(),
            b.as_raw_fd()
        )),
        "{e}"
    );
    let (_c, d) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    let e = sel.deregister(d.as_fd()).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::ENOENT);
    assert!(
        e.to_string()
            .contains(&format!("DEL, fd {}", d.as_raw_fd())),
        "{e}"
    );
    let e = sel
        .reregister(d.as_fd(), Token(2), Interest::READABLE, Mode::Level)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), libc::ENOENT);
    // Regular files can't be watched.
    let f = std::fs::File::open("/proc/self/exe")
        .or_else(|_| std::fs::File::open(std::env::current_exe().unwrap()))
        .unwrap();
    let e = watch(&sel, f.as_fd(), Token(3), Interest::READABLE, Mode::Level).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EPERM, "{e}");
}

#[cfg(target_os = "linux")]
#[test]
fn eventfd_counts_and_wakes_the_selector() {
    use procwire::sys::eventfd::EventFd;
    let sel = Selector::new().unwrap();
    let efd = EventFd::new(0, true).unwrap();
    watch(&sel, efd.as_fd(), Token(5), Interest::READABLE, Mode::Edge).unwrap();
    let e = efd.read().unwrap_err();
    assert!(e.is_would_block());
    assert!(
        e.to_string()
            .starts_with(&format!("read(eventfd fd {}): ", efd.as_raw_fd())),
        "{e}"
    );
    efd.write(2).unwrap();
    efd.write(1).unwrap();
    let mut ev = Events::with_capacity(4);
    sel.wait(&mut ev, Some(LONG)).unwrap();
    assert_eq!(tokens(&ev), [(5, true)]);
    assert_eq!(efd.read().unwrap(), 3, "writes add up");
    let e = efd.write(u64::MAX).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EINVAL);
}

#[test]
fn a_timer_fires_once_in_a_selector_and_can_be_disarmed_or_reset() {
    use procwire::sys::event::Timer;
    let timer = Timer::new().unwrap();
    let sel = Selector::new().unwrap();
    // SAFETY: the timer outlives the selector's use here and is never
    // duplicated; it is deregistered by dropping the selector first.
    unsafe { sel.register(timer.as_fd(), Token(9), Interest::READABLE, Mode::Level) }.unwrap();
    let mut events = Events::with_capacity(4);
    // Disarmed: nothing, and nothing to clear.
    sel.wait(&mut events, Some(Duration::from_millis(20)))
        .unwrap();
    assert!(events.is_empty());
    assert!(!timer.clear().unwrap());
    let t = Instant::now();
    timer.set(Some(Duration::from_millis(30))).unwrap();
    sel.wait(&mut events, Some(Duration::from_secs(10)))
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(29),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        events.iter().map(|e| e.token()).collect::<Vec<_>>(),
        [Token(9)]
    );
    // Level: still ready until cleared; once, not periodic.
    sel.wait(&mut events, Some(Duration::ZERO)).unwrap();
    assert_eq!(events.len(), 1);
    assert!(timer.clear().unwrap());
    assert!(!timer.clear().unwrap());
    sel.wait(&mut events, Some(Duration::from_millis(60)))
        .unwrap();
    assert!(events.is_empty(), "one-shot");
    // Disarmed before it fires: never fires. Zero fires at once.
    timer.set(Some(Duration::from_millis(20))).unwrap();
    timer.set(None).unwrap();
    sel.wait(&mut events, Some(Duration::from_millis(60)))
        .unwrap();
    assert!(events.is_empty(), "disarmed");
    timer.set(None).unwrap();
    timer.set(Some(Duration::ZERO)).unwrap();
    sel.wait(&mut events, Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(events.len(), 1, "a zero timer fires at once");
    // A later setting replaces an earlier one.
    assert!(timer.clear().unwrap());
    timer.set(Some(Duration::from_secs(3600))).unwrap();
    timer.set(Some(Duration::from_millis(10))).unwrap();
    sel.wait(&mut events, Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(events.len(), 1, "reset to the nearer time");
}

/// The fd-holding types give their raw fd to APIs that take one: mio's
/// `SourceFd` watches our `Timer` and `Selector`, and `OwnedFd::from` hands
/// the fd over without closing it.
#[test]
fn raw_fds_work_with_mio_and_owned_fds_move_out() {
    use mio::unix::SourceFd;
    use procwire::sys::event::Timer;
    use std::io::Write;
    use std::os::fd::OwnedFd;

    let mut poll = mio::Poll::new().unwrap();
    let mut events = mio::Events::with_capacity(4);
    let timer = Timer::new().unwrap();
    poll.registry()
        .register(
            &mut SourceFd(&timer.as_raw_fd()),
            mio::Token(7),
            mio::Interest::READABLE,
        )
        .unwrap();
    timer.set(Some(Duration::from_millis(1))).unwrap();
    poll.poll(&mut events, Some(Duration::from_secs(10)))
        .unwrap();
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.token(), e.is_readable()))
        .collect();
    assert_eq!(got, vec![(mio::Token(7), true)]);

    // A selector with a ready registration is itself readable to mio.
    let (sel, a, _b, _) = setup(Mode::Level);
    (&a).write_all(b"x").unwrap();
    poll.registry()
        .register(
            &mut SourceFd(&sel.as_raw_fd()),
            mio::Token(8),
            mio::Interest::READABLE,
        )
        .unwrap();
    poll.poll(&mut events, Some(Duration::from_secs(10)))
        .unwrap();
    assert!(events.iter().any(|e| e.token() == mio::Token(8)));

    let raw = timer.as_raw_fd();
    let owned = OwnedFd::from(timer);
    assert_eq!(owned.as_raw_fd(), raw);
    // Still open: fcntl on it works.
    assert!(rustix::io::fcntl_getfd(&owned).is_ok());
}

/// TCP urgent data is reported as priority to a registration that asks for
/// it, and not to one that doesn't.
#[cfg(target_os = "linux")]
#[test]
fn priority_interest_reports_urgent_data() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    let b2 = b.try_clone().unwrap();
    let sel = Selector::new().unwrap();
    let mut ev = Events::with_capacity(8);
    watch(
        &sel,
        b.as_fd(),
        Token(1),
        Interest::READABLE | Interest::PRIORITY,
        Mode::Level,
    )
    .unwrap();
    // The same file again under another fd, without PRIORITY.
    watch(&sel, b2.as_fd(), Token(2), Interest::READABLE, Mode::Level).unwrap();
    sel.wait(&mut ev, Some(SHORT)).unwrap();
    assert!(ev.iter().next().is_none(), "nothing yet: {ev:?}");
    socket2::SockRef::from(&a).send_out_of_band(b"!").unwrap();
    let deadline = Instant::now() + LONG;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        sel.wait(&mut ev, Some(LONG)).unwrap();
        seen = ev.iter().map(|e| (e.token().0, e.is_priority())).collect();
        if seen.contains(&(1, true)) {
            break;
        }
    }
    assert!(seen.contains(&(1, true)), "{seen:?}");
    assert!(!seen.contains(&(2, true)), "{seen:?}");
}
