//! The seed's programs, run as users run them: `peer_manager`, `allocator`
//! and `client`, and the shared-memory examples `shm_echo` and `shm_bench`
//! (built by `cargo test` into target/*/examples).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use procwire::sys::process::{kill, process_exists};
use procwire::sys::signal::Signal;

mod common;
use common::example;

/// Lines of a child's stdout, through a channel so reads can time out.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no line while waiting for {what}"))
}

fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pids from `peer_manager: started peer-I pid P port Q` lines.
fn started_pids(out: &[String]) -> Vec<i32> {
    out.iter()
        .filter_map(|l| l.strip_prefix("peer_manager: started "))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect()
}

fn assert_all_gone(pids: &[i32]) {
    // The manager reaped them before exiting; give the kernel a bounded
    // moment in case a pid is still being torn down.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| process_exists(p)) {
        assert!(Instant::now() < deadline, "processes left: {pids:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run_manager(args: &[&str]) -> (std::process::Output, Vec<String>) {
    let out = Command::new(example("peer_manager"))
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    (out, lines)
}

fn check_every_pair(lines: &[String], n: usize) {
    for i in 0..n {
        let me = format!("peer-{i}:");
        let line = lines
            .iter()
            .find(|l| l.starts_with(&me))
            .unwrap_or_else(|| panic!("no summary for peer-{i}"));
        // "... partners peer-2,peer-1, exit code 0"
        let partners: Vec<&str> = line
            .split("partners ")
            .nth(1)
            .and_then(|rest| rest.split(", ").next())
            .map(|list| list.split(',').collect())
            .unwrap_or_default();
        for j in (0..n).filter(|&j| j != i) {
            assert!(
                partners.contains(&format!("peer-{j}").as_str()),
                "peer-{i} never exchanged with peer-{j}: {line}"
            );
        }
        assert!(line.ends_with("exit code 0"), "{line}");
    }
}

#[test]
fn peer_manager_three_peers_for_three_seconds() {
    let (out, lines) = run_manager(&["3", "--duration", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_every_pair(&lines, 3);
    assert!(
        lines.iter().any(|l| l.contains("hello to port")),
        "one line per exchange is printed"
    );
    assert_all_gone(&started_pids(&lines));
}

#[test]
fn peer_manager_with_port_handoff() {
    let (out, lines) = run_manager(&["3", "--duration", "2", "--handoff", "port"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_every_pair(&lines, 3);
    assert_all_gone(&started_pids(&lines));
}

#[test]
fn peer_manager_exits_nonzero_naming_a_crashed_peer() {
    let (out, lines) = run_manager(&["3", "--crash", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("peer_manager: peer-1 ") && err.contains("SIGABRT"),
        "{err}"
    );
    assert_all_gone(&started_pids(&lines));
}

#[test]
fn ctrl_c_to_peer_manager_ends_every_peer() {
    let mut child = Command::new(example("peer_manager"))
        .arg("3")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    let mut seen = Vec::new();
    // Wait until all three started and the peers are talking.
    while started_pids(&seen).len() < 3 || !seen.iter().any(|l| l.contains("ack from")) {
        seen.push(next_line(&rx, "peers to start and talk"));
    }
    kill(child.id() as i32, Signal::INT).unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    assert!(status.success(), "stopped cleanly by Ctrl-C: {status:?}");
    seen.extend(rx.iter());
    assert!(
        seen.iter()
            .any(|l| l == "peer_manager: stopped (got SIGINT)"),
        "{seen:?}"
    );
    assert_all_gone(&started_pids(&seen));
}

fn allocator_round(args: &[&str]) {
    let mut child = Command::new(example("allocator"))
        .args(args)
        .args(["--exit-after", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    let first = next_line(&rx, "the allocator line");
    let addr = first
        .strip_prefix("Allocator: ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let second = next_line(&rx, "the client line");
    assert_eq!(second, format!("Client listening to: {addr}"));
    for _ in 0..2 {
        std::net::TcpStream::connect(&addr).unwrap();
        assert_eq!(
            next_line(&rx, "a connection line"),
            "Client received a connection"
        );
    }
    assert!(wait_bounded(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn allocator_hands_the_port_to_the_client() {
    allocator_round(&[]);
}

#[test]
fn allocator_hands_the_listening_socket_to_the_client() {
    allocator_round(&["--fd"]);
}

#[test]
fn shm_echo_server_echoes_each_client() {
    let path = std::env::temp_dir().join(format!("procwire-shm-echo-{}.sock", std::process::id()));
    let path = path.to_str().unwrap().to_string();
    let mut server = Command::new(example("shm_echo"))
        .args(["server", &path])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut server);
    assert_eq!(
        next_line(&rx, "the listening line"),
        format!("shm_echo listening on {path}")
    );
    // A short message, and one of 100 KiB that the server takes in
    // several reads.
    let long: String = (0..100 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    for msg in ["hello", long.as_str()] {
        let out = Command::new(example("shm_echo"))
            .args(["client", &path, msg])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let (echoed, rest) = text.split_once(" (").unwrap_or_else(|| panic!("{text}"));
        assert_eq!(echoed, msg);
        assert!(rest.ends_with(" round trip)\n"), "{rest}");
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn shm_bench_quick_prints_every_ratio() {
    let mut child = Command::new(example("shm_bench"))
        .args(["--quick", "--runs", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    assert!(wait_bounded(&mut child, Duration::from_secs(120)).success());
    // The reader thread ends with the child's stdout.
    let out: Vec<String> = rx.iter().collect();
    let ratios: Vec<&String> = out.iter().filter(|l| l.starts_with("RATIO ")).collect();
    // Against the floors: throughput in each placement, latency across
    // two CPUs (where there are two); against the socket: throughput, p50
    // and p99 in each placement; and the two ways to wake.
    let mut want = vec![];
    for p in ["one_cpu", "two_cpus", "unpinned"] {
        want.push(format!("throughput_vs_floor_{p}"));
        for m in ["throughput", "p50", "p99"] {
            want.push(format!("{m}_{p}"));
        }
    }
    if procwire::sys::cpu::available_cpus() > 1 {
        want.push("p50_vs_floor_two_cpus".into());
        want.push("p99_vs_floor_two_cpus".into());
    }
    want.push("wake_eventfd_vs_futex_p50".into());
    let mut names: Vec<String> = ratios
        .iter()
        .map(|r| {
            r["RATIO shm_bench/".len()..]
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    want.sort();
    assert_eq!(names, want, "{out:#?}");
    for r in ratios {
        let value: f64 = r
            .split(" = ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(value.is_finite() && value > 0.0, "{r}");
    }
    // One line of figures per placement, with the copy each run ended on.
    for p in ["one_cpu", "two_cpus", "unpinned"] {
        let line = out.iter().find(|l| l.starts_with(p)).expect(p);
        assert!(line.ends_with('p') || line.ends_with('s'), "{line}");
    }
}

/// Every program of the package, as `cargo test` builds them.
const PROGRAMS: &[&str] = &[
    "allocator",
    "cache_server",
    "client",
    "client_manager",
    "echo_client",
    "echo_server",
    "errors",
    "peer",
    "peer_manager",
    "port-for",
    "psp_client",
    "psp_server",
    "shm_bench",
    "shm_echo",
];

/// A pipe whose reading end is already closed: writing to it is `EPIPE`.
fn closed_pipe() -> Stdio {
    let (reader, writer) = procwire::sys::fd::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

#[test]
fn every_program_has_help_usage_errors_and_survives_a_closed_pipe() {
    for &prog in PROGRAMS {
        let help = Command::new(example(prog)).arg("--help").output().unwrap();
        let out = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{prog} --help: {:?}", help.status);
        assert!(
            out.to_lowercase().contains("usage"),
            "{prog} --help printed {out:?}"
        );
        assert!(help.stderr.is_empty(), "{prog} --help wrote to stderr");
        for bad in [&["--no-such-flag"][..], &["--help-me"]] {
            let r = Command::new(example(prog)).args(bad).output().unwrap();
            let err = String::from_utf8_lossy(&r.stderr);
            assert_eq!(r.status.code(), Some(2), "{prog} {bad:?}: {err}");
            assert!(
                err.to_lowercase().contains("usage"),
                "{prog} {bad:?} printed {err:?}"
            );
            assert!(r.stdout.is_empty(), "{prog} {bad:?} wrote to stdout");
        }
        let piped = Command::new(example(prog))
            .arg("--help")
            .stdout(closed_pipe())
            .output()
            .unwrap();
        assert!(
            piped.status.success(),
            "{prog} --help | (closed): {:?}",
            piped.status
        );
        assert!(
            piped.stderr.is_empty(),
            "{prog} --help into a closed pipe: {}",
            String::from_utf8_lossy(&piped.stderr)
        );
    }
    // Bad values are usage errors too.
    for (prog, args) in [
        ("shm_bench", &["--runs", "x"][..]),
        ("shm_bench", &["--placement", "nowhere"]),
        ("cache_server", &["--port", "x"]),
        ("cache_server", &["--max-memory", "5zb"]),
        ("port-for", &["name", "-p", "x"]),
        ("allocator", &["--exit-after", "x"]),
        ("shm_echo", &["client"]),
        ("errors", &["extra"]),
        ("echo_server", &["--busy-poll", "-1"]),
        ("peer_manager", &["three"]),
    ] {
        let r = Command::new(example(prog)).args(args).output().unwrap();
        assert_eq!(
            r.status.code(),
            Some(2),
            "{prog} {args:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
}

#[test]
fn port_for_list_into_a_closed_pipe_ends_quietly() {
    let dir = std::env::temp_dir().join(format!("procwire-pf-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("port-for.conf");
    let mut text = String::from("[DEFAULT]\n");
    for i in 0..5000 {
        text.push_str(&format!("name{i} = {}\n", 20000 + i));
    }
    std::fs::write(&conf, text).unwrap();
    let r = Command::new(example("port-for"))
        .args(["--conf", conf.to_str().unwrap(), "--list"])
        .stdout(closed_pipe())
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(r.status.success(), "{:?}", r.status);
    assert!(
        r.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

#[test]
fn a_server_whose_stdout_closes_goes_on_serving() {
    use std::io::{Read, Write};
    let dir = std::env::temp_dir().join(format!("procwire-cs-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("c.sock");
    let mut child = Command::new(example("cache_server"))
        .args(["--no-tcp", "--unix", sock.to_str().unwrap()])
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut c = loop {
        if let Ok(c) = std::os::unix::net::UnixStream::connect(&sock) {
            break c;
        }
        assert!(child.try_wait().unwrap().is_none(), "the server died");
        assert!(Instant::now() < deadline, "never listened");
        std::thread::sleep(Duration::from_millis(10));
    };
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"PING\r\n").unwrap();
    let mut b = [0u8; 7];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"+PONG\r\n");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The installable binaries are the same programs as the examples.
#[test]
fn the_installed_binaries_are_the_example_programs() {
    for (bin, ex) in [
        (env!("CARGO_BIN_EXE_port-for"), "port-for"),
        (env!("CARGO_BIN_EXE_portserver"), "portserver"),
        (env!("CARGO_BIN_EXE_cache_server"), "cache_server"),
    ] {
        let a = Command::new(bin).arg("--help").output().unwrap();
        let b = Command::new(example(ex)).arg("--help").output().unwrap();
        assert!(a.status.success(), "{bin}");
        assert_eq!(a.stdout, b.stdout, "{bin}");
        let bad = Command::new(bin).arg("--no-such-flag").output().unwrap();
        assert_eq!(bad.status.code(), Some(2), "{bin}");
    }
}
