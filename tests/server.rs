//! The server building blocks under stress, in a child process: running out
//! of descriptors, and the echo programs end to end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procwire::net::event::{serve, EventLoop, Output, Protocol, ServerOptions};
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

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
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
        let opts = ServerOptions {
            accept_retry: Duration::from_millis(50),
            ..ServerOptions::default()
        };
        let _srv = serve(&lp, l, opts, |_| Echo).unwrap();
        lp.run().unwrap();
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "the_server_survives_running_out_of_descriptors",
            "--exact",
            "--nocapture",
            "-q",
        ])
        .env(ROLE, "emfile-server")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("ADDR ").map(String::from))
        .expect("the server's address");
    // Flood: far more connections than the server may hold fds for. They
    // complete in the kernel's backlog; the server accepts until EMFILE.
    let flood: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // While flooded, the server must back off, not spin.
    let pid = child.id();
    let c0 = cpu_seconds(pid);
    std::thread::sleep(Duration::from_millis(600));
    let spent = cpu_seconds(pid) - c0;
    assert!(
        spent < 0.3,
        "the server burned {spent:.2} s of CPU in 0.6 s while out of fds"
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
    assert!(child.try_wait().unwrap().is_none(), "the server died");
    child.kill().unwrap();
    child.wait().unwrap();
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
