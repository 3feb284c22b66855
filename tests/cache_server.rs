//! The cache server end to end, through a real Redis client (the `redis`
//! crate, over RESP2 and RESP3) and raw RESP over sockets, against the
//! example binary. The tests whose point is a Debian tool (`redis-cli`,
//! `redis-benchmark`) run where it is installed (`.ci/run` installs it) and
//! otherwise print one `skipped:` line and pass; so do the ones that drive
//! the Python and Node clients (`scripts/client-libs.sh` installs them).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use procwire::net::resp::parse_reply;
use redis::{Commands, Connection, FromRedisValue, Value};

mod common;

// The server's glob matcher, whose unit tests run here (an example's own
// tests would keep `cargo test` from building the example itself).
#[allow(dead_code)]
#[path = "../examples/cache_server/glob.rs"]
mod glob;

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    fn sock(&self) -> PathBuf {
        self.dir.join("cache.sock")
    }
}

/// A scratch directory of this test process, unique per call.
fn scratch(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "procwire-cache-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts the server; `{dir}` in an argument becomes its scratch directory.
fn start(args: &[&str]) -> Server {
    let dir = scratch("srv");
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{dir}", dir.to_str().unwrap()))
        .collect();
    let mut child = Command::new(common::example("cache_server"))
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // One line per listener; the rest of its output is drained, so the
    // server never writes into a closed pipe.
    let listeners = usize::from(!args.iter().any(|a| a == "--no-tcp"))
        + usize::from(args.iter().any(|a| a == "--unix"));
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut port = 0;
    for _ in 0..listeners {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("cache_server says where it listens");
        if let Some(p) = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()) {
            port = p;
        }
    }
    Server { child, port, dir }
}

fn client(s: &Server, proto: u8) -> Connection {
    let url = match proto {
        3 => format!("redis://127.0.0.1:{}/?protocol=resp3", s.port),
        _ => format!("redis://127.0.0.1:{}/", s.port),
    };
    let c = redis::Client::open(url).unwrap();
    let con = c
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    con
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// The reply of a command that must succeed.
fn q<T: FromRedisValue>(c: &mut Connection, args: &[&str]) -> T {
    cmd(args)
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The error text (`CODE detail`) of a command that must fail.
fn e(c: &mut Connection, args: &[&str]) -> String {
    match cmd(args).query::<Value>(c) {
        Ok(v) => panic!("{args:?} succeeded: {v:?}"),
        Err(e) => format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or("")),
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// A raw RESP connection that reads one whole reply at a time (framed by
/// the library's own reply parser).
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn new(port: u16) -> Raw {
        Raw {
            s: connect(port),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, req: &str) {
        self.s.write_all(req.as_bytes()).unwrap();
    }

    /// The next reply's bytes, exactly.
    fn reply(&mut self) -> String {
        loop {
            if let Some((_, n)) = parse_reply(&self.buf, 1 << 30).unwrap() {
                let r: Vec<u8> = self.buf.drain(..n).collect();
                return String::from_utf8_lossy(&r).into_owned();
            }
            let mut b = [0u8; 65536];
            let k = self.s.read(&mut b).unwrap();
            assert!(
                k > 0,
                "closed; unparsed: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&b[..k]);
        }
    }

    fn expect(&mut self, want: &str) {
        assert_eq!(self.reply(), want);
    }
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

/// Where an outside program is on `PATH`, or a `skipped:` line.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    if found.is_none() {
        println!("skipped: {name} not installed (apt-get install {package})");
    }
    found
}

#[test]
fn connection_commands_over_both_protocols() {
    let s = start(&[]);
    for proto in [2u8, 3] {
        let mut c = client(&s, proto);
        assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
        assert_eq!(q::<String>(&mut c, &["PING", "hi"]), "hi");
        assert_eq!(q::<String>(&mut c, &["ECHO", "hi there"]), "hi there");
        assert_eq!(q::<String>(&mut c, &["SELECT", "0"]), "OK");
        assert_eq!(e(&mut c, &["SELECT", "1"]), "ERR DB index is out of range");
        assert_eq!(
            e(&mut c, &["SELECT", "x"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(q::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]), None);
        assert_eq!(
            q::<String>(&mut c, &["CLIENT", "SETNAME", "worker-1"]),
            "OK"
        );
        assert_eq!(q::<String>(&mut c, &["CLIENT", "GETNAME"]), "worker-1");
        assert_eq!(
            e(&mut c, &["CLIENT", "SETNAME", "two words"]),
            "ERR Client names cannot contain spaces, newlines or special characters."
        );
        let id: i64 = q(&mut c, &["CLIENT", "ID"]);
        assert!(id > 0);
        // The client library introduced itself on connecting.
        let mine: String = q(&mut c, &["CLIENT", "INFO"]);
        assert!(mine.contains("lib-name=redis-rs "), "{mine}");
        assert_eq!(
            q::<String>(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", "mylib"]),
            "OK"
        );
        assert_eq!(
            q::<String>(&mut c, &["CLIENT", "SETINFO", "lib-ver", "1.2"]),
            "OK"
        );
        assert_eq!(
            e(&mut c, &["CLIENT", "SETINFO", "colour", "x"]),
            "ERR Unrecognized option 'colour'"
        );
        let info: String = q(&mut c, &["CLIENT", "INFO"]);
        for part in [
            &format!("id={id} ") as &str,
            "name=worker-1 ",
            "lib-name=mylib ",
            "lib-ver=1.2",
            &format!("resp={proto}"),
        ] {
            assert!(info.contains(part), "{part:?} in {info:?}");
        }
        let list: String = q(&mut c, &["CLIENT", "LIST"]);
        assert!(
            list.lines().any(|l| l.starts_with(&format!("id={id} "))),
            "{list}"
        );
        let only_me: String = q(&mut c, &["CLIENT", "LIST", "ID", &id.to_string()]);
        assert_eq!(only_me.lines().count(), 1, "{only_me}");
        assert_eq!(
            e(&mut c, &["CLIENT", "FROB"]),
            "ERR unknown subcommand 'FROB'. Try CLIENT HELP."
        );
        assert_eq!(
            e(&mut c, &["CLIENT", "SETNAME"]),
            "ERR wrong number of arguments for 'client|setname' command"
        );
        let count: i64 = q(&mut c, &["COMMAND", "COUNT"]);
        assert!(count >= 50, "{count}");
        let names: Vec<String> = q(&mut c, &["COMMAND", "LIST"]);
        assert_eq!(names.len() as i64, count);
        // The table is binary-searched: it must stay sorted.
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        assert!(names.contains(&"getex".to_string()));
        let all: Vec<Value> = q(&mut c, &["COMMAND"]);
        assert_eq!(all.len() as i64, count);
        let docs: Value = q(&mut c, &["COMMAND", "DOCS", "get"]);
        assert!(
            matches!(docs, Value::Map(ref m) if m.is_empty()) || docs == Value::Array(vec![]),
            "{docs:?}"
        );
        let get: Vec<Value> = q(&mut c, &["COMMAND", "INFO", "get"]);
        let Value::Array(ref g) = get[0] else {
            panic!("{get:?}")
        };
        assert_eq!(g[0], Value::BulkString(b"get".to_vec()));
        assert_eq!(g[1], Value::Int(2));
        assert_eq!(
            e(&mut c, &["GET"]),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            e(&mut c, &["FROBNICATE", "x", "y"]),
            "ERR unknown command 'FROBNICATE', with args beginning with: 'x' 'y' "
        );
        let info: String = q(&mut c, &["INFO"]);
        assert!(
            info.contains("redis_version:7.2.0") && info.contains("# Keyspace"),
            "{info}"
        );
        let server: String = q(&mut c, &["INFO", "server"]);
        assert!(
            server.contains("redis_mode:standalone") && !server.contains("# Keyspace"),
            "{server}"
        );
        let cfg: HashMap<String, String> = q(&mut c, &["CONFIG", "GET", "maxmemory", "save"]);
        assert_eq!(cfg.get("maxmemory").map(String::as_str), Some("0"));
        assert_eq!(cfg.get("save").map(String::as_str), Some(""));
        let cfg: HashMap<String, String> = q(&mut c, &["CONFIG", "GET", "max*"]);
        assert!(
            cfg.contains_key("maxmemory") && cfg.contains_key("maxmemory-policy"),
            "{cfg:?}"
        );
        let t: Vec<String> = q(&mut c, &["TIME"]);
        let secs: u64 = t[0].parse().unwrap();
        let micros: u64 = t[1].parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(secs.abs_diff(now) < 60 && micros < 1_000_000);
        assert_eq!(q::<String>(&mut c, &["RESET"]), "RESET");
        assert_eq!(q::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]), None);
    }
}

#[test]
fn hello_switches_the_connection_to_resp3_encodings() {
    let s = start(&[]);
    let mut c = Raw::new(s.port);
    // RESP2 first: a missing key is $-1, HELLO's answer a flat array.
    c.send("GET nope\r\nHELLO 4\r\nHELLO x\r\nHELLO 3 FOO\r\n");
    c.expect("$-1\r\n");
    c.expect("-NOPROTO unsupported protocol version\r\n");
    c.expect("-ERR Protocol version is not an integer or out of range\r\n");
    c.expect("-ERR Syntax error in HELLO option 'FOO'\r\n");
    c.send("CLIENT ID\r\n");
    let id = c.reply();
    let id = id.trim_start_matches(':').trim_end();
    let tail = format!(
        "$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.0\r\n\
         $5\r\nproto\r\n:{{}}\r\n$2\r\nid\r\n:{id}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
         $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
    );
    c.send("HELLO\r\nHELLO 3 SETNAME me\r\n");
    c.expect(&format!("*14\r\n{}", tail.replace("{}", "2")));
    c.expect(&format!("%7\r\n{}", tail.replace("{}", "3")));
    // Now RESP3: null, maps, verbatim strings.
    c.send(
        "GET nope\r\nMGET a\r\nCONFIG GET appendonly\r\nCLIENT GETNAME\r\nCOMMAND INFO nosuch\r\n",
    );
    c.expect("_\r\n");
    c.expect("*1\r\n_\r\n");
    c.expect("%1\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
    c.expect("$2\r\nme\r\n");
    c.expect("*1\r\n_\r\n");
    c.send("CLIENT INFO\r\nINFO keyspace\r\n");
    let info = c.reply();
    assert!(
        info.starts_with('=') && info.contains("\r\ntxt:id=") && info.contains(" resp=3 "),
        "{info:?}"
    );
    let ks = c.reply();
    assert!(
        ks.starts_with('=') && ks.contains("txt:# Keyspace\r\ndb0:keys=0"),
        "{ks:?}"
    );
    // And back.
    c.send("HELLO 2\r\nGET nope\r\nINFO keyspace\r\n");
    c.expect(&format!("*14\r\n{}", tail.replace("{}", "2")));
    c.expect("$-1\r\n");
    assert!(c.reply().starts_with("$"));
}

#[test]
fn string_commands_as_redis_over_both_protocols() {
    let s = start(&[]);
    for proto in [2u8, 3] {
        let mut c = client(&s, proto);
        assert_eq!(q::<String>(&mut c, &["FLUSHDB"]), "OK");
        // SET and its options.
        assert_eq!(q::<String>(&mut c, &["SET", "k", "v"]), "OK");
        assert_eq!(q::<Option<String>>(&mut c, &["SET", "k", "w", "NX"]), None);
        assert_eq!(q::<String>(&mut c, &["SET", "k", "w", "XX"]), "OK");
        assert_eq!(
            q::<Option<String>>(&mut c, &["SET", "new", "x", "XX"]),
            None
        );
        assert_eq!(
            q::<Option<String>>(&mut c, &["SET", "k", "z", "GET"]),
            Some("w".into())
        );
        assert_eq!(
            q::<Option<String>>(&mut c, &["SET", "fresh", "z", "GET"]),
            None
        );
        assert_eq!(q::<String>(&mut c, &["SET", "k", "v", "EX", "100"]), "OK");
        assert_eq!(q::<String>(&mut c, &["SET", "k", "v2", "KEEPTTL"]), "OK");
        assert!((99..=100).contains(&q::<i64>(&mut c, &["TTL", "k"])));
        assert_eq!(q::<String>(&mut c, &["SET", "k", "v"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
        assert_eq!(
            e(&mut c, &["SET", "k", "v", "NX", "XX"]),
            "ERR syntax error"
        );
        assert_eq!(
            e(&mut c, &["SET", "k", "v", "EX", "1", "PX", "1"]),
            "ERR syntax error"
        );
        assert_eq!(e(&mut c, &["SET", "k", "v", "EX"]), "ERR syntax error");
        assert_eq!(
            e(&mut c, &["SET", "k", "v", "EX", "0"]),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            e(&mut c, &["SET", "k", "v", "EX", "x"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            e(&mut c, &["SET", "k", "v", "EX", "9223372036854775807"]),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            e(&mut c, &["SET", "k"]),
            "ERR wrong number of arguments for 'set' command"
        );
        let later = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 1000)
            .to_string();
        assert_eq!(
            q::<String>(&mut c, &["SET", "at", "v", "EXAT", &later]),
            "OK"
        );
        assert!((990..=1000).contains(&q::<i64>(&mut c, &["TTL", "at"])));
        // SETEX, PSETEX, SETNX, GETSET, GETDEL, GETEX.
        assert_eq!(q::<String>(&mut c, &["SETEX", "se", "50", "v"]), "OK");
        assert!((49..=50).contains(&q::<i64>(&mut c, &["TTL", "se"])));
        assert_eq!(
            e(&mut c, &["SETEX", "se", "0", "v"]),
            "ERR invalid expire time in 'setex' command"
        );
        assert_eq!(
            e(&mut c, &["SETEX", "se", "z", "v"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(q::<String>(&mut c, &["PSETEX", "pse", "50000", "v"]), "OK");
        assert!((49_000..=50_000).contains(&q::<i64>(&mut c, &["PTTL", "pse"])));
        assert_eq!(
            e(&mut c, &["PSETEX", "pse", "-5", "v"]),
            "ERR invalid expire time in 'psetex' command"
        );
        assert_eq!(q::<i64>(&mut c, &["SETNX", "nx", "1"]), 1);
        assert_eq!(q::<i64>(&mut c, &["SETNX", "nx", "2"]), 0);
        assert_eq!(q::<String>(&mut c, &["GET", "nx"]), "1");
        assert_eq!(
            q::<Option<String>>(&mut c, &["GETSET", "se", "plain"]),
            Some("v".into())
        );
        assert_eq!(
            q::<i64>(&mut c, &["TTL", "se"]),
            -1,
            "GETSET clears the TTL"
        );
        assert_eq!(
            q::<Option<String>>(&mut c, &["GETSET", "gs-new", "1"]),
            None
        );
        assert_eq!(
            q::<Option<String>>(&mut c, &["GETDEL", "gs-new"]),
            Some("1".into())
        );
        assert_eq!(q::<Option<String>>(&mut c, &["GETDEL", "gs-new"]), None);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "gs-new"]), 0);
        assert_eq!(
            q::<Option<String>>(&mut c, &["GETEX", "nx", "EX", "30"]),
            Some("1".into())
        );
        assert!((29..=30).contains(&q::<i64>(&mut c, &["TTL", "nx"])));
        assert_eq!(
            q::<Option<String>>(&mut c, &["GETEX", "nx", "PERSIST"]),
            Some("1".into())
        );
        assert_eq!(q::<i64>(&mut c, &["TTL", "nx"]), -1);
        assert_eq!(q::<Option<String>>(&mut c, &["GETEX", "nope"]), None);
        assert_eq!(
            e(&mut c, &["GETEX", "nx", "EX", "1", "PERSIST"]),
            "ERR syntax error"
        );
        assert_eq!(
            e(&mut c, &["GETEX", "nx", "PX", "0"]),
            "ERR invalid expire time in 'getex' command"
        );
        // APPEND, STRLEN, GETRANGE, SETRANGE.
        assert_eq!(q::<i64>(&mut c, &["APPEND", "ap", "Hello"]), 5);
        assert_eq!(q::<i64>(&mut c, &["APPEND", "ap", " World"]), 11);
        assert_eq!(q::<i64>(&mut c, &["STRLEN", "ap"]), 11);
        assert_eq!(q::<i64>(&mut c, &["STRLEN", "nope"]), 0);
        assert_eq!(q::<String>(&mut c, &["GETRANGE", "ap", "0", "4"]), "Hello");
        assert_eq!(
            q::<String>(&mut c, &["GETRANGE", "ap", "-5", "-1"]),
            "World"
        );
        assert_eq!(q::<String>(&mut c, &["GETRANGE", "ap", "5", "2"]), "");
        assert_eq!(q::<String>(&mut c, &["GETRANGE", "ap", "-100", "2"]), "Hel");
        assert_eq!(
            q::<String>(&mut c, &["GETRANGE", "ap", "6", "100"]),
            "World"
        );
        assert_eq!(q::<String>(&mut c, &["GETRANGE", "ap", "-1", "-5"]), "");
        assert_eq!(q::<String>(&mut c, &["GETRANGE", "nope", "0", "-1"]), "");
        assert_eq!(
            e(&mut c, &["GETRANGE", "ap", "a", "1"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(q::<i64>(&mut c, &["SETRANGE", "ap", "6", "Redis"]), 11);
        assert_eq!(q::<String>(&mut c, &["GET", "ap"]), "Hello Redis");
        assert_eq!(q::<i64>(&mut c, &["SETRANGE", "pad", "3", "x"]), 4);
        assert_eq!(q::<Vec<u8>>(&mut c, &["GET", "pad"]), b"\0\0\0x");
        assert_eq!(q::<i64>(&mut c, &["SETRANGE", "empty", "10", ""]), 0);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "empty"]), 0);
        assert_eq!(
            e(&mut c, &["SETRANGE", "ap", "-1", "x"]),
            "ERR offset is out of range"
        );
        assert_eq!(
            e(&mut c, &["SETRANGE", "ap", "536870911", "xx"]),
            "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
        );
        // Counters.
        assert_eq!(q::<i64>(&mut c, &["INCR", "n"]), 1);
        assert_eq!(q::<i64>(&mut c, &["INCRBY", "n", "41"]), 42);
        assert_eq!(q::<i64>(&mut c, &["DECR", "n"]), 41);
        assert_eq!(q::<i64>(&mut c, &["DECRBY", "n", "50"]), -9);
        assert_eq!(
            e(&mut c, &["INCR", "ap"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            e(&mut c, &["INCRBY", "n", "1.5"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            e(&mut c, &["DECRBY", "n", "-9223372036854775808"]),
            "ERR decrement would overflow"
        );
        assert_eq!(
            q::<String>(&mut c, &["SET", "big", "9223372036854775807"]),
            "OK"
        );
        assert_eq!(
            e(&mut c, &["INCR", "big"]),
            "ERR increment or decrement would overflow"
        );
        // Integers as Redis reads them: no '+', spaces, leading zeros, -0.
        for bad in ["+1", " 1", "1 ", "01", "-0", "9223372036854775808", ""] {
            assert_eq!(
                e(&mut c, &["INCRBY", "n", bad]),
                "ERR value is not an integer or out of range",
                "{bad:?}"
            );
        }
        assert_eq!(q::<String>(&mut c, &["SET", "n", "9"]), "OK");
        assert_eq!(
            q::<i64>(&mut c, &["INCRBY", "n", "-9223372036854775808"]),
            i64::MIN + 9
        );
        assert_eq!(q::<String>(&mut c, &["SET", "n", "-9"]), "OK");
        assert_eq!(q::<String>(&mut c, &["SET", "lead", "007"]), "OK");
        assert_eq!(
            e(&mut c, &["INCR", "lead"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            q::<String>(&mut c, &["SET", "ttl-n", "1", "EX", "100"]),
            "OK"
        );
        assert_eq!(q::<i64>(&mut c, &["INCR", "ttl-n"]), 2);
        assert!(
            q::<i64>(&mut c, &["TTL", "ttl-n"]) > 0,
            "INCR keeps the TTL"
        );
        assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "10.5"]), "10.5");
        assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "0.1"]), "10.6");
        assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "-5e0"]), "5.6");
        assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "n", "9"]), "0");
        assert_eq!(
            e(&mut c, &["INCRBYFLOAT", "f", "abc"]),
            "ERR value is not a valid float"
        );
        assert_eq!(
            e(&mut c, &["INCRBYFLOAT", "ap", "1"]),
            "ERR value is not a valid float"
        );
        assert_eq!(
            e(&mut c, &["INCRBYFLOAT", "f", "inf"]),
            "ERR increment would produce NaN or Infinity"
        );
        // MSET, MSETNX, MGET.
        assert_eq!(q::<String>(&mut c, &["MSET", "a", "1", "b", "2"]), "OK");
        assert_eq!(
            e(&mut c, &["MSET", "a", "1", "b"]),
            "ERR wrong number of arguments for 'mset' command"
        );
        assert_eq!(q::<i64>(&mut c, &["MSETNX", "a", "9", "c", "3"]), 0);
        assert_eq!(
            q::<i64>(&mut c, &["EXISTS", "c"]),
            0,
            "MSETNX sets all or nothing"
        );
        assert_eq!(q::<i64>(&mut c, &["MSETNX", "c", "3", "d", "4"]), 1);
        assert_eq!(
            q::<Vec<Option<String>>>(&mut c, &["MGET", "a", "b", "zz", "d"]),
            vec![Some("1".into()), Some("2".into()), None, Some("4".into())]
        );
    }
}

#[test]
fn keyspace_commands_as_redis() {
    let s = start(&[]);
    for proto in [2u8, 3] {
        let mut c = client(&s, proto);
        assert_eq!(q::<String>(&mut c, &["FLUSHALL"]), "OK");
        assert_eq!(q::<String>(&mut c, &["FLUSHDB", "ASYNC"]), "OK");
        assert_eq!(e(&mut c, &["FLUSHDB", "LATER"]), "ERR syntax error");
        assert_eq!(
            q::<String>(
                &mut c,
                &["MSET", "a", "1", "b", "2", "user:1", "x", "user:22", "y", "h*llo", "z"]
            ),
            "OK"
        );
        assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 5);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "a", "a", "zz"]), 2);
        assert_eq!(q::<i64>(&mut c, &["TOUCH", "a", "zz"]), 1);
        assert_eq!(q::<String>(&mut c, &["TYPE", "a"]), "string");
        assert_eq!(q::<String>(&mut c, &["TYPE", "zz"]), "none");
        // EXPIRE and friends.
        assert_eq!(q::<i64>(&mut c, &["TTL", "a"]), -1);
        assert_eq!(q::<i64>(&mut c, &["TTL", "zz"]), -2);
        assert_eq!(q::<i64>(&mut c, &["PTTL", "zz"]), -2);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "a", "100"]), 1);
        assert_eq!(q::<i64>(&mut c, &["TTL", "a"]), 100);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "zz", "100"]), 0);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "a", "50", "NX"]), 0);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "a", "50", "GT"]), 0);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "a", "200", "GT"]), 1);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "a", "150", "LT"]), 1);
        assert_eq!(q::<i64>(&mut c, &["TTL", "a"]), 150);
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "b", "50", "XX"]), 0);
        assert_eq!(
            q::<i64>(&mut c, &["EXPIRE", "b", "50", "GT"]),
            0,
            "no TTL is an infinite one"
        );
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "b", "50", "LT"]), 1);
        assert_eq!(
            e(&mut c, &["EXPIRE", "a", "5", "NX", "XX"]),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(
            e(&mut c, &["EXPIRE", "a", "5", "GT", "LT"]),
            "ERR GT and LT options at the same time are not compatible"
        );
        assert_eq!(
            e(&mut c, &["EXPIRE", "a", "5", "SOON"]),
            "ERR Unsupported option SOON"
        );
        assert_eq!(
            e(&mut c, &["EXPIRE", "a", "x"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            e(&mut c, &["EXPIRE", "a", "9223372036854775807"]),
            "ERR invalid expire time in 'expire' command"
        );
        assert_eq!(q::<i64>(&mut c, &["PEXPIRE", "a", "100000"]), 1);
        assert!((99_000..=100_000).contains(&q::<i64>(&mut c, &["PTTL", "a"])));
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert_eq!(
            q::<i64>(
                &mut c,
                &["EXPIREAT", "a", &(unix.as_secs() + 500).to_string()]
            ),
            1
        );
        assert!((490..=500).contains(&q::<i64>(&mut c, &["TTL", "a"])));
        assert_eq!(
            q::<i64>(
                &mut c,
                &[
                    "PEXPIREAT",
                    "a",
                    &(unix.as_millis() as u64 + 700_000).to_string()
                ]
            ),
            1
        );
        assert!((690..=700).contains(&q::<i64>(&mut c, &["TTL", "a"])));
        assert_eq!(q::<i64>(&mut c, &["PERSIST", "a"]), 1);
        assert_eq!(q::<i64>(&mut c, &["PERSIST", "a"]), 0);
        assert_eq!(q::<i64>(&mut c, &["PERSIST", "zz"]), 0);
        assert_eq!(q::<i64>(&mut c, &["TTL", "a"]), -1);
        // A time in the past deletes the key.
        assert_eq!(q::<i64>(&mut c, &["EXPIREAT", "b", "1"]), 1);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "b"]), 0);
        assert_eq!(q::<String>(&mut c, &["SET", "b", "2"]), "OK");
        assert_eq!(q::<i64>(&mut c, &["EXPIRE", "b", "-1"]), 1);
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "b"]), 0);
        // KEYS with globs.
        let mut keys: Vec<String> = q(&mut c, &["KEYS", "user:*"]);
        keys.sort();
        assert_eq!(keys, ["user:1", "user:22"]);
        assert_eq!(q::<Vec<String>>(&mut c, &["KEYS", "user:?"]), ["user:1"]);
        assert_eq!(
            q::<Vec<String>>(&mut c, &["KEYS", "user:[2]*"]),
            ["user:22"]
        );
        assert_eq!(q::<Vec<String>>(&mut c, &["KEYS", "h\\*llo"]), ["h*llo"]);
        assert_eq!(
            q::<Vec<String>>(&mut c, &["KEYS", "nothing*"]),
            Vec::<String>::new()
        );
        assert_eq!(q::<Vec<String>>(&mut c, &["KEYS", "*"]).len(), 4);
        // RENAME, RENAMENX, DEL, UNLINK.
        assert_eq!(q::<String>(&mut c, &["SET", "t", "v", "EX", "100"]), "OK");
        assert_eq!(q::<String>(&mut c, &["RENAME", "t", "t2"]), "OK");
        assert_eq!(q::<Option<String>>(&mut c, &["GET", "t"]), None);
        assert_eq!(q::<String>(&mut c, &["GET", "t2"]), "v");
        assert!(q::<i64>(&mut c, &["TTL", "t2"]) > 0, "RENAME keeps the TTL");
        assert_eq!(q::<String>(&mut c, &["RENAME", "t2", "t2"]), "OK");
        assert_eq!(e(&mut c, &["RENAME", "zz", "t3"]), "ERR no such key");
        assert_eq!(e(&mut c, &["RENAMENX", "zz", "t3"]), "ERR no such key");
        assert_eq!(q::<i64>(&mut c, &["RENAMENX", "t2", "a"]), 0);
        assert_eq!(q::<i64>(&mut c, &["RENAMENX", "t2", "t3"]), 1);
        assert_eq!(q::<i64>(&mut c, &["DEL", "t3", "zz", "a"]), 2);
        assert_eq!(q::<i64>(&mut c, &["UNLINK", "user:1", "user:1"]), 1);
        assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 2);
    }
}

#[test]
fn transactions_run_whole_and_watch_aborts_them() {
    let s = start(&[]);
    for proto in [2u8, 3] {
        let mut c = client(&s, proto);
        let mut other = client(&s, proto);
        let _: () = q(&mut c, &["FLUSHDB"]);
        // The client library's atomic pipeline is MULTI ... EXEC.
        let (a, n): (String, i64) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("t:a")
            .arg("1")
            .ignore()
            .cmd("GET")
            .arg("t:a")
            .cmd("INCR")
            .arg("t:n")
            .query(&mut c)
            .unwrap();
        assert_eq!((a.as_str(), n), ("1", 1));
        // WATCH: a write by another connection aborts the EXEC (nil).
        assert_eq!(q::<String>(&mut c, &["WATCH", "t:a", "t:absent"]), "OK");
        let _: () = q(&mut other, &["SET", "t:a", "2"]);
        assert_eq!(q::<String>(&mut c, &["MULTI"]), "OK");
        assert_eq!(q::<String>(&mut c, &["SET", "t:a", "3"]), "QUEUED");
        assert_eq!(q::<Value>(&mut c, &["EXEC"]), Value::Nil);
        assert_eq!(q::<String>(&mut c, &["GET", "t:a"]), "2");
        // ... and so does a key that appears, but not one left alone.
        assert_eq!(q::<String>(&mut c, &["WATCH", "t:absent"]), "OK");
        let _: () = q(&mut other, &["SET", "t:absent", "now"]);
        let _: () = q(&mut c, &["MULTI"]);
        let _: () = q(&mut c, &["GET", "t:a"]);
        assert_eq!(q::<Value>(&mut c, &["EXEC"]), Value::Nil);
        assert_eq!(q::<String>(&mut c, &["WATCH", "t:a"]), "OK");
        let _: () = q(&mut other, &["SET", "t:elsewhere", "x"]);
        let _: () = q(&mut c, &["MULTI"]);
        let _: () = q(&mut c, &["INCR", "t:n"]);
        let _: () = q(&mut c, &["KEYS", "t:*"]);
        let (n, keys): (i64, Vec<String>) = q(&mut c, &["EXEC"]);
        assert_eq!((n, keys.len()), (2, 4));
        // The library's own optimistic transaction helper.
        let v: (i64,) = redis::transaction(&mut c, &["t:n"], |con, pipe| {
            let cur: i64 = redis::cmd("GET").arg("t:n").query(con)?;
            pipe.cmd("SET")
                .arg("t:n")
                .arg(cur * 10)
                .ignore()
                .cmd("GET")
                .arg("t:n")
                .query(con)
        })
        .unwrap();
        assert_eq!(v, (20,));
        // Errors.
        assert_eq!(e(&mut c, &["EXEC"]), "ERR EXEC without MULTI");
        assert_eq!(e(&mut c, &["DISCARD"]), "ERR DISCARD without MULTI");
        let _: () = q(&mut c, &["MULTI"]);
        assert_eq!(e(&mut c, &["MULTI"]), "ERR MULTI calls can not be nested");
        assert_eq!(
            e(&mut c, &["WATCH", "x"]),
            "ERR WATCH inside MULTI is not allowed"
        );
        assert_eq!(q::<String>(&mut c, &["DISCARD"]), "OK");
        let _: () = q(&mut c, &["MULTI"]);
        let _: () = q(&mut c, &["SET", "t:never", "1"]);
        assert_eq!(
            e(&mut c, &["GET"]),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            e(&mut c, &["EXEC"]),
            "EXECABORT Transaction discarded because of previous errors."
        );
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "t:never"]), 0);
        // A command that fails at run time fails alone.
        let _: () = q(&mut c, &["MULTI"]);
        let _: () = q(&mut c, &["INCR", "t:absent"]);
        let _: () = q(&mut c, &["SET", "t:a", "9"]);
        assert_eq!(
            e(&mut c, &["EXEC"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(q::<String>(&mut c, &["GET", "t:a"]), "9", "the rest ran");
    }
}

#[test]
fn scan_returns_each_key_that_stayed_exactly_once_under_inserts_and_evictions() {
    for args in [&[][..], &["--max-memory", "400kb"][..]] {
        let s = start(args);
        let mut c = client(&s, 2);
        let mut other = client(&s, 3);
        // 3,000 keys of about 100 bytes each (with the per-key overhead):
        // some 300 KiB, under the bound until the inserts below.
        for chunk in 0..30 {
            let mut m = cmd(&["MSET"]);
            for i in 0..100 {
                m.arg(format!("old:{}", chunk * 100 + i)).arg("x");
            }
            let _: () = m.query(&mut c).unwrap();
        }
        let mut seen: Vec<String> = Vec::new();
        let mut cursor = "0".to_string();
        let mut step = 0;
        loop {
            let (next, keys): (String, Vec<String>) = q(&mut c, &["SCAN", &cursor, "COUNT", "50"]);
            seen.extend(keys);
            // Between steps: new keys, and some old ones deleted.
            let mut m = cmd(&["MSET"]);
            for i in 0..40 {
                m.arg(format!("new:{step}:{i}")).arg("y".repeat(40));
            }
            let _: () = m.query(&mut other).unwrap();
            let _: i64 = q(&mut other, &["DEL", &format!("old:{}", step * 7 % 3000)]);
            step += 1;
            cursor = next;
            if cursor == "0" {
                break;
            }
            assert!(step < 10_000, "the walk never ends");
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "a key came back twice ({args:?})");
        let mut stayed = 0;
        for i in 0..3000 {
            let k = format!("old:{i}");
            // A key there at the start and at the end was there throughout:
            // no old name is ever written again.
            if q::<i64>(&mut c, &["EXISTS", &k]) == 1 {
                stayed += 1;
                assert!(unique.contains(&k), "{k} stayed but was skipped ({args:?})");
            }
        }
        assert!(stayed > 100, "{stayed} old keys stayed ({args:?})");
        if !args.is_empty() {
            let info: String = q(&mut c, &["INFO", "stats"]);
            assert!(
                !info.contains("evicted_keys:0\r"),
                "nothing was evicted: {info}"
            );
        }
        // The options and their errors.
        let (_, only): (String, Vec<String>) =
            q(&mut c, &["SCAN", "0", "MATCH", "old:1?", "COUNT", "100000"]);
        assert!(
            only.iter().all(|k| k.len() == 6 && k.starts_with("old:1")),
            "{only:?}"
        );
        let (_, none): (String, Vec<String>) =
            q(&mut c, &["SCAN", "0", "TYPE", "hash", "COUNT", "100000"]);
        assert!(none.is_empty());
        assert_eq!(e(&mut c, &["SCAN", "x"]), "ERR invalid cursor");
        assert_eq!(e(&mut c, &["SCAN", "0", "COUNT", "0"]), "ERR syntax error");
        assert_eq!(
            e(&mut c, &["SCAN", "0", "COUNT", "many"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(e(&mut c, &["SCAN", "0", "MATCH"]), "ERR syntax error");
        assert_eq!(e(&mut c, &["SCAN", "0", "SORT", "x"]), "ERR syntax error");
    }
}

#[test]
fn scan_through_the_client_library_iterator() {
    let s = start(&[]);
    let mut c = client(&s, 3);
    let mut m = cmd(&["MSET"]);
    for i in 0..500 {
        m.arg(format!("k{i}")).arg(i);
    }
    let _: () = m.query(&mut c).unwrap();
    let found: HashSet<String> = c
        .scan_match::<_, String>("k1*")
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let want: HashSet<String> = (0..500)
        .map(|i| format!("k{i}"))
        .filter(|k| k.starts_with("k1"))
        .collect();
    assert_eq!(found, want);
}

#[test]
fn keys_over_many_keys_lets_other_clients_run() {
    let s = start(&[]);
    let mut c = client(&s, 2);
    let n = 200_000;
    for chunk in 0..n / 1000 {
        let mut m = cmd(&["MSET"]);
        for i in 0..1000 {
            m.arg(format!("key:{}", chunk * 1000 + i)).arg("v");
        }
        let _: () = m.query(&mut c).unwrap();
    }
    let mut big = connect(s.port);
    big.write_all(b"KEYS *\r\n").unwrap();
    // While the walk goes on (a dozen slices), another client is served.
    let mut small = connect(s.port);
    small.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_lines(&mut small, 1), ["+PONG"]);
    big.set_nonblocking(true).unwrap();
    let mut probe = [0u8; 1];
    let early = big.read(&mut probe);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the KEYS reply was there before the PING's: {early:?}"
    );
    big.set_nonblocking(false).unwrap();
    // Then the whole reply, every key once.
    let mut reader = BufReader::new(big);
    let mut head = String::new();
    reader.read_line(&mut head).unwrap();
    assert_eq!(head, format!("*{n}\r\n"));
    let mut keys = HashSet::new();
    let mut line = String::new();
    for _ in 0..n {
        line.clear();
        reader.read_line(&mut line).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        keys.insert(line.trim_end().to_string());
    }
    assert_eq!(keys.len(), n);
}

#[test]
fn a_password_makes_every_command_but_auth_answer_noauth() {
    let s = start(&["--requirepass", "s3cret"]);
    let mut c = Raw::new(s.port);
    const NOAUTH: &str = "-NOAUTH Authentication required.\r\n";
    const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    c.send("GET a\r\nPING\r\nCLIENT ID\r\nKEYS *\r\n");
    for _ in 0..4 {
        c.expect(NOAUTH);
    }
    c.send("AUTH wrong\r\nAUTH someone s3cret\r\nHELLO 3\r\n");
    c.expect(WRONGPASS);
    c.expect(WRONGPASS);
    let l = c.reply();
    assert!(
        l.starts_with("-NOAUTH HELLO must be called with the client already authenticated"),
        "{l:?}"
    );
    c.send("HELLO 3 AUTH default wrong\r\nGET a\r\n");
    c.expect(WRONGPASS);
    c.expect(NOAUTH);
    c.send("HELLO 3 AUTH default s3cret\r\n");
    assert!(c.reply().starts_with("%7\r\n"));
    c.send("GET a\r\nRESET\r\nGET a\r\nAUTH s3cret\r\nGET a\r\nQUIT\r\n");
    c.expect("_\r\n");
    c.expect("+RESET\r\n");
    c.expect(NOAUTH);
    c.expect("+OK\r\n");
    c.expect("$-1\r\n");
    c.expect("+OK\r\n");
    // A client library with the password in its URL.
    let url = format!("redis://:s3cret@127.0.0.1:{}/?protocol=resp3", s.port);
    let mut lib = redis::Client::open(url).unwrap().get_connection().unwrap();
    assert_eq!(q::<String>(&mut lib, &["SET", "a", "1"]), "OK");
    let url = format!("redis://default:s3cret@127.0.0.1:{}/", s.port);
    let mut lib2 = redis::Client::open(url).unwrap().get_connection().unwrap();
    assert_eq!(q::<String>(&mut lib2, &["GET", "a"]), "1");
    let url = format!("redis://:nope@127.0.0.1:{}/", s.port);
    assert!(redis::Client::open(url).unwrap().get_connection().is_err());
}

#[test]
fn auth_without_a_password_configured_says_so() {
    let s = start(&[]);
    let mut c = client(&s, 2);
    assert_eq!(
        e(&mut c, &["AUTH", "x"]),
        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
    );
    assert_eq!(q::<String>(&mut c, &["AUTH", "default", "anything"]), "OK");
}

#[test]
fn password_file_and_unix_socket_mode() {
    let dir = scratch("pw");
    let pw = dir.join("secret");
    std::fs::write(&pw, "from-file\n").unwrap();
    let s = start(&[
        "--no-tcp",
        "--unix",
        "{dir}/cache.sock",
        "--unix-perm",
        "700",
        "--requirepass-file",
        pw.to_str().unwrap(),
    ]);
    let meta = std::fs::metadata(s.sock()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let url = format!(
        "redis+unix://{}?pass=from-file&protocol=resp3",
        s.sock().display()
    );
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    assert_eq!(q::<String>(&mut c, &["SET", "k", "v"]), "OK");
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "v");
    let url = format!("redis+unix://{}", s.sock().display());
    let mut anon = redis::Client::open(url).unwrap().get_connection().unwrap();
    assert_eq!(
        e(&mut anon, &["GET", "k"]),
        "NOAUTH Authentication required."
    );
    drop(s);
    std::fs::remove_dir_all(dir).unwrap();
    // Bad values are refused before anything listens.
    for bad in [
        &["--unix-perm", "800", "--unix", "/tmp/x"][..],
        &["--unix-perm", "700"],
        &["--requirepass", ""],
    ] {
        let out = Command::new(common::example("cache_server"))
            .args(bad)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?}");
    }
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
    let mut c = client(&s, 2);
    assert_eq!(
        q::<String>(&mut c, &["SET", "short", "v", "PX", "150"]),
        "OK"
    );
    assert_eq!(
        q::<String>(&mut c, &["SET", "long", "v", "EX", "100"]),
        "OK"
    );
    assert_eq!(q::<String>(&mut c, &["GET", "short"]), "v");
    // The timer removes it without anyone asking for it: DBSIZE drops.
    eventually("the timer expires 'short'", || {
        q::<i64>(&mut c, &["DBSIZE"]) == 1
    });
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "short"]), None);
    assert_eq!(q::<String>(&mut c, &["GET", "long"]), "v");
}

#[test]
fn max_memory_evicts_the_least_recently_used() {
    let s = start(&["--max-memory", "20kb"]);
    let mut c = client(&s, 2);
    let value = "x".repeat(1000);
    for i in 0..10 {
        assert_eq!(
            q::<String>(&mut c, &["SET", &format!("k{i}"), &value]),
            "OK"
        );
    }
    // Use k0, so k1 is now the least recently used.
    assert_eq!(q::<String>(&mut c, &["GET", "k0"]).len(), 1000);
    for i in 10..30 {
        let _: String = q(&mut c, &["SET", &format!("k{i}"), &value]);
    }
    assert_eq!(
        q::<Option<String>>(&mut c, &["GET", "k1"]),
        None,
        "the least recently used went first"
    );
    assert_eq!(
        q::<String>(&mut c, &["GET", "k29"]).len(),
        1000,
        "the newest stays"
    );
    let n: i64 = q(&mut c, &["DBSIZE"]);
    assert!(n < 20 && n > 5, "{n} keys under a 20 KiB bound");
    let info: String = q(&mut c, &["INFO", "memory"]);
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
    let dir = scratch("data");
    std::fs::write(dir.join("hello.txt"), "from disk").unwrap();
    let s = start(&["--data-dir", dir.to_str().unwrap()]);
    let mut c = client(&s, 2);
    assert_eq!(q::<String>(&mut c, &["GET", "hello.txt"]), "from disk");
    std::fs::remove_file(dir.join("hello.txt")).unwrap();
    assert_eq!(
        q::<String>(&mut c, &["GET", "hello.txt"]),
        "from disk",
        "cached"
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["GET", "../../../../etc/hostname"]),
        None
    );
    assert_eq!(q::<Option<String>>(&mut c, &["GET", ".."]), None);
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "missing"]), None);
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
fn redis_cli_talks_to_it() {
    let Some(cli) = tool("redis-cli", "redis-tools") else {
        return;
    };
    let s = start(&[]);
    let run = |args: &[&str]| {
        let out = Command::new(&cli)
            .args(["-p", &s.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    };
    assert_eq!(run(&["ping"]), "PONG");
    assert_eq!(run(&["set", "k", "v"]), "OK");
    assert_eq!(run(&["get", "k"]), "v");
    // redis-cli -3 speaks RESP3 from its first command.
    assert_eq!(run(&["-3", "--no-raw", "get", "nope"]), "(nil)");
    assert_eq!(
        run(&["-3", "--no-raw", "config", "get", "appendonly"]),
        "1# \"appendonly\" => \"no\""
    );
    assert_eq!(run(&["-3", "get", "k"]), "v");
    assert_eq!(run(&["--scan", "--pattern", "k*"]), "k");
    assert_eq!(
        run(&["incr", "k"]),
        "ERR value is not an integer or out of range"
    );
}

#[test]
fn redis_benchmark_runs_against_it() {
    let Some(bench) = tool("redis-benchmark", "redis-tools") else {
        return;
    };
    let s = start(&[]);
    let out = Command::new(bench)
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
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for t in ["SET", "GET", "INCR", "MSET", "PING_MBULK"] {
        assert!(
            text.contains(t) && text.contains("requests per second"),
            "{text}"
        );
    }
}

/// The directory `scripts/client-libs.sh` installs the Python and Node
/// clients into (`target/client-libs`).
fn client_libs() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("client-libs")
}

/// A session of ordinary cache traffic, the same in every language: what
/// the script prints must be this.
const SESSION_OUTPUT: &str = "ok";

fn run_client_script(program: &Path, args: &[&str], env: &[(&str, PathBuf)], s: &Server) {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("CACHE_PORT", s.port.to_string())
        .env("CACHE_SOCK", s.sock());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with(SESSION_OUTPUT),
        "{program:?} {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn redis_py_with_its_defaults() {
    let libs = client_libs().join("python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/session.py");
    let Some(py) = tool("python3", "python3") else {
        return;
    };
    if !libs.join("redis").is_dir() {
        println!("skipped: redis-py not installed (bash scripts/client-libs.sh)");
        return;
    }
    let s = start(&["--unix", "{dir}/cache.sock"]);
    run_client_script(
        &py,
        &[script.to_str().unwrap()],
        &[("PYTHONPATH", libs)],
        &s,
    );
}

#[test]
fn node_clients_with_their_defaults() {
    let libs = client_libs().join("node/node_modules");
    let Some(node) = tool("node", "nodejs") else {
        return;
    };
    for (package, script) in [
        ("redis", "session-node-redis.js"),
        ("ioredis", "session-ioredis.js"),
    ] {
        if !libs.join(package).is_dir() {
            println!("skipped: the {package} package not installed (bash scripts/client-libs.sh)");
            continue;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/clients")
            .join(script);
        let s = start(&["--unix", "{dir}/cache.sock"]);
        run_client_script(
            &node,
            &[script.to_str().unwrap()],
            &[("NODE_PATH", libs.clone())],
            &s,
        );
    }
}

#[test]
fn outside_tools_missing_means_one_skip_line_each() {
    if std::env::var_os("PROCWIRE_SKIP_PROBE").is_some() {
        return;
    }
    // This test binary again, with a PATH that has none of the tools.
    let empty = scratch("path");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
            "redis_cli_talks_to_it",
            "redis_benchmark_runs_against_it",
            "redis_py_with_its_defaults",
            "node_clients_with_their_defaults",
        ])
        .env("PATH", &empty)
        .env("PROCWIRE_SKIP_PROBE", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "skipped: redis-cli not installed (apt-get install redis-tools)",
        "skipped: redis-benchmark not installed (apt-get install redis-tools)",
        "skipped: python3 not installed (apt-get install python3)",
        "skipped: node not installed (apt-get install nodejs)",
    ] {
        assert_eq!(text.matches(line).count(), 1, "{line:?} in\n{text}");
    }
    assert!(text.contains("test result: ok. 4 passed"), "{text}");
    std::fs::remove_dir_all(empty).unwrap();
}
