//! The cache server end to end: redis-cli (from Debian's redis-tools, which
//! `.ci/run` installs) and raw sockets against the example binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Server {
    let bin = common::example("cache_server");
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    Server { child, port }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (Debian package redis-tools; .ci/run installs it)");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until `n` CRLF-terminated lines arrived (simple replies only).
fn read_lines(s: &mut TcpStream, n: usize) -> Vec<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    while buf.windows(2).filter(|w| w == b"\r\n").count() < n {
        let k = s.read(&mut b).unwrap();
        assert!(k > 0, "closed early: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&b[..k]);
    }
    String::from_utf8_lossy(&buf)
        .split("\r\n")
        .take(n)
        .map(String::from)
        .collect()
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn redis_cli_commands() {
    let s = start(&[]);
    let p = s.port;
    assert_eq!(cli(p, &["ping"]), "PONG");
    assert_eq!(cli(p, &["echo", "hi there"]), "hi there");
    assert_eq!(cli(p, &["set", "k", "v"]), "OK");
    assert_eq!(cli(p, &["get", "k"]), "v");
    assert_eq!(cli(p, &["set", "k", "w", "NX"]), "");
    assert_eq!(cli(p, &["set", "k", "w", "XX"]), "OK");
    assert_eq!(cli(p, &["get", "k"]), "w");
    assert_eq!(cli(p, &["set", "new", "x", "XX"]), "");
    assert_eq!(cli(p, &["incr", "n"]), "1");
    assert_eq!(cli(p, &["incrby", "n", "41"]), "42");
    assert_eq!(cli(p, &["decr", "n"]), "41");
    assert_eq!(
        cli(p, &["incr", "k"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(cli(p, &["mset", "a", "1", "b", "2"]), "OK");
    // The nil third element prints as an empty line (trimmed here).
    assert_eq!(cli(p, &["mget", "a", "b", "zz"]), "1\n2");
    assert_eq!(cli(p, &["exists", "a", "b", "zz"]), "2");
    assert_eq!(cli(p, &["del", "a", "zz"]), "1");
    assert_eq!(cli(p, &["ttl", "b"]), "-1");
    assert_eq!(cli(p, &["expire", "b", "100"]), "1");
    assert_eq!(cli(p, &["ttl", "b"]), "100");
    assert_eq!(cli(p, &["ttl", "zz"]), "-2");
    assert_eq!(cli(p, &["dbsize"]), "3");
    assert!(cli(p, &["info"]).contains("db0:keys=3"));
    assert_eq!(
        cli(p, &["frobnicate", "x"]),
        "ERR unknown command 'frobnicate'"
    );
    assert_eq!(cli(p, &["flushall"]), "OK");
    assert_eq!(cli(p, &["dbsize"]), "0");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = start(&[]);
    let mut c = connect(s.port);
    let mut req = Vec::new();
    for i in 0..100 {
        req.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n$2\r\nk{}\r\n$1\r\n{}\r\n",
                i % 10,
                i % 10
            )
            .as_bytes(),
        );
        req.extend_from_slice(b"PING\r\n");
    }
    req.extend_from_slice(b"*2\r\n$6\r\nEXISTS\r\n$2\r\nk3\r\n");
    c.write_all(&req).unwrap();
    let lines = read_lines(&mut c, 201);
    for pair in lines[..200].chunks(2) {
        assert_eq!(pair, ["+OK", "+PONG"]);
    }
    assert_eq!(lines[200], ":1");
}

#[test]
fn keys_expire_lazily_and_by_the_timer() {
    let s = start(&[]);
    let p = s.port;
    assert_eq!(cli(p, &["set", "short", "v", "PX", "150"]), "OK");
    assert_eq!(cli(p, &["set", "long", "v", "EX", "100"]), "OK");
    assert_eq!(cli(p, &["get", "short"]), "v");
    // The timer removes it without anyone asking for it: DBSIZE drops.
    eventually("the timer expires 'short'", || cli(p, &["dbsize"]) == "1");
    assert_eq!(cli(p, &["get", "short"]), "");
    assert_eq!(cli(p, &["get", "long"]), "v");
}

#[test]
fn max_memory_evicts_the_least_recently_used() {
    let s = start(&["--max-memory", "20kb"]);
    let p = s.port;
    let value = "x".repeat(1000);
    for i in 0..10 {
        assert_eq!(cli(p, &["set", &format!("k{i}"), &value]), "OK");
    }
    // Use k0, so k1 is now the least recently used.
    assert_eq!(cli(p, &["get", "k0"]).len(), 1000);
    for i in 10..30 {
        cli(p, &["set", &format!("k{i}"), &value]);
    }
    assert_eq!(
        cli(p, &["get", "k1"]),
        "",
        "the least recently used went first"
    );
    assert_eq!(cli(p, &["get", "k29"]).len(), 1000, "the newest stays");
    let n: usize = cli(p, &["dbsize"]).parse().unwrap();
    assert!(n < 20 && n > 5, "{n} keys under a 20 KiB bound");
    let info = cli(p, &["info"]);
    let used: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(used <= 20 * 1024, "used {used}");
}

#[test]
fn read_through_from_the_data_dir_without_path_escape() {
    let dir: PathBuf = std::env::temp_dir().join(format!("procwire-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "from disk").unwrap();
    let s = start(&["--data-dir", dir.to_str().unwrap()]);
    let p = s.port;
    assert_eq!(cli(p, &["get", "hello.txt"]), "from disk");
    std::fs::remove_file(dir.join("hello.txt")).unwrap();
    assert_eq!(cli(p, &["get", "hello.txt"]), "from disk", "cached");
    assert_eq!(cli(p, &["get", "../../../../etc/hostname"]), "");
    assert_eq!(cli(p, &["get", ".."]), "");
    assert_eq!(cli(p, &["get", "missing"]), "");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_garbage_client_is_closed_while_another_keeps_working() {
    let s = start(&["--max-bulk", "1000"]);
    let mut good = connect(s.port);
    good.write_all(b"SET a 1\r\n").unwrap();
    assert_eq!(read_lines(&mut good, 1), ["+OK"]);
    for garbage in [&b"*x\r\n"[..], b"*1\r\n$5000\r\n", b"*1\r\n:3\r\n"] {
        let mut bad = connect(s.port);
        bad.write_all(garbage).unwrap();
        let mut reply = Vec::new();
        bad.read_to_end(&mut reply).unwrap();
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("-ERR Protocol error"), "{text:?}");
    }
    good.write_all(b"GET a\r\n").unwrap();
    assert_eq!(read_lines(&mut good, 2), ["$1", "1"]);
}

#[test]
fn redis_benchmark_runs_against_it() {
    let s = start(&[]);
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &s.port.to_string(),
            "-t",
            "set,get,incr,mset,ping",
            "-n",
            "2000",
            "-q",
        ])
        .output()
        .expect("redis-benchmark (Debian package redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for t in ["SET", "GET", "INCR", "MSET", "PING_MBULK"] {
        assert!(
            text.contains(t) && text.contains("requests per second"),
            "{text}"
        );
    }
}
