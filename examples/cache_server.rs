//! A cache server on the event loop that speaks RESP2, so `redis-cli`,
//! `redis-benchmark` and Redis client libraries talk to it unchanged.
//!
//! ```text
//! cargo run --release --example cache_server                       # 127.0.0.1, a free port, printed
//! cargo run --release --example cache_server -- --port 6380 --unix /tmp/cache.sock
//! cargo run --release --example cache_server -- --data-dir ./data --max-memory 64mb
//! ```
//!
//! Commands: PING, ECHO, GET, SET (EX, PX, NX, XX), DEL, EXISTS, INCR,
//! DECR, INCRBY, MGET, MSET, EXPIRE, TTL, DBSIZE, FLUSHALL, INFO, QUIT and
//! CONFIG GET (what redis-benchmark asks). With `--data-dir`, a GET of a
//! missing key reads the file of that name from the directory and caches
//! it. `--max-memory` bounds the cache, evicting the least recently used
//! keys; expired keys go on access and on a 100 ms timer. After each burst
//! of work the loop polls for up to `--busy-poll` microseconds (default 50)
//! before it sleeps, so clients sending their next request within that time
//! don't pay for waking it up; `--busy-poll 0` sleeps at once, as Redis does.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use procwire::net::event::{serve, EventLoop, Output, Protocol, ServerOptions};
use procwire::net::resp::{self, parse_request, DEFAULT_MAX_BULK};
use procwire::sys::socket::{Domain, SockAddr, Socket, Type};

const USAGE: &str = "usage: cache_server [--port PORT] [--host IP] [--unix PATH] [--no-tcp]
                    [--data-dir DIR] [--max-memory BYTES[kb|mb|gb]] [--max-bulk BYTES]
                    [--busy-poll MICROSECONDS]

A Redis-protocol cache. Listens on TCP 127.0.0.1 (a free port unless --port)
and/or a Unix socket; prints where; serves until Ctrl-C.";

/// How long the loop polls before it sleeps, by default (microseconds).
const DEFAULT_BUSY_POLL_US: u64 = 50;

/// Bytes counted per key besides its name and value.
const ENTRY_OVERHEAD: usize = 64;

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
    /// Its position in the LRU order.
    tick: u64,
}

/// The cache: values, LRU order, expiry heap, memory account.
struct Store {
    map: HashMap<Vec<u8>, Entry>,
    lru: BTreeMap<u64, Vec<u8>>,
    expiries: BinaryHeap<Reverse<(Instant, Vec<u8>)>>,
    tick: u64,
    used: usize,
    max_memory: Option<usize>,
    data_dir: Option<PathBuf>,
    max_bulk: usize,
    evicted: u64,
    expired: u64,
    commands: u64,
    connections: u64,
}

fn cost(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl Store {
    fn touch(&mut self, key: &[u8]) {
        // The LRU order only matters when something may be evicted.
        if self.max_memory.is_none() {
            return;
        }
        self.tick += 1;
        let t = self.tick;
        if let Some(e) = self.map.get_mut(key) {
            let old = std::mem::replace(&mut e.tick, t);
            if let Some(k) = self.lru.remove(&old) {
                self.lru.insert(t, k);
            }
        }
    }

    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let e = self.map.remove(key)?;
        self.lru.remove(&e.tick);
        self.used -= cost(key, &e.value);
        Some(e)
    }

    /// The live entry for `key`, dropping it if it expired.
    fn live(&mut self, key: &[u8], now: Instant) -> bool {
        match self.map.get(key).and_then(|e| e.expires) {
            Some(t) if t <= now => {
                self.remove(key);
                self.expired += 1;
                false
            }
            _ => self.map.contains_key(key),
        }
    }

    fn get(&mut self, key: &[u8], now: Instant) -> Option<&[u8]> {
        if self.live(key, now) {
            self.touch(key);
        } else {
            let v = self.read_through(key)?;
            self.set(key.to_vec(), v, None);
        }
        self.map.get(key).map(|e| e.value.as_slice())
    }

    /// A missing key's value from `--data-dir`, if the key is a plain file
    /// name there.
    fn read_through(&self, key: &[u8]) -> Option<Vec<u8>> {
        let dir = self.data_dir.as_ref()?;
        let name = std::str::from_utf8(key).ok()?;
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains(['/', '\0', '\\'])
            || name.len() > 255
        {
            return None;
        }
        let path = dir.join(name);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > self.max_bulk as u64 {
            return None;
        }
        std::fs::read(path).ok()
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>, expires: Option<Instant>) {
        self.remove(&key);
        self.tick += 1;
        self.used += cost(&key, &value);
        if self.max_memory.is_some() {
            self.lru.insert(self.tick, key.clone());
        }
        if let Some(t) = expires {
            self.expiries.push(Reverse((t, key.clone())));
        }
        self.map.insert(
            key,
            Entry {
                value,
                expires,
                tick: self.tick,
            },
        );
        self.evict();
    }

    /// Drops least recently used keys until under `--max-memory`.
    fn evict(&mut self) {
        let Some(max) = self.max_memory else { return };
        while self.used > max {
            let Some((_, key)) = self.lru.pop_first() else {
                break;
            };
            if let Some(e) = self.map.remove(&key) {
                self.used -= cost(&key, &e.value);
                self.evicted += 1;
            }
        }
    }

    /// Removes keys whose time has come (the timer's half of expiry).
    fn expire_due(&mut self, now: Instant) {
        while let Some(Reverse((t, _))) = self.expiries.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((t, key))) = self.expiries.pop() else {
                break;
            };
            if self.map.get(&key).and_then(|e| e.expires) == Some(t) {
                self.remove(&key);
                self.expired += 1;
            }
        }
    }
}

fn parse_int(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn upper(v: &[u8]) -> String {
    String::from_utf8_lossy(v).to_ascii_uppercase()
}

/// Executes one command, appending its reply; `true` to close after it.
fn execute(store: &mut Store, args: &[&[u8]], out: &mut Vec<u8>, now: Instant) -> bool {
    store.commands += 1;
    let Some(name) = args.first() else {
        return false;
    };
    let cmd = upper(name);
    let argc = args.len();
    let wrong = |out: &mut Vec<u8>| {
        resp::error(
            out,
            &format!(
                "ERR wrong number of arguments for '{}' command",
                cmd.to_lowercase()
            ),
        )
    };
    match cmd.as_str() {
        "PING" if argc <= 2 => match args.get(1) {
            Some(m) => resp::bulk(out, Some(m)),
            None => resp::simple(out, "PONG"),
        },
        "ECHO" if argc == 2 => resp::bulk(out, Some(args[1])),
        "GET" if argc == 2 => {
            let v = store.get(args[1], now);
            resp::bulk(out, v);
        }
        "SET" if argc >= 3 => {
            let (mut expires, mut nx, mut xx) = (None, false, false);
            let mut i = 3;
            while i < argc {
                match upper(args[i]).as_str() {
                    "NX" => nx = true,
                    "XX" => xx = true,
                    opt @ ("EX" | "PX") if i + 1 < argc => {
                        let Some(n) = parse_int(args[i + 1]).filter(|&n| n > 0) else {
                            resp::error(out, "ERR invalid expire time in 'set' command");
                            return false;
                        };
                        let d = if opt == "EX" {
                            Duration::from_secs(n as u64)
                        } else {
                            Duration::from_millis(n as u64)
                        };
                        expires = Some(now + d);
                        i += 1;
                    }
                    _ => {
                        resp::error(out, "ERR syntax error");
                        return false;
                    }
                }
                i += 1;
            }
            if nx && xx {
                resp::error(out, "ERR syntax error");
                return false;
            }
            let exists = store.live(args[1], now);
            if (nx && exists) || (xx && !exists) {
                resp::bulk(out, None);
            } else {
                store.set(args[1].to_vec(), args[2].to_vec(), expires);
                resp::simple(out, "OK");
            }
        }
        "DEL" if argc >= 2 => {
            let n = args[1..]
                .iter()
                .filter(|k| store.live(k, now) && store.remove(k).is_some())
                .count();
            resp::integer(out, n as i64);
        }
        "EXISTS" if argc >= 2 => {
            let n = args[1..].iter().filter(|k| store.live(k, now)).count();
            resp::integer(out, n as i64);
        }
        "INCR" | "DECR" | "INCRBY" | "DECRBY" => {
            let by = match (cmd.as_str(), argc) {
                ("INCR", 2) => Some(1),
                ("DECR", 2) => Some(-1),
                ("INCRBY", 3) => parse_int(args[2]),
                ("DECRBY", 3) => parse_int(args[2]).and_then(|n| n.checked_neg()),
                _ => {
                    wrong(out);
                    return false;
                }
            };
            let Some(by) = by else {
                resp::error(out, "ERR value is not an integer or out of range");
                return false;
            };
            let key = args[1];
            let (cur, expires) = if store.live(key, now) {
                let e = &store.map[key];
                match parse_int(&e.value) {
                    Some(n) => (n, e.expires),
                    None => {
                        resp::error(out, "ERR value is not an integer or out of range");
                        return false;
                    }
                }
            } else {
                (0, None)
            };
            match cur.checked_add(by) {
                Some(n) => {
                    store.set(key.to_vec(), n.to_string().into_bytes(), expires);
                    resp::integer(out, n);
                }
                None => resp::error(out, "ERR increment or decrement would overflow"),
            }
        }
        "MGET" if argc >= 2 => {
            resp::array(out, argc - 1);
            for k in &args[1..] {
                let v = store.get(k, now);
                resp::bulk(out, v);
            }
        }
        "MSET" if argc >= 3 && argc % 2 == 1 => {
            for kv in args[1..].chunks(2) {
                store.set(kv[0].to_vec(), kv[1].to_vec(), None);
            }
            resp::simple(out, "OK");
        }
        "EXPIRE" if argc == 3 => match parse_int(args[2]) {
            None => resp::error(out, "ERR value is not an integer or out of range"),
            Some(s) if store.live(args[1], now) => {
                if s <= 0 {
                    store.remove(args[1]);
                } else {
                    let t = now + Duration::from_secs(s as u64);
                    if let Some(e) = store.map.get_mut(args[1]) {
                        e.expires = Some(t);
                    }
                    store.expiries.push(Reverse((t, args[1].to_vec())));
                }
                resp::integer(out, 1);
            }
            Some(_) => resp::integer(out, 0),
        },
        "TTL" if argc == 2 => {
            let ttl = if !store.live(args[1], now) {
                -2
            } else {
                match store.map[args[1]].expires {
                    None => -1,
                    Some(t) => t.saturating_duration_since(now).as_secs_f64().round() as i64,
                }
            };
            resp::integer(out, ttl);
        }
        "DBSIZE" if argc == 1 => resp::integer(out, store.map.len() as i64),
        "FLUSHALL" | "FLUSHDB" => {
            store.map.clear();
            store.lru.clear();
            store.expiries.clear();
            store.used = 0;
            resp::simple(out, "OK");
        }
        "INFO" => {
            let text = format!(
                "# Server\r\nredis_version:7.0.0-procwire\r\nprocwire_version:{}\r\n# Clients\r\nconnected_clients_total:{}\r\n# Memory\r\nused_memory:{}\r\nmaxmemory:{}\r\n# Stats\r\ntotal_commands_processed:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\n# Keyspace\r\ndb0:keys={}\r\n",
                env!("CARGO_PKG_VERSION"),
                store.connections,
                store.used,
                store.max_memory.unwrap_or(0),
                store.commands,
                store.expired,
                store.evicted,
                store.map.len()
            );
            resp::bulk(out, Some(text.as_bytes()));
        }
        "CONFIG" if argc == 3 && upper(args[1]) == "GET" => {
            let key = String::from_utf8_lossy(args[2]).to_ascii_lowercase();
            let value = match key.as_str() {
                "save" => Some(String::new()),
                "appendonly" => Some("no".to_string()),
                "maxmemory" => Some(store.max_memory.unwrap_or(0).to_string()),
                _ => None,
            };
            match value {
                Some(v) => {
                    resp::array(out, 2);
                    resp::bulk(out, Some(key.as_bytes()));
                    resp::bulk(out, Some(v.as_bytes()));
                }
                None => resp::array(out, 0),
            }
        }
        "QUIT" => {
            resp::simple(out, "OK");
            return true;
        }
        "PING" | "ECHO" | "GET" | "SET" | "DEL" | "EXISTS" | "MGET" | "MSET" | "EXPIRE" | "TTL"
        | "DBSIZE" | "CONFIG" => wrong(out),
        _ => resp::error(
            out,
            &format!("ERR unknown command '{}'", String::from_utf8_lossy(name)),
        ),
    }
    false
}

/// One client connection: parses requests, executes them in order.
struct Client {
    store: Rc<RefCell<Store>>,
    reply: Vec<u8>,
}

impl Protocol for Client {
    /// Executes every complete request in `input` (pipelining), then sends
    /// all their replies in one write.
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> std::io::Result<usize> {
        let max_bulk = self.store.borrow().max_bulk;
        let now = Instant::now();
        self.reply.clear();
        let mut consumed = 0;
        let mut quit = false;
        let mut store = self.store.borrow_mut();
        // Bound the replies of one batch, so a long pipeline of big GETs
        // goes out in pieces under the server's output limit.
        while consumed < input.len() && self.reply.len() < 256 * 1024 && !quit {
            match parse_request(&input[consumed..], max_bulk) {
                Ok(None) => break,
                Ok(Some((args, n))) => {
                    quit = execute(&mut store, &args, &mut self.reply, now);
                    consumed += n;
                }
                Err(e) => {
                    // Answer, then close this connection only.
                    resp::error(&mut self.reply, &format!("ERR {e}"));
                    consumed = input.len();
                    quit = true;
                }
            }
        }
        drop(store);
        if !self.reply.is_empty() {
            out.write(&self.reply)?;
        }
        if quit {
            out.close();
        }
        Ok(consumed)
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mul) = if let Some(n) = t.strip_suffix("gb") {
        (n, 1 << 30)
    } else if let Some(n) = t.strip_suffix("mb") {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("kb") {
        (n, 1 << 10)
    } else {
        (t.as_str(), 1)
    };
    num.trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("bad size {s:?}"))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cache_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let (mut port, mut host, mut unix, mut tcp) =
        (0u16, IpAddr::V4(Ipv4Addr::LOCALHOST), None, true);
    let (mut data_dir, mut max_memory, mut max_bulk) = (None, None, DEFAULT_MAX_BULK);
    let mut busy_poll = DEFAULT_BUSY_POLL_US;
    while let Some(arg) = p.next()? {
        match arg {
            Long("port") => port = p.value()?.parse()?,
            Long("host") => host = p.value()?.parse()?,
            Long("unix") => unix = Some(PathBuf::from(p.value()?)),
            Long("no-tcp") => tcp = false,
            Long("data-dir") => data_dir = Some(PathBuf::from(p.value()?)),
            Long("max-memory") => max_memory = Some(parse_size(&p.value()?.string()?)?),
            Long("max-bulk") => max_bulk = parse_size(&p.value()?.string()?)?,
            Long("busy-poll") => busy_poll = p.value()?.parse()?,
            Short('h') | Long("help") => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => return Err(format!("{}\n{USAGE}", arg.unexpected()).into()),
        }
    }
    if !tcp && unix.is_none() {
        return Err("--no-tcp needs --unix".into());
    }
    let lp = EventLoop::new()?;
    lp.set_busy_poll(Duration::from_micros(busy_poll));
    lp.on_shutdown(|cx| cx.stop())?;
    let store = Rc::new(RefCell::new(Store {
        map: HashMap::new(),
        lru: BTreeMap::new(),
        expiries: BinaryHeap::new(),
        tick: 0,
        used: 0,
        max_memory,
        data_dir,
        max_bulk,
        evicted: 0,
        expired: 0,
        commands: 0,
        connections: 0,
    }));
    let opts = ServerOptions {
        // A request may carry one bulk string of up to --max-bulk, plus room.
        max_input: max_bulk.saturating_add(64 * 1024),
        ..ServerOptions::default()
    };
    let mut listeners = Vec::new();
    if tcp {
        let addr = SocketAddr::new(host, port);
        let l = Socket::for_addr(&SockAddr::Inet(addr), Type::STREAM)?;
        l.set_reuse_address(true)?;
        l.bind(addr)?;
        l.listen(1024)?;
        listeners.push(l);
    }
    if let Some(path) = &unix {
        let _ = std::fs::remove_file(path);
        let l = Socket::new(Domain::UNIX, Type::STREAM)?;
        l.bind(SockAddr::unix(path))?;
        l.listen(1024)?;
        listeners.push(l);
    }
    let mut servers = Vec::new();
    for l in listeners {
        println!("cache_server listening on {}", l.local_addr()?);
        let st = Rc::clone(&store);
        servers.push(serve(&lp, l, opts.clone(), move |_| {
            st.borrow_mut().connections += 1;
            Client {
                store: Rc::clone(&st),
                reply: Vec::new(),
            }
        })?);
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    let st = Rc::clone(&store);
    lp.every(Duration::from_millis(100), move |_| {
        st.borrow_mut().expire_due(Instant::now())
    });
    lp.run()?;
    if let Some(path) = &unix {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
