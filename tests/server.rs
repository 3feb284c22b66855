//! The server building blocks under stress, in a child process: running out
//! of descriptors, and the echo programs end to end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procwire::net::event::EventLoop;
use procwire::net::server::{serve, Output, Protocol, ServerOptions};
use procwire::sys::process::set_open_files_limit;
use procwire::sys::socket::{Domain, Socket, Type};

mod common;
use common::example;

const ROLE: &str = "PROCWIRE_TEST_ROLE";

struct Echo;

impl Protocol for Echo {
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> std::io::Result<usize> {
        out.write(input)?;
        Ok(input.len())
    }
}

/// A child process that is killed and reaped however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The number of fds process `pid` has open (Linux).
fn open_fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .count()
}

fn echo_once(addr: &str) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"ping")?;
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    assert_eq!(&b, b"ping");
    Ok(())
}

#[cfg(target_os = "linux")]
#[test]
fn the_server_survives_running_out_of_descriptors() {
    if std::env::var(ROLE).as_deref() == Ok("emfile-server") {
        set_open_files_limit(40).unwrap();
        let lp = EventLoop::new().unwrap();
        let l = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
        l.bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
            .unwrap();
        l.listen(1024).unwrap();
        println!("ADDR {}", l.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
        let opts = ServerOptions::default().accept_retry(Duration::from_millis(50));
        let _srv = serve(&lp, l, opts, |_| Echo).unwrap();
        lp.run().unwrap();
        return;
    }
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "the_server_survives_running_out_of_descriptors",
                "--exact",
                "--nocapture",
                "-q",
            ])
            .env(ROLE, "emfile-server")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let addr = BufReader::new(child.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("ADDR ").map(String::from))
        .expect("the server's address");
    // Flood: far more connections than the server may hold fds for. They
    // complete in the kernel's backlog; the server accepts until EMFILE.
    let flood: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // Wait until the server has taken every fd it may have (its limit is
    // 40): from then on each accept fails with EMFILE.
    let pid = child.0.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds_of(pid) < 38 {
        assert!(Instant::now() < deadline, "the server never ran out of fds");
        std::thread::sleep(Duration::from_millis(5));
    }
    // While flooded, the server must back off, not spin: over a window of
    // 600 ms (a measurement, not a synchronisation), it may use a fraction.
    let cpu = || procwire::sys::process::cpu_time_of(pid as i32).unwrap();
    let (c0, t0) = (cpu(), Instant::now());
    std::thread::sleep(Duration::from_millis(600));
    let (spent, window) = (cpu() - c0, t0.elapsed());
    assert!(
        spent < window / 2,
        "the server burned {spent:?} of CPU in {window:?} while out of fds"
    );
    drop(flood);
    // Once the clients close, it serves a new connection (within bounds).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match echo_once(&addr) {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "never served again: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    assert!(child.0.try_wait().unwrap().is_none(), "the server died");
}

#[test]
fn echo_server_and_client_over_tcp_and_unix() {
    for unix in [false, true] {
        let path = std::env::temp_dir().join(format!("procwire-echo-{}.sock", std::process::id()));
        let mut cmd = Command::new(example("echo_server"));
        if unix {
            cmd.arg("--unix").arg(&path);
        }
        let mut server = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let line = BufReader::new(server.stdout.take().unwrap())
            .lines()
            .next()
            .unwrap()
            .unwrap();
        let addr = line
            .strip_prefix("echo_server listening on ")
            .expect(&line)
            .to_string();
        let out = Command::new(example("echo_client"))
            .args([
                &addr,
                "--connections",
                "20",
                "--rounds",
                "200",
                "--size",
                "100",
                "--inflight",
                "4",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.starts_with("messages: 4000, "), "{text}");
        // SIGTERM stops the server cleanly (and removes its socket file).
        procwire::sys::process::kill(server.id() as i32, procwire::sys::signal::Signal::TERM)
            .unwrap();
        assert!(server.wait().unwrap().success());
        if unix {
            assert!(!path.exists());
        }
    }
}
