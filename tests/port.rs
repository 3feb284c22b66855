//! Port reservations and hand-off, with real sockets and real child
//! processes (this test binary re-run with a role in its environment).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use procwire::net::port::{
    listen_fds, pass_listeners, reserve_many, reserve_time_wait, Reservation, ReservationBuilder,
    ReservedBind, Transport,
};
use procwire::sys::process::{getpid, Spawn};
use procwire::sys::socket::{Domain, Socket, Type};

const ROLE: &str = "PROCWIRE_TEST_ROLE";
const LOCAL4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// This test binary, re-run to execute only `test` in the given role.
fn helper(test: &str, role: &str) -> Spawn<'static> {
    let mut s = Spawn::new(std::env::current_exe().unwrap());
    s.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE, role);
    s
}

fn outsider(addr: SocketAddr, reuse_address: bool, ty: Type) -> procwire::sys::Result<Socket> {
    let s = Socket::new(
        if addr.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        },
        ty,
    )?;
    if reuse_address {
        s.set_reuse_address(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(addr)?;
    Ok(s)
}

/// Passes `r`'s listener to `spawn` as "web", starts it, and returns what
/// the child sent on one connection (read until it closes, within a
/// minute) and how it exited.
fn hand_off_and_read<'a>(
    mut spawn: Spawn<'a>,
    r: &'a Reservation,
) -> (String, procwire::sys::process::ExitStatus) {
    let (_, l) = r.tcp_sockets().next().unwrap();
    pass_listeners(&mut spawn, &[("web", l.as_fd())]).unwrap();
    let mut child = spawn.spawn().unwrap();
    let c = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    c.connect(r.addr()).unwrap();
    let mut got = String::new();
    (&c).read_to_string(&mut got).unwrap();
    (got, child.wait().unwrap())
}

#[test]
fn default_reservation_keeps_outsiders_out_and_lets_the_child_in() {
    let r = Reservation::new("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = r.addr();
    assert_ne!(r.port(), 0);
    for reuse in [false, true] {
        let e = outsider(addr, reuse, Type::STREAM).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            libc::EADDRINUSE,
            "outsider with SO_REUSEADDR={reuse}: {e}"
        );
        assert!(e.to_string().starts_with(&format!("bind({addr}): ")), "{e}");
    }
    // The child joins with SO_REUSEPORT, listens and accepts.
    let child = ReservedBind::new(addr).listen().unwrap();
    let c = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
    c.connect(addr).unwrap();
    let (s, _) = child.accept().unwrap();
    s.send(b"hi").unwrap();
    let mut b = [0u8; 2];
    (&c).read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hi");
}

#[test]
fn seed_pair_lets_a_reuseaddr_outsider_bind_and_listen() {
    let r = ReservationBuilder::new(LOCAL4)
        .reuse_address(true)
        .reserve()
        .unwrap();
    let o = outsider(r.addr(), true, Type::STREAM)
        .expect("with the pair an SO_REUSEADDR outsider binds");
    o.listen(1)
        .expect("and listens: this is why the default differs");
    assert_eq!(
        outsider(r.addr(), false, Type::STREAM)
            .unwrap_err()
            .raw_os_error(),
        libc::EADDRINUSE
    );
}

#[test]
fn both_loopback_families_are_held() {
    let r = Reservation::localhost().unwrap();
    let p = r.port();
    assert_eq!(
        outsider(
            SocketAddr::from((Ipv4Addr::LOCALHOST, p)),
            false,
            Type::STREAM
        )
        .unwrap_err()
        .raw_os_error(),
        libc::EADDRINUSE
    );
    if let Some(note) = r.note() {
        eprintln!("skipped the IPv6 half: {note}");
        return;
    }
    assert_eq!(r.addrs().len(), 2);
    for reuse in [false, true] {
        let e = outsider(
            SocketAddr::from((Ipv6Addr::LOCALHOST, p)),
            reuse,
            Type::STREAM,
        )
        .unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            libc::EADDRINUSE,
            "[::1]:{p} with SO_REUSEADDR={reuse}: {e}"
        );
    }
    // The child can join on both.
    let _joined = ReservedBind::new(SocketAddr::from((Ipv6Addr::LOCALHOST, p)))
        .listen()
        .unwrap();
}

#[test]
fn tcp_and_udp_share_one_number_and_the_udp_child_gets_every_datagram() {
    let r = ReservationBuilder::new(LOCAL4)
        .transport(Transport::TcpAndUdp)
        .reserve()
        .unwrap();
    let addr = r.addr();
    assert_eq!((r.tcp_sockets().count(), r.udp_sockets().count()), (1, 1));
    assert_eq!(
        outsider(addr, false, Type::STREAM)
            .unwrap_err()
            .raw_os_error(),
        libc::EADDRINUSE
    );
    assert_eq!(
        outsider(addr, false, Type::DGRAM)
            .unwrap_err()
            .raw_os_error(),
        libc::EADDRINUSE
    );
    let child = ReservedBind::new(addr).udp().unwrap();
    child.set_nonblocking(true).unwrap();
    for i in 0..50u8 {
        let s = Socket::new(Domain::IPV4, Type::DGRAM).unwrap();
        s.send_to(&[i], addr).unwrap();
    }
    let mut got = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while got < 50 && std::time::Instant::now() < deadline {
        match child.recv(&mut [0u8; 4]) {
            Ok(_) => got += 1,
            Err(e) if e.is_would_block() => std::thread::sleep(std::time::Duration::from_millis(1)),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        got, 50,
        "the hold, connected to itself, takes none of the child's datagrams"
    );
}

#[test]
fn reserve_many_gives_distinct_ports() {
    let rs = reserve_many(50).unwrap();
    let ports: HashSet<u16> = rs.iter().map(Reservation::port).collect();
    assert_eq!(ports.len(), 50);
}

#[test]
fn eight_processes_holding_500_each_get_4000_distinct_ports() {
    if role().as_deref() == Some("hold-500") {
        let rs = reserve_many(500).unwrap();
        let line: Vec<String> = rs.iter().map(|r| r.port().to_string()).collect();
        println!("PORTS {}", line.join(" "));
        std::io::stdout().flush().unwrap();
        // Hold them until the parent closes our stdin.
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        drop(rs);
        std::process::exit(0);
    }
    let mut children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "eight_processes_holding_500_each_get_4000_distinct_ports",
                    "--exact",
                    "--nocapture",
                    "-q",
                ])
                .env(ROLE, "hold-500")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut all = Vec::new();
    for c in &mut children {
        let out = c.stdout.take().unwrap();
        let line = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("PORTS "))
            .expect("a helper reported its ports");
        all.extend(line[6..].split(' ').map(|p| p.parse::<u16>().unwrap()));
    }
    // All 8 hold their 500 at this point.
    let distinct: HashSet<u16> = all.iter().copied().collect();
    assert_eq!((all.len(), distinct.len()), (4000, 4000));
    for mut c in children {
        drop(c.stdin.take());
        assert!(c.wait().unwrap().success());
    }
}

#[test]
fn socket_activation_child_accepts_on_fd_3() {
    if role().as_deref() == Some("activated") {
        let fds = listen_fds().unwrap();
        assert_eq!(fds.len(), 1);
        assert_eq!(fds[0].name, "web");
        assert!(
            std::env::var_os("LISTEN_FDS").is_none(),
            "the variables are removed"
        );
        assert!(
            listen_fds().unwrap().is_empty(),
            "a second call takes nothing"
        );
        use std::os::fd::AsRawFd;
        assert_eq!(fds[0].socket.as_raw_fd(), 3);
        assert!(procwire::sys::fd::is_cloexec(fds[0].socket.as_fd()).unwrap());
        let (c, _) = fds[0].socket.accept().unwrap();
        c.send(b"activated").unwrap();
        std::process::exit(0);
    }
    let r = Reservation::new("127.0.0.1:0".parse().unwrap()).unwrap();
    r.listen(8).unwrap();
    let spawn = helper("socket_activation_child_accepts_on_fd_3", "activated");
    let (got, status) = hand_off_and_read(spawn, &r);
    assert_eq!(got, "activated");
    assert!(status.success());
}

#[test]
fn socket_activation_for_another_pid_gives_nothing() {
    if role().as_deref() == Some("wrong-pid") {
        let fds = listen_fds().unwrap();
        let gone =
            std::env::var_os("LISTEN_PID").is_none() && std::env::var_os("LISTEN_FDS").is_none();
        std::process::exit(if fds.is_empty() && gone { 0 } else { 1 });
    }
    let (a, _b) = procwire::sys::socket::socketpair(Domain::UNIX, Type::STREAM).unwrap();
    let mut spawn = helper(
        "socket_activation_for_another_pid_gives_nothing",
        "wrong-pid",
    );
    // This process's pid, not the child's: the sockets are not for it.
    spawn
        .fd(a.as_fd(), 3)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", getpid().to_string());
    assert!(spawn.spawn().unwrap().wait().unwrap().success());
}

#[test]
fn listen_fds_rejects_garbage() {
    if role().as_deref() == Some("garbage") {
        let e = listen_fds().unwrap_err();
        assert!(e.to_string().contains("LISTEN_FDS=\"many\""), "{e}");
        std::process::exit(0);
    }
    let mut spawn = helper("listen_fds_rejects_garbage", "garbage");
    spawn.env("LISTEN_FDS", "many").env_pid("LISTEN_PID");
    assert!(spawn.spawn().unwrap().wait().unwrap().success());
}

#[test]
fn time_wait_reservation_is_skipped_by_autobind_and_open_to_reuseaddr() {
    let p = reserve_time_wait(LOCAL4).unwrap();
    for _ in 0..1000 {
        let s = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
        s.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        assert_ne!(
            s.local_addr().unwrap().port(),
            Some(p),
            "autobind handed out the TIME_WAIT port"
        );
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p));
    assert_eq!(
        outsider(addr, false, Type::STREAM)
            .unwrap_err()
            .raw_os_error(),
        libc::EADDRINUSE
    );
    // The child that can only set SO_REUSEADDR binds and listens.
    let child = outsider(addr, true, Type::STREAM).unwrap();
    child.listen(1).unwrap();
}

#[test]
fn spawn_reports_exec_failure_and_sets_the_pid_variable() {
    if role().as_deref() == Some("pid-var") {
        let v = std::env::var("MY_PID").unwrap();
        std::process::exit(if v == std::process::id().to_string() {
            0
        } else {
            1
        });
    }
    let mut s = helper(
        "spawn_reports_exec_failure_and_sets_the_pid_variable",
        "pid-var",
    );
    s.env_pid("MY_PID");
    assert!(
        s.spawn().unwrap().wait().unwrap().success(),
        "MY_PID is the child's own pid"
    );

    let e = Spawn::new("/nonexistent/procwire").spawn().unwrap_err();
    assert_eq!(
        e.to_string(),
        "execve(/nonexistent/procwire): No such file or directory (os error 2)"
    );
    let e = Spawn::new("procwire-no-such-program").spawn().unwrap_err();
    assert_eq!(
        e.to_string(),
        "spawn(procwire-no-such-program): No such file or directory (os error 2)"
    );
    let dir = std::env::temp_dir();
    let e = Spawn::new(&dir).spawn().unwrap_err();
    assert_eq!(e.call(), "execve");
    assert_eq!(e.raw_os_error(), libc::EACCES);
}

/// The fds are checked and typed: family, type, listening; each `into_*`
/// takes only its kind, and says what the fd is otherwise.
#[test]
fn activation_types_each_fd_and_refuses_the_wrong_conversion() {
    if role().as_deref() == Some("typed") {
        let fds = listen_fds().unwrap();
        let kinds: Vec<_> = fds
            .iter()
            .map(|f| (f.fd, f.name.as_str(), f.domain, f.ty, f.listening))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (3, "web", Domain::IPV4, Type::STREAM, true),
                (4, "dns", Domain::IPV4, Type::DGRAM, false),
                (5, "unknown", Domain::UNIX, Type::STREAM, true),
            ]
        );
        let mut it = fds.into_iter();
        let web = it.next().unwrap();
        let udp = it.next().unwrap();
        let unix = it.next().unwrap();
        let e = udp.into_tcp_listener().unwrap_err();
        assert_eq!(e.raw_os_error(), libc::EINVAL);
        assert!(
            e.to_string()
                .contains("fd 4 \"dns\" is a IPv4 datagram socket, not a listening TCP socket"),
            "{e}"
        );
        let e = web.into_unix_listener().unwrap_err();
        assert!(
            e.to_string().contains("listening IPv4 stream socket"),
            "{e}"
        );
        let l = unix.into_unix_listener().unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.write_all(b"typed").unwrap();
        std::process::exit(0);
    }
    let r = Reservation::new("127.0.0.1:0".parse().unwrap()).unwrap();
    r.listen(8).unwrap();
    let (_, l) = r.tcp_sockets().next().unwrap();
    let u = Socket::new(Domain::IPV4, Type::DGRAM).unwrap();
    u.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    let dir = std::env::temp_dir().join(format!("procwire-typed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s");
    let ul = Socket::new(Domain::UNIX, Type::STREAM).unwrap();
    ul.bind(path.as_path()).unwrap();
    ul.listen(4).unwrap();
    let mut spawn = helper(
        "activation_types_each_fd_and_refuses_the_wrong_conversion",
        "typed",
    );
    pass_listeners(
        &mut spawn,
        &[("web", l.as_fd()), ("dns", u.as_fd()), ("", ul.as_fd())],
    )
    .unwrap();
    let mut child = spawn.spawn().unwrap();
    // Only the child holds the sockets now: if it dies, the connect or the
    // read fails instead of waiting.
    drop((r, u, ul));
    let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert_eq!(got, "typed");
    assert!(child.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A promised fd that is not a socket is refused by number; a missing
/// `LISTEN_PID` takes nothing unless allowed; the variables stay when
/// asked to.
#[test]
fn activation_refuses_non_sockets_and_follows_its_choices() {
    use procwire::net::port::Activation;
    match role().as_deref() {
        Some("pipe") => {
            let e = listen_fds().unwrap_err();
            assert_eq!(e.raw_os_error(), libc::ENOTSOCK, "{e}");
            assert!(e.to_string().contains("fd 3 (of LISTEN_FDS=1)"), "{e}");
            std::process::exit(0);
        }
        Some("no-pid") => {
            let keep = Activation::new().remove_variables(false);
            assert!(keep.take().unwrap().is_empty(), "no LISTEN_PID: not ours");
            assert_eq!(std::env::var("LISTEN_FDS").as_deref(), Ok("1"));
            let fds = keep.allow_missing_pid(true).take().unwrap();
            assert_eq!(fds.len(), 1);
            assert_eq!(std::env::var("LISTEN_FDS").as_deref(), Ok("1"), "kept");
            assert!(fds.into_iter().next().unwrap().into_tcp_listener().is_ok());
            std::process::exit(0);
        }
        _ => {}
    }
    let test = "activation_refuses_non_sockets_and_follows_its_choices";
    let (rd, _wr) = procwire::sys::fd::pipe().unwrap();
    let mut spawn = helper(test, "pipe");
    spawn
        .fd(rd.as_fd(), 3)
        .env("LISTEN_FDS", "1")
        .env_pid("LISTEN_PID");
    assert!(spawn.spawn().unwrap().wait().unwrap().success());

    let r = Reservation::new("127.0.0.1:0".parse().unwrap()).unwrap();
    r.listen(8).unwrap();
    let (_, l) = r.tcp_sockets().next().unwrap();
    let mut spawn = helper(test, "no-pid");
    spawn.fd(l.as_fd(), 3).env("LISTEN_FDS", "1");
    assert!(spawn.spawn().unwrap().wait().unwrap().success());
}

/// Our hand-off, taken by the `listenfd` crate in the child.
#[test]
fn a_child_using_the_listenfd_crate_accepts_our_hand_off() {
    if role().as_deref() == Some("listenfd") {
        let mut fds = listenfd::ListenFd::from_env();
        assert_eq!(fds.len(), 1);
        let l = fds.take_tcp_listener(0).unwrap().expect("a TCP listener");
        let (mut c, _) = l.accept().unwrap();
        c.write_all(b"listenfd").unwrap();
        std::process::exit(0);
    }
    let r = Reservation::new("127.0.0.1:0".parse().unwrap()).unwrap();
    r.listen(8).unwrap();
    let spawn = helper(
        "a_child_using_the_listenfd_crate_accepts_our_hand_off",
        "listenfd",
    );
    let (got, status) = hand_off_and_read(spawn, &r);
    assert_eq!(got, "listenfd");
    assert!(status.success());
}

/// Our hand-off, taken by libsystemd's own `sd_listen_fds` and
/// `sd_is_socket` in a small C program.
#[test]
fn a_c_child_using_sd_listen_fds_accepts_our_hand_off() {
    const SRC: &str = r#"
#include <systemd/sd-daemon.h>
#include <sys/socket.h>
#include <unistd.h>
#include <string.h>
int main(void) {
    char **names = NULL;
    int n = sd_listen_fds_with_names(1, &names);
    if (n != 1 || strcmp(names[0], "web") != 0) return 2;
    if (sd_is_socket(SD_LISTEN_FDS_START, AF_INET, SOCK_STREAM, 1) <= 0) return 3;
    int c = accept(SD_LISTEN_FDS_START, NULL, NULL);
    if (c < 0) return 4;
    if (write(c, "sd_listen_fds", 13) != 13) return 5;
    return 0;
}
"#;
    let dir = std::env::temp_dir().join(format!("procwire-sd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (src, exe) = (dir.join("sd.c"), dir.join("sd"));
    std::fs::write(&src, SRC).unwrap();
    let built = std::process::Command::new("cc")
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg("-lsystemd")
        .output();
    match built {
        Ok(o) if o.status.success() => {}
        _ => {
            std::fs::remove_dir_all(&dir).unwrap();
            println!(
                "skipped: no C compiler with libsystemd here (apt-get install gcc libsystemd-dev)"
            );
            return;
        }
    }
    let r = Reservation::new("127.0.0.1:0".parse().unwrap()).unwrap();
    r.listen(8).unwrap();
    let (got, status) = hand_off_and_read(Spawn::new(&exe), &r);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(got, "sd_listen_fds");
    assert!(status.success(), "{status}");
}
