//! The `portserver` program by the protocol of Python's portpicker: our
//! client, junk and silent clients, and the real `portpicker` package
//! (installed by `scripts/client-libs.sh`) pointed at it by
//! `PORTSERVER_ADDRESS`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use procwire::net::port::portserver::request_port;

const WAIT: Duration = Duration::from_secs(30);

/// A running portserver on an abstract name of its own, killed on drop.
struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first line `child` prints (its stdout is then closed).
fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

fn start(pool: &str) -> Server {
    static N: AtomicU32 = AtomicU32::new(0);
    let address = format!(
        "@procwire-test-portserver-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut child = Command::new(common::example("portserver"))
        .arg(format!("--portserver_address={address}"))
        .arg(format!("--portserver_static_pool={pool}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut child);
    assert!(line.starts_with("portserver listening on "), "{line}");
    Server { child, address }
}

/// The raw reply to `request` (as bytes sent on a fresh connection).
fn raw(s: &Server, request: &[u8]) -> String {
    let mut c = connect_abstract(&s.address[1..]);
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(request).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

fn connect_abstract(name: &str) -> UnixStream {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
    UnixStream::connect_addr(&addr).unwrap()
}

#[test]
fn each_request_gets_its_own_port_and_junk_gets_zero() {
    let s = start("20000-20999");
    let me = std::process::id();
    // A client that connects and says nothing holds no one up.
    let _silent = connect_abstract(&s.address[1..]);
    let mut ports: Vec<u16> = (0..20)
        .map(|_| request_port(&s.address, me, WAIT).unwrap())
        .collect();
    assert!(
        ports.iter().all(|p| (20000..=20999).contains(p)),
        "{ports:?}"
    );
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 20, "a port went out twice");
    for junk in [&b"junk\n"[..], b"0\n", b"-1\n", b"1\n", b"4294967295\n"] {
        assert_eq!(raw(&s, junk), "0\n", "{junk:?}");
    }
    // A line longer than any pid, without a newline.
    assert_eq!(raw(&s, &[b'7'; 40]), "0\n");
    // A pid that is not alive.
    let mut c = Command::new("true").spawn().unwrap();
    let dead = c.id();
    c.wait().unwrap();
    assert_eq!(raw(&s, format!("{dead}\n").as_bytes()), "0\n");
    // A pool of one, held by this live process: nothing more.
    let one = start("21000");
    assert_eq!(request_port(&one.address, me, WAIT).unwrap(), 21000);
    let e = request_port(&one.address, me, WAIT).unwrap_err();
    assert_eq!(e.raw_os_error(), libc::EADDRNOTAVAIL, "{e}");
}

/// Where `scripts/client-libs.sh` put the Python packages.
fn python_libs() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("client-libs/python")
}

/// A Python process that asks portpicker for a port, prints it, and lives
/// until its stdin closes.
fn python_holder(s: &Server) -> (Child, u16) {
    let mut c = Command::new("python3")
        .arg("-c")
        .arg("import sys, portpicker\nprint(portpicker.pick_unused_port(), flush=True)\nsys.stdin.read()")
        .env("PYTHONPATH", python_libs())
        .env("PORTSERVER_ADDRESS", &s.address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut c);
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("portpicker printed {line:?}"));
    (c, port)
}

#[test]
fn python_portpicker_gets_distinct_ports_until_their_holders_exit() {
    if Command::new("python3").arg("-V").output().is_err() {
        println!("skipped: python3 not installed (apt-get install python3)");
        return;
    }
    if !python_libs().join("portpicker").exists() && !python_libs().join("portpicker.py").exists() {
        println!("skipped: portpicker not installed (bash scripts/client-libs.sh)");
        return;
    }
    // Three ports, four Python processes: the fourth gets none while the
    // first three live, and one once one of them exited.
    let s = start("22000-22002");
    let holders: Vec<(Child, u16)> = (0..3).map(|_| python_holder(&s)).collect();
    let mut ports: Vec<u16> = holders.iter().map(|h| h.1).collect();
    ports.sort_unstable();
    assert_eq!(ports, vec![22000, 22001, 22002]);
    let out = Command::new("python3")
        .arg("-c")
        .arg("import portpicker\nprint(portpicker.get_port_from_port_server(__import__('os').environ['PORTSERVER_ADDRESS']))")
        .env("PYTHONPATH", python_libs())
        .env("PORTSERVER_ADDRESS", &s.address)
        .output()
        .unwrap();
    // "0" from the server; portpicker returns it as 0 or None by version.
    let none = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(none == "0" || none == "None", "{none:?}");
    let mut holders = holders;
    let (mut first, port) = holders.remove(0);
    drop(first.stdin.take());
    first.wait().unwrap();
    let (mut again, got) = python_holder(&s);
    assert_eq!(got, port, "the exited holder's port is offered again");
    for (mut c, _) in holders {
        drop(c.stdin.take());
        c.wait().unwrap();
    }
    drop(again.stdin.take());
    again.wait().unwrap();
}
