//! Socket options: each one round-trips (set, then get), SO_REUSEPORT lets
//! two sockets share a port, and misuse fails naming the option.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use procwire::sys::socket::{socketpair, Domain, Socket, Type};

fn tcp4() -> Socket {
    Socket::new(Domain::IPV4, Type::STREAM).unwrap()
}

fn loopback_v4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Sets each value and reads it back through the typed pair.
macro_rules! round_trip {
    ($name:ident, $sock:expr, $set:ident, $get:ident, [$($v:expr),+]) => {
        #[test]
        fn $name() {
            let s = $sock;
            $(
                s.$set($v).unwrap();
                assert_eq!(s.$get().unwrap(), $v, concat!(stringify!($set), "(", stringify!($v), ")"));
            )+
        }
    };
}

round_trip!(
    reuse_address,
    tcp4(),
    set_reuse_address,
    reuse_address,
    [true, false]
);
round_trip!(
    reuse_port,
    tcp4(),
    set_reuse_port,
    reuse_port,
    [true, false]
);
round_trip!(nodelay, tcp4(), set_nodelay, nodelay, [true, false]);
round_trip!(keepalive, tcp4(), set_keepalive, keepalive, [true, false]);
round_trip!(
    linger,
    tcp4(),
    set_linger,
    linger,
    [Some(Duration::from_secs(5)), Some(Duration::ZERO), None]
);
round_trip!(
    read_timeout,
    tcp4(),
    set_read_timeout,
    read_timeout,
    [Some(Duration::from_millis(1500)), None]
);
round_trip!(
    write_timeout,
    tcp4(),
    set_write_timeout,
    write_timeout,
    [Some(Duration::from_secs(3)), None]
);
round_trip!(
    recv_low_water,
    tcp4(),
    set_recv_low_water,
    recv_low_water,
    [64usize, 1usize]
);
round_trip!(
    only_v6,
    match Socket::new(Domain::IPV6, Type::STREAM) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipped: IPv6 is off on this host ({e})");
            return;
        }
    },
    set_only_v6,
    only_v6,
    [true, false]
);

#[test]
fn buffer_sizes_round_trip_as_the_kernel_reports_them() {
    let s = tcp4();
    s.set_recv_buffer_size(64 * 1024).unwrap();
    let r = s.recv_buffer_size().unwrap();
    // Linux doubles the value for bookkeeping; others keep it.
    assert!(r == 64 * 1024 || r == 128 * 1024, "SO_RCVBUF read back {r}");
    s.set_send_buffer_size(32 * 1024).unwrap();
    let w = s.send_buffer_size().unwrap();
    assert!(w == 32 * 1024 || w == 64 * 1024, "SO_SNDBUF read back {w}");
}

#[cfg(target_os = "linux")]
#[test]
fn forced_buffer_sizes_pass_the_system_cap_or_say_eperm() {
    let cap: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(212_992);
    let want = cap * 4;
    let s = tcp4();
    // The ordinary call is capped.
    s.set_recv_buffer_size(want).unwrap();
    assert!(s.recv_buffer_size().unwrap() <= 2 * cap);
    match s.set_recv_buffer_size_force(want) {
        Ok(()) => assert!(s.recv_buffer_size().unwrap() >= want, "SO_RCVBUFFORCE"),
        Err(e) => {
            assert_eq!(e.raw_os_error(), procwire::sys::errno::EPERM, "{e}");
            assert!(e.to_string().contains("SO_RCVBUFFORCE"), "{e}");
        }
    }
    match s.set_send_buffer_size_force(want) {
        Ok(()) => assert!(s.send_buffer_size().unwrap() >= want, "SO_SNDBUFFORCE"),
        Err(e) => assert_eq!(e.raw_os_error(), procwire::sys::errno::EPERM, "{e}"),
    }
}

#[test]
fn reuse_port_lets_two_sockets_share_a_port_but_not_a_plain_one() {
    let a = tcp4();
    a.set_reuse_port(true).unwrap();
    a.bind(loopback_v4()).unwrap();
    let addr = a.local_addr().unwrap();

    let b = tcp4();
    b.set_reuse_port(true).unwrap();
    b.bind(addr.clone())
        .expect("a second SO_REUSEPORT socket binds the same port");
    b.listen(4).unwrap();

    let plain = tcp4();
    let e = plain.bind(addr.clone()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}");
    assert!(e.to_string().starts_with(&format!("bind({addr}): ")), "{e}");
}

#[test]
fn take_error_reports_a_refused_nonblocking_connect() {
    let holder = tcp4();
    holder.bind(loopback_v4()).unwrap();
    let addr = holder.local_addr().unwrap();
    let c = tcp4();
    c.set_nonblocking(true).unwrap();
    match c.connect(addr) {
        Err(e) if e.raw_os_error() == libc::EINPROGRESS => {
            // Wait for the outcome with the selector, then read SO_ERROR.
            use procwire::sys::event::{Events, Interest, Mode, Selector, Token};
            use std::os::fd::AsFd;
            let sel = Selector::new().unwrap();
            // SAFETY: `sel` is dropped before `c` (declared after it).
            unsafe { sel.register(c.as_fd(), Token(1), Interest::WRITABLE, Mode::Level) }.unwrap();
            let mut ev = Events::with_capacity(4);
            sel.wait(&mut ev, Some(Duration::from_secs(10))).unwrap();
            assert_eq!(ev.len(), 1);
            let err = c.take_error().unwrap().expect("a pending error");
            assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(()) => panic!("connect to a non-listening port succeeded"),
    }
    assert!(
        c.take_error().unwrap().is_none(),
        "SO_ERROR is cleared by reading it"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn peer_cred_names_this_process() {
    let (a, _b) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    let c = a.peer_cred().unwrap();
    assert_eq!(c.pid as u32, std::process::id());
    assert_eq!(c.uid, rustix::process::getuid().as_raw());
    assert_eq!(c.gid, rustix::process::getgid().as_raw());

    let t = tcp4();
    let e = t.peer_cred().unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("getsockopt(fd {}, SO_PEERCRED): ", t.as_raw_fd())),
        "{e}"
    );
}

#[test]
fn options_on_the_wrong_socket_fail_naming_the_option() {
    let v4 = tcp4();
    let e = v4.set_only_v6(true).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "setsockopt(fd {}, IPV6_V6ONLY, true): {}",
            v4.as_raw_fd(),
            std::io::Error::from_raw_os_error(e.raw_os_error())
        )
    );
    let (u, _) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    let e = u.nodelay().unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("getsockopt(fd {}, TCP_NODELAY): ", u.as_raw_fd())),
        "{e}"
    );
    let e = v4.set_recv_low_water(usize::MAX).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EINVAL);
    assert!(e.args().contains("SO_RCVLOWAT"), "{e}");
}

#[test]
fn socket_type_tells_stream_from_datagram() {
    assert_eq!(tcp4().socket_type().unwrap(), Type::STREAM);
    let udp = Socket::new(Domain::IPV6, Type::DGRAM).unwrap();
    assert_eq!(udp.socket_type().unwrap(), Type::DGRAM);
    let (u, _) = socketpair(Domain::UNIX, Type::DGRAM).unwrap();
    assert_eq!(u.socket_type().unwrap(), Type::DGRAM);
    // A pipe is no socket: the error names the call, the fd and the option.
    let (r, _w) = procwire::sys::fd::pipe().unwrap();
    let not_a_socket = Socket::from(r);
    let e = not_a_socket.socket_type().unwrap_err();
    assert_eq!(e.raw_os_error(), libc::ENOTSOCK);
    assert_eq!(
        e.to_string(),
        format!(
            "getsockopt(fd {}, SO_TYPE): {}",
            not_a_socket.as_raw_fd(),
            std::io::Error::from_raw_os_error(libc::ENOTSOCK)
        )
    );
}
