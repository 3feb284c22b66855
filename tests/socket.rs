//! Sockets over loopback and Unix paths: success cases, and real failures
//! whose error names the call and its argument.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use procwire::sys::socket::{socketpair, Domain, Shutdown, SockAddr, Socket, Type};
use procwire::sys::Error;

fn loopback_v4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn listener_v4() -> (Socket, SockAddr) {
    let l = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    l.bind(loopback_v4()).unwrap();
    l.listen(16).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("procwire-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn is_cloexec(fd: &impl std::os::fd::AsFd) -> bool {
    rustix::io::fcntl_getfd(fd)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC)
}

#[test]
fn tcp_v4_connect_accept_send_recv_shutdown() {
    let (l, addr) = listener_v4();
    assert_ne!(addr.port(), Some(0), "bind to port 0 must pick a port");
    let c = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    c.connect(addr.clone()).unwrap();
    let (s, peer) = l.accept().unwrap();
    assert_eq!(
        peer,
        c.local_addr().unwrap(),
        "accept returns the peer address"
    );
    assert_eq!(c.peer_addr().unwrap(), addr);
    assert!(is_cloexec(&l) && is_cloexec(&c) && is_cloexec(&s));

    assert_eq!(c.send(b"ping").unwrap(), 4);
    let mut buf = [0u8; 16];
    let n = s.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");

    // io::Read / io::Write on the socket and on a reference to it.
    (&s).write_all(b"pong").unwrap();
    let mut got = [0u8; 4];
    (&c).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");

    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let mut s2 = s.try_clone().unwrap();
    s2.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "after the peer's shutdown(WR) a read is end-of-file"
    );
}

#[test]
fn tcp_v6_loopback() {
    let l = match Socket::new(Domain::IPV6, Type::STREAM) {
        Ok(l) => l,
        Err(e) if e.raw_os_error() == libc::EAFNOSUPPORT => {
            eprintln!("skipped: IPv6 is off on this host ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    match l.bind(SocketAddr::from((Ipv6Addr::LOCALHOST, 0))) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == libc::EADDRNOTAVAIL => {
            eprintln!("skipped: no ::1 on this host ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    }
    l.listen(4).unwrap();
    let addr = l.local_addr().unwrap();
    assert!(matches!(addr, SockAddr::Inet(SocketAddr::V6(_))));
    let c = Socket::for_addr(&addr, Type::STREAM).unwrap();
    c.connect(addr).unwrap();
    let (s, peer) = l.accept().unwrap();
    assert_eq!(peer, c.local_addr().unwrap());
    c.send(b"six").unwrap();
    let mut b = [0u8; 3];
    (&s).read_exact(&mut b).unwrap();
    assert_eq!(&b, b"six");
}

#[test]
fn unix_stream_path_and_abstract() {
    let dir = temp_dir("unix");
    let path = dir.join("sock");
    let l = Socket::new(Domain::UNIX, Type::STREAM).unwrap();
    l.bind(SockAddr::unix(&path)).unwrap();
    l.listen(4).unwrap();
    assert_eq!(l.local_addr().unwrap(), SockAddr::unix(&path));
    let c = Socket::new(Domain::UNIX, Type::STREAM).unwrap();
    c.connect(path.as_path()).unwrap();
    let (s, peer) = l.accept().unwrap();
    assert_eq!(peer, SockAddr::Unnamed, "an unbound client has no name");
    c.send(b"unix").unwrap();
    let mut b = [0u8; 4];
    (&s).read_exact(&mut b).unwrap();
    assert_eq!(&b, b"unix");
    std::fs::remove_dir_all(&dir).unwrap();

    #[cfg(target_os = "linux")]
    {
        let name = format!("procwire-test-{}", std::process::id());
        let l = Socket::new(Domain::UNIX, Type::STREAM).unwrap();
        l.bind(SockAddr::abstract_name(&name)).unwrap();
        l.listen(4).unwrap();
        assert_eq!(l.local_addr().unwrap(), SockAddr::abstract_name(&name));
        assert_eq!(l.local_addr().unwrap().to_string(), format!("@{name}"));
        let c = Socket::new(Domain::UNIX, Type::STREAM).unwrap();
        c.connect(SockAddr::abstract_name(&name)).unwrap();
        let (_s, _) = l.accept().unwrap();
    }
}

#[test]
fn socketpair_and_datagrams() {
    let (a, b) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    assert!(is_cloexec(&a) && is_cloexec(&b));
    a.send(b"pair").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(b.recv(&mut buf).unwrap(), 4);

    let (a, b) = socketpair(Domain::UNIX, Type::DGRAM).unwrap();
    a.send(b"one").unwrap();
    a.send(b"two").unwrap();
    assert_eq!(b.recv(&mut buf).unwrap(), 3, "datagram boundaries are kept");
    assert_eq!(&buf[..3], b"one");

    let u1 = Socket::new(Domain::IPV4, Type::DGRAM).unwrap();
    u1.bind(loopback_v4()).unwrap();
    let u2 = Socket::new(Domain::IPV4, Type::DGRAM).unwrap();
    u2.bind(loopback_v4()).unwrap();
    u1.send_to(b"udp", u2.local_addr().unwrap()).unwrap();
    let (n, from) = u2.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"udp"[..], u1.local_addr().unwrap()));
}

#[test]
fn nonblocking_recv_would_block() {
    let (a, _b) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    a.set_nonblocking(true).unwrap();
    let e = a.recv(&mut [0u8; 4]).unwrap_err();
    assert!(e.is_would_block(), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "recv(fd {}, 4 bytes): {}",
            a.as_raw_fd(),
            std::io::Error::from_raw_os_error(e.raw_os_error())
        )
    );
    a.set_nonblocking(false).unwrap();
}

#[test]
fn bind_taken_port_names_call_and_address() {
    let (_l, addr) = listener_v4();
    let b = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    let e = b.bind(addr.clone()).unwrap_err();
    assert_eq!(e.call(), "bind");
    assert_eq!(e.kind(), ErrorKind::AddrInUse);
    assert_eq!(
        e.to_string(),
        format!("bind({addr}): Address already in use (os error 98)")
    );
    assert_eq!(e.errno(), procwire::sys::Errno::EADDRINUSE);
    // Into io::Error, as `?` does: the errno and the kind survive, as std's
    // own bind would give them.
    let io: std::io::Error = e.into();
    assert_eq!(io.kind(), ErrorKind::AddrInUse);
    assert_eq!(io.raw_os_error(), Some(libc::EADDRINUSE));
    assert_eq!(Error::errno_of(&io), Some(libc::EADDRINUSE));
    // Through `?` in a function that speaks io::Result.
    fn bind_io(s: &Socket, addr: SockAddr) -> std::io::Result<()> {
        s.bind(addr)?;
        Ok(())
    }
    let io = bind_io(&b, addr).unwrap_err();
    assert_eq!(io.raw_os_error(), Some(libc::EADDRINUSE));
}

#[test]
fn connect_refused_names_address() {
    // A bound but not listening socket holds the port, so nothing else can
    // be listening on it while we connect.
    let holder = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    holder.bind(loopback_v4()).unwrap();
    let addr = holder.local_addr().unwrap();
    let c = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    let e = c.connect(addr.clone()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    assert!(
        e.to_string().starts_with(&format!("connect({addr}): ")),
        "{e}"
    );
}

#[test]
fn accept_on_non_listening_socket_fails() {
    let s = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    s.bind(loopback_v4()).unwrap();
    let e = s.accept().unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EINVAL);
    assert!(
        e.to_string()
            .starts_with(&format!("accept(fd {}): ", s.as_raw_fd())),
        "{e}"
    );
}

#[test]
fn unconnected_socket_errors() {
    let s = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    let fd = s.as_raw_fd();
    let e = s.peer_addr().unwrap_err();
    assert_eq!(e.raw_os_error(), libc::ENOTCONN);
    assert!(
        e.to_string()
            .starts_with(&format!("getpeername(fd {fd}): ")),
        "{e}"
    );
    let e = s.shutdown(Shutdown::Both).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::ENOTCONN);
    assert!(
        e.to_string()
            .starts_with(&format!("shutdown(fd {fd}, Both): ")),
        "{e}"
    );
    let e = s.send(b"x").unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("send(fd {fd}, 1 bytes): ")),
        "{e}"
    );
    let u = Socket::new(Domain::IPV4, Type::DGRAM).unwrap();
    let e = u
        .send_to(b"x", SocketAddr::from((Ipv6Addr::LOCALHOST, 9)))
        .unwrap_err();
    assert!(
        e.to_string().starts_with("sendto([::1]:9, 1 bytes): "),
        "{e}"
    );
    u.set_nonblocking(true).unwrap();
    let e = u.recv_from(&mut [0u8; 8]).unwrap_err();
    assert!(e.is_would_block(), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("recvfrom(fd {}, 8 bytes): ", u.as_raw_fd())),
        "{e}"
    );
    let e = u.listen(1).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EOPNOTSUPP);
    assert!(
        e.to_string()
            .starts_with(&format!("listen(fd {}, backlog 1): ", u.as_raw_fd())),
        "{e}"
    );
}

#[test]
fn unix_path_errors_name_the_path() {
    let s = Socket::new(Domain::UNIX, Type::STREAM).unwrap();
    let e = s
        .bind(SockAddr::unix("/nonexistent-procwire/dir/sock"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        e.to_string()
            .starts_with("bind(/nonexistent-procwire/dir/sock): "),
        "{e}"
    );
    let long = format!("/tmp/{}", "x".repeat(200));
    let e = s.connect(SockAddr::unix(&long)).unwrap_err();
    assert_eq!(e.call(), "connect");
    assert!(e.args().contains("xxxx"), "{e}");
    // A wrong-family address: IPv4 address on a Unix socket.
    let e = s.bind(loopback_v4()).unwrap_err();
    assert_eq!(e.call(), "bind");
    assert!(e.args().contains("127.0.0.1:0"), "{e}");
}

#[test]
fn socket_with_unsupported_family_fails() {
    let e = Socket::new(Domain::UNIX, Type::STREAM)
        .and_then(|s| s.set_nodelay(true).map(|_| s))
        .unwrap_err();
    assert_eq!(e.call(), "setsockopt");
    assert!(e.args().contains("TCP_NODELAY"), "{e}");
}

#[test]
fn std_socket_types_convert_both_ways_and_keep_the_fd() {
    // TCP: our listener becomes std's, std's accepted stream becomes ours.
    let (l, addr) = listener_v4();
    let fd = l.as_raw_fd();
    let std_l = std::net::TcpListener::from(l);
    assert_eq!(std_l.as_raw_fd(), fd);
    let port = std_l.local_addr().unwrap().port();
    assert_eq!(Some(port), addr.port());
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (accepted, _) = std_l.accept().unwrap();
    let ours = Socket::from(accepted);
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    (&ours).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    let back = std::net::TcpStream::from(ours);
    (&back).write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    let _ = Socket::from(std_l);

    // UDP.
    let u = Socket::new(Domain::IPV4, Type::DGRAM).unwrap();
    u.bind(loopback_v4()).unwrap();
    let std_u = std::net::UdpSocket::from(u);
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.send_to(b"dgram", std_u.local_addr().unwrap()).unwrap();
    let ours = Socket::from(std_u);
    let mut d = [0u8; 16];
    let n = ours.recv(&mut d).unwrap();
    assert_eq!(&d[..n], b"dgram");

    // Unix: listener, stream and datagram.
    let dir = temp_dir("std-conv");
    let path = dir.join("s");
    let ul = Socket::new(Domain::UNIX, Type::STREAM).unwrap();
    ul.bind(path.as_path()).unwrap();
    ul.listen(4).unwrap();
    let std_ul = std::os::unix::net::UnixListener::from(ul);
    let mut uc = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let (us, _) = std_ul.accept().unwrap();
    let ours = Socket::from(us);
    uc.write_all(b"unix").unwrap();
    (&ours).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"unix");
    let mut back = std::os::unix::net::UnixStream::from(ours);
    back.write_all(b"back").unwrap();
    uc.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"back");
    let _ = Socket::from(std_ul);
    let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let a = Socket::from(a);
    a.send(b"dg").unwrap();
    let b = std::os::unix::net::UnixDatagram::from(Socket::from(b));
    let n = b.recv(&mut d).unwrap();
    assert_eq!(&d[..n], b"dg");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn vectored_reads_and_writes_move_every_slice_in_order() {
    use std::io::{IoSlice, IoSliceMut};
    let (mut a, mut b) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    let n = a
        .write_vectored(&[
            IoSlice::new(b"one "),
            IoSlice::new(b""),
            IoSlice::new(b"two "),
            IoSlice::new(b"three"),
        ])
        .unwrap();
    assert_eq!(n, 13);
    let (mut x, mut y) = ([0u8; 6], [0u8; 16]);
    let n = b
        .read_vectored(&mut [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)])
        .unwrap();
    assert_eq!(n, 13);
    assert_eq!(&x, b"one tw");
    assert_eq!(&y[..7], b"o three");
    // A closed peer: writing fails with EPIPE (no SIGPIPE), and the
    // error keeps the call.
    drop(b);
    let e = a.send_vectored(&[IoSlice::new(b"x")]).unwrap_err();
    assert_eq!(e.call(), "sendmsg");
    assert_eq!(e.raw_os_error(), libc::EPIPE);
    let (c, d) = socketpair(Domain::UNIX, Type::STREAM).unwrap();
    drop(d);
    assert_eq!(c.recv_vectored(&mut [IoSliceMut::new(&mut x)]).unwrap(), 0);
}
