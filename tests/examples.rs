//! The seed's programs, run as users run them: `peer_manager`, `allocator`
//! and `client`, and the shared-memory examples `shm_echo` and `shm_bench`
//! (built by `cargo test` into target/*/examples).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use procwire::sys::process::{kill, process_exists, Signal};

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
    // Throughput, p50 and p99 in three placements, and the two ways to wake.
    assert_eq!(ratios.len(), 10, "{out:#?}");
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
    if procwire::sys::cpu::available_cpus() > 1 {
        let floors = out
            .iter()
            .filter(|l| l.starts_with("floor two_cpus"))
            .count();
        assert_eq!(floors, 4, "{out:#?}");
    }
}
