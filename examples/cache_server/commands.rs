//! The commands: a table of what each one is (name, arity, flags, key
//! positions, as `COMMAND` reports them) and `execute`, which checks a
//! request against it and runs it with Redis's semantics and error texts.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Weak;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use procwire::net::resp::{self, Version};

use super::glob;
use super::store::Store;

/// The Redis version this server answers as (HELLO, INFO): the release
/// whose commands and replies it follows.
pub const REDIS_VERSION: &str = "7.2.0";

/// How long one slice of a KEYS walk runs before the other connections
/// have their turn: a time, not a count of keys, so the pause a walk
/// causes is the same on a fast host and a slow one.
pub const KEYS_SLICE: Duration = Duration::from_millis(1);

/// Keys a KEYS walk visits between two readings of the clock.
const KEYS_STEP: usize = 512;

/// The most keys one SCAN call visits, whatever its COUNT says (COUNT is a
/// hint in Redis too).
pub const SCAN_MAX_COUNT: usize = 16 * 1024;

const NOT_INT: &str = "ERR value is not an integer or out of range";
const NOT_FLOAT: &str = "ERR value is not a valid float";
const SYNTAX: &str = "ERR syntax error";
const TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// What `COMMAND` says of one command.
pub struct Spec {
    pub name: &'static str,
    /// Exactly this many arguments (the name included) when positive, at
    /// least `-arity` when negative.
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
    }
}

const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "fast"];
const C: &[&str] = &["loading", "stale", "fast"];
const NOAUTH: &[&str] = &["noscript", "loading", "stale", "fast", "no-auth"];
const TX: &[&str] = &["noscript", "loading", "stale", "fast", "allow_busy"];
const NONE: (i64, i64, i64) = (0, 0, 0);
const K1: (i64, i64, i64) = (1, 1, 1);
const K2: (i64, i64, i64) = (1, 2, 1);
const KALL: (i64, i64, i64) = (1, -1, 1);
const KPAIRS: (i64, i64, i64) = (1, -1, 2);

/// Every command, sorted by name (binary-searched).
pub static COMMANDS: &[Spec] = &[
    spec("append", 3, W, K1),
    spec("auth", -2, NOAUTH, NONE),
    spec("client", -2, &["noscript", "loading", "stale"], NONE),
    spec("command", -1, &["loading", "stale"], NONE),
    spec(
        "config",
        -2,
        &["admin", "noscript", "loading", "stale"],
        NONE,
    ),
    spec("dbsize", 1, R, NONE),
    spec("decr", 2, W, K1),
    spec("decrby", 3, W, K1),
    spec("del", -2, &["write"], KALL),
    spec("discard", 1, TX, NONE),
    spec("echo", 2, C, NONE),
    spec(
        "exec",
        1,
        &["noscript", "loading", "stale", "skip_slowlog"],
        NONE,
    ),
    spec("exists", -2, R, KALL),
    spec("expire", -3, WF, K1),
    spec("expireat", -3, WF, K1),
    spec("flushall", -1, &["write"], NONE),
    spec("flushdb", -1, &["write"], NONE),
    spec("get", 2, R, K1),
    spec("getdel", 2, WF, K1),
    spec("getex", -2, WF, K1),
    spec("getrange", 4, &["readonly"], K1),
    spec("getset", 3, W, K1),
    spec("hello", -1, NOAUTH, NONE),
    spec("incr", 2, W, K1),
    spec("incrby", 3, W, K1),
    spec("incrbyfloat", 3, W, K1),
    spec("info", -1, &["loading", "stale"], NONE),
    spec("keys", 2, &["readonly"], NONE),
    spec("mget", -2, R, KALL),
    spec("mset", -3, W, KPAIRS),
    spec("msetnx", -3, W, KPAIRS),
    spec("multi", 1, TX, NONE),
    spec("persist", 2, WF, K1),
    spec("pexpire", -3, WF, K1),
    spec("pexpireat", -3, WF, K1),
    spec("ping", -1, C, NONE),
    spec("psetex", 4, W, K1),
    spec("pttl", 2, R, K1),
    spec("quit", -1, NOAUTH, NONE),
    spec("rename", 3, &["write"], K2),
    spec("renamenx", 3, WF, K2),
    spec("reset", 1, NOAUTH, NONE),
    spec("scan", -2, &["readonly"], NONE),
    spec("select", 2, C, NONE),
    spec("set", -3, W, K1),
    spec("setex", 4, W, K1),
    spec("setnx", 3, &["write", "denyoom", "fast"], K1),
    spec("setrange", 4, W, K1),
    spec("strlen", 2, R, K1),
    spec("substr", 4, &["readonly"], K1),
    spec("time", 1, C, NONE),
    spec("touch", -2, R, KALL),
    spec("ttl", 2, R, K1),
    spec("type", 2, R, K1),
    spec("unlink", -2, WF, KALL),
    spec("unwatch", 1, TX, NONE),
    spec("watch", -2, TX, KALL),
];

/// The command named `name`, in any case.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .binary_search_by(|s| {
            let a = s.name.as_bytes();
            a.iter()
                .map(|c| c.to_ascii_lowercase())
                .cmp(name.iter().map(|c| c.to_ascii_lowercase()))
        })
        .ok()
        .map(|i| &COMMANDS[i])
}

/// A KEYS walk in progress on one connection: where it is, and the keys
/// found so far, already encoded (so the last slice costs no more than the
/// others).
pub struct Walk {
    cursor: u64,
    count: usize,
    encoded: Vec<u8>,
}

/// One connection's state, as CLIENT LIST shows it.
pub struct Session {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub name: Option<Vec<u8>>,
    pub lib_name: Option<Vec<u8>>,
    pub lib_ver: Option<Vec<u8>>,
    pub version: Version,
    pub authenticated: bool,
    pub created: Instant,
    pub last: Instant,
    pub last_cmd: &'static str,
    pub walk: Option<Walk>,
    /// Commands queued since MULTI.
    pub multi: Option<Vec<Vec<Vec<u8>>>>,
    /// A command queued since MULTI was refused: EXEC aborts.
    pub multi_failed: bool,
    /// WATCHed keys and their stamps when watched.
    pub watched: Vec<(Vec<u8>, Option<u64>)>,
    /// Running the commands of an EXEC: none of them may be sliced.
    pub in_exec: bool,
}

impl Session {
    pub fn new(id: u64, addr: String, laddr: String, authenticated: bool, now: Instant) -> Self {
        Session {
            id,
            addr,
            laddr,
            name: None,
            lib_name: None,
            lib_ver: None,
            version: Version::Resp2,
            authenticated,
            created: now,
            last: now,
            last_cmd: "NULL",
            walk: None,
            multi: None,
            multi_failed: false,
            watched: Vec::new(),
            in_exec: false,
        }
    }

    fn line(&self, now: Instant) -> String {
        let s = |v: &Option<Vec<u8>>| {
            v.as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned()
        };
        format!(
            "id={} addr={} laddr={} name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.addr,
            self.laddr,
            s(&self.name),
            now.saturating_duration_since(self.created).as_secs(),
            now.saturating_duration_since(self.last).as_secs(),
            self.last_cmd,
            self.version.number(),
            s(&self.lib_name),
            s(&self.lib_ver),
        )
    }
}

/// What the server shares between connections.
pub struct Server {
    pub store: Store,
    pub password: Option<Vec<u8>>,
    pub clients: BTreeMap<u64, Weak<RefCell<Session>>>,
    pub next_id: u64,
    pub commands: u64,
    pub connections: u64,
    pub started: Instant,
}

/// What a request did to its connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Done,
    /// Answered; close the connection after the reply (QUIT).
    Close,
    /// Not finished (a KEYS walk): present the same request again later.
    Again,
}

/// A strict decimal `i64`, as Redis's `string2ll` reads one: an optional
/// `-`, no `+`, no spaces, no leading zeros.
pub fn int(v: &[u8]) -> Option<i64> {
    let (neg, d) = match v.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, v),
    };
    if d.is_empty()
        || d.len() > 19
        || !d.iter().all(u8::is_ascii_digit)
        || (d[0] == b'0' && (d.len() > 1 || neg))
    {
        return None;
    }
    let mut n: i64 = 0;
    for &c in d {
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub(i64::from(c - b'0'))?
        } else {
            n.checked_add(i64::from(c - b'0'))?
        };
    }
    Some(n)
}

/// A float as Redis's `string2ld` reads one: no spaces, not NaN.
fn float(v: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(v).ok()?;
    if t.is_empty() || t.trim() != t || t.len() > 5000 {
        return None;
    }
    let f: f64 = t.parse().ok()?;
    (!f.is_nan()).then_some(f)
}

fn eq_ic(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// When an expiry falls.
enum When {
    At(Instant),
    /// Already past: the key goes at once.
    Past,
}

/// Turns an expiry argument into a time: `n` in seconds or milliseconds,
/// relative to now or a Unix time. `None` when it can't be represented
/// (Redis's "invalid expire time").
fn when(n: i64, millis: bool, absolute: bool, now: Instant) -> Option<When> {
    let ms = if millis { n } else { n.checked_mul(1000)? };
    let delta = if absolute {
        ms.checked_sub(unix_ms())?
    } else {
        ms
    };
    if delta <= 0 {
        // Redis also refuses a time whose sum with now overflows.
        if !absolute {
            ms.checked_add(unix_ms())?;
        }
        return Some(When::Past);
    }
    unix_ms().checked_add(delta)?;
    now.checked_add(Duration::from_millis(delta as u64))
        .map(When::At)
}

/// Remaining time to live in milliseconds: -2 missing, -1 no expiry.
fn pttl(store: &mut Store, key: &[u8], now: Instant) -> i64 {
    match store.entry(key, now) {
        None => -2,
        Some(e) => match e.expires {
            None => -1,
            Some(t) => t.saturating_duration_since(now).as_millis() as i64,
        },
    }
}

struct Reply<'a> {
    out: &'a mut Vec<u8>,
    v: Version,
}

impl Reply<'_> {
    fn ok(&mut self) {
        resp::simple(self.out, "OK");
    }
    fn err(&mut self, msg: &str) {
        resp::error(self.out, msg);
    }
    fn int(&mut self, n: i64) {
        resp::integer(self.out, n);
    }
    fn bulk(&mut self, b: &[u8]) {
        resp::bulk(self.out, Some(b));
    }
    fn opt(&mut self, b: Option<&[u8]>) {
        resp::bulk_or_null(self.out, b, self.v);
    }
    fn null(&mut self) {
        resp::null(self.out, self.v);
    }
    fn array(&mut self, n: usize) {
        resp::array(self.out, n);
    }
    fn map(&mut self, n: usize) {
        resp::map(self.out, n, self.v);
    }
    fn set(&mut self, n: usize) {
        resp::set(self.out, n, self.v);
    }
    fn simple(&mut self, s: &str) {
        resp::simple(self.out, s);
    }
    fn verbatim(&mut self, text: &str) {
        resp::verbatim(self.out, b"txt", text.as_bytes(), self.v);
    }
    fn wrong_args(&mut self, name: &str) {
        self.err(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
    }
}

fn bad_name(name: &[u8]) -> bool {
    name.iter().any(|&c| !(b'!'..=b'~').contains(&c))
}

/// Compares without leaking, through timing, where a password differs.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn authenticate(server: &Server, user: &[u8], pass: &[u8]) -> bool {
    user == b"default"
        && server
            .password
            .as_deref()
            .map_or(true, |p| same_secret(p, pass))
}

/// Runs one request, appending its reply.
pub fn execute(
    server: &mut Server,
    sess: &mut Session,
    args: &[&[u8]],
    out: &mut Vec<u8>,
    now: Instant,
) -> Outcome {
    let mut r = Reply {
        out,
        v: sess.version,
    };
    let Some(&name) = args.first() else {
        return Outcome::Done;
    };
    let Some(spec) = lookup(name) else {
        if sess.multi.is_some() {
            sess.multi_failed = true;
        }
        let mut msg = format!(
            "ERR unknown command '{}', with args beginning with: ",
            String::from_utf8_lossy(name)
        );
        for a in args[1..].iter().take(16) {
            msg.push_str(&format!("'{}' ", String::from_utf8_lossy(a)));
        }
        r.err(&msg);
        return Outcome::Done;
    };
    let argc = args.len() as i64;
    if (spec.arity > 0 && argc != spec.arity) || argc < -spec.arity {
        if sess.multi.is_some() {
            sess.multi_failed = true;
        }
        r.wrong_args(spec.name);
        return Outcome::Done;
    }
    if !sess.authenticated && !spec.flags.contains(&"no-auth") {
        r.err("NOAUTH Authentication required.");
        return Outcome::Done;
    }
    sess.last = now;
    sess.last_cmd = spec.name;
    if let Some(queue) = sess.multi.as_mut() {
        if !matches!(
            spec.name,
            "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
        ) {
            queue.push(args.iter().map(|a| a.to_vec()).collect());
            r.simple("QUEUED");
            return Outcome::Done;
        }
    }
    let outcome = run(server, sess, spec, args, &mut r, now);
    if outcome != Outcome::Again {
        server.commands += 1;
    }
    outcome
}

fn run(
    server: &mut Server,
    sess: &mut Session,
    spec: &Spec,
    args: &[&[u8]],
    r: &mut Reply<'_>,
    now: Instant,
) -> Outcome {
    let store = &mut server.store;
    let argc = args.len();
    match spec.name {
        "ping" => match args.get(1) {
            _ if argc > 2 => r.wrong_args("ping"),
            Some(m) => r.bulk(m),
            None => r.simple("PONG"),
        },
        "echo" => r.bulk(args[1]),
        "quit" => {
            r.ok();
            return Outcome::Close;
        }
        "select" => match int(args[1]) {
            None => r.err(NOT_INT),
            Some(0) => r.ok(),
            Some(_) => r.err("ERR DB index is out of range"),
        },
        "auth" => {
            let (user, pass) = match argc {
                2 => (&b"default"[..], args[1]),
                3 => (args[1], args[2]),
                _ => {
                    r.err(SYNTAX);
                    return Outcome::Done;
                }
            };
            if argc == 2 && server.password.is_none() {
                r.err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
            } else if authenticate(server, user, pass) {
                sess.authenticated = true;
                r.ok();
            } else {
                r.err(WRONGPASS);
            }
        }
        "hello" => hello(server, sess, args, r),
        "multi" => {
            if sess.multi.is_some() {
                r.err("ERR MULTI calls can not be nested");
            } else {
                sess.multi = Some(Vec::new());
                sess.multi_failed = false;
                r.ok();
            }
        }
        "discard" => {
            if sess.multi.take().is_some() {
                sess.watched.clear();
                r.ok();
            } else {
                r.err("ERR DISCARD without MULTI");
            }
        }
        "exec" => return exec(server, sess, r, now),
        "watch" => {
            if sess.multi.is_some() {
                r.err("ERR WATCH inside MULTI is not allowed");
            } else {
                for k in &args[1..] {
                    let stamp = store.stamp(k, now);
                    sess.watched.push((k.to_vec(), stamp));
                }
                r.ok();
            }
        }
        "unwatch" => {
            sess.watched.clear();
            r.ok();
        }
        "reset" => {
            sess.version = Version::Resp2;
            sess.name = None;
            sess.walk = None;
            sess.multi = None;
            sess.watched.clear();
            sess.authenticated = server.password.is_none();
            resp::simple(r.out, "RESET");
        }
        "client" => client(server, sess, args, r, now),
        "command" => command(args, r),
        "info" => info(server, args, r),
        "config" => config(server, args, r),
        "time" => {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            r.array(2);
            r.bulk(t.as_secs().to_string().as_bytes());
            r.bulk(t.subsec_micros().to_string().as_bytes());
        }
        "dbsize" => r.int(store.len() as i64),
        "flushdb" | "flushall" => {
            if argc > 2 || (argc == 2 && !eq_ic(args[1], "async") && !eq_ic(args[1], "sync")) {
                r.err(SYNTAX);
            } else {
                store.clear();
                r.ok();
            }
        }
        "get" => {
            let v = store.get(args[1], now);
            r.opt(v);
        }
        "mget" => {
            r.array(argc - 1);
            for k in &args[1..] {
                let v = store.get(k, now);
                r.opt(v);
            }
        }
        "set" => set(store, args, r, now),
        "setnx" => {
            if store.live(args[1], now) {
                r.int(0);
            } else {
                store.set(args[1], args[2].to_vec(), None);
                r.int(1);
            }
        }
        "setex" | "psetex" => match int(args[2]) {
            None => r.err(NOT_INT),
            Some(n) => match (n > 0)
                .then(|| when(n, spec.name == "psetex", false, now))
                .flatten()
            {
                Some(When::At(t)) => {
                    store.set(args[1], args[3].to_vec(), Some(t));
                    r.ok();
                }
                _ => r.err(&format!(
                    "ERR invalid expire time in '{}' command",
                    spec.name
                )),
            },
        },
        "getset" => {
            // A value that expired is gone: no old value then.
            let live = store.live(args[1], now);
            let old = store.set(args[1], args[2].to_vec(), None).filter(|_| live);
            r.opt(old.as_deref());
        }
        "getdel" => {
            let old = store
                .entry(args[1], now)
                .is_some()
                .then(|| store.remove(args[1]))
                .flatten();
            r.opt(old.as_ref().map(|e| e.value.as_slice()));
        }
        "getex" => getex(store, args, r, now),
        "append" => {
            let max = store.max_bulk;
            let add = args[2];
            match store.update(args[1], now, |v| {
                if v.len() + add.len() > max {
                    None
                } else {
                    v.extend_from_slice(add);
                    Some(v.len())
                }
            }) {
                Some(Some(n)) => r.int(n as i64),
                Some(None) => r.err(TOO_BIG),
                None if add.len() > max => r.err(TOO_BIG),
                None => {
                    store.set(args[1], add.to_vec(), None);
                    r.int(add.len() as i64);
                }
            }
        }
        "strlen" => {
            let n = store.get(args[1], now).map_or(0, <[u8]>::len);
            r.int(n as i64);
        }
        "getrange" | "substr" => match (int(args[2]), int(args[3])) {
            (Some(start), Some(end)) => {
                let v = store.get(args[1], now).unwrap_or_default();
                r.bulk(range(v, start, end));
            }
            _ => r.err(NOT_INT),
        },
        "setrange" => setrange(store, args, r, now),
        "incr" | "decr" | "incrby" | "decrby" => {
            let by = match spec.name {
                "incr" => Some(1),
                "decr" => Some(-1),
                "incrby" => int(args[2]),
                _ => match int(args[2]) {
                    Some(i64::MIN) => {
                        r.err("ERR decrement would overflow");
                        return Outcome::Done;
                    }
                    n => n.map(|n| -n),
                },
            };
            let Some(by) = by else {
                r.err(NOT_INT);
                return Outcome::Done;
            };
            incr(store, args[1], r, now, |cur| {
                int(cur).ok_or(NOT_INT).and_then(|n| {
                    n.checked_add(by)
                        .ok_or("ERR increment or decrement would overflow")
                })
            });
        }
        "incrbyfloat" => {
            let Some(by) = float(args[2]) else {
                r.err(NOT_FLOAT);
                return Outcome::Done;
            };
            let cur = match store.entry(args[1], now) {
                None => 0.0,
                Some(e) => match float(&e.value) {
                    Some(f) => f,
                    None => {
                        r.err(NOT_FLOAT);
                        return Outcome::Done;
                    }
                },
            };
            let n = cur + by;
            if !n.is_finite() {
                r.err("ERR increment would produce NaN or Infinity");
                return Outcome::Done;
            }
            let text = resp::format_double(n).into_bytes();
            if store
                .update(args[1], now, |v| v.clone_from(&text))
                .is_none()
            {
                store.set(args[1], text.clone(), None);
            }
            r.bulk(&text);
        }
        "mset" | "msetnx" => {
            if argc % 2 == 0 {
                r.wrong_args(spec.name);
                return Outcome::Done;
            }
            if spec.name == "msetnx" && args[1..].chunks(2).any(|kv| store.live(kv[0], now)) {
                r.int(0);
                return Outcome::Done;
            }
            for kv in args[1..].chunks(2) {
                store.set(kv[0], kv[1].to_vec(), None);
            }
            if spec.name == "msetnx" {
                r.int(1);
            } else {
                r.ok();
            }
        }
        "del" | "unlink" => {
            let n = args[1..]
                .iter()
                .filter(|k| store.live(k, now) && store.remove(k).is_some())
                .count();
            r.int(n as i64);
        }
        "exists" | "touch" => {
            let n = args[1..].iter().filter(|k| store.live(k, now)).count();
            r.int(n as i64);
        }
        "expire" | "pexpire" | "expireat" | "pexpireat" => expire(store, spec.name, args, r, now),
        "ttl" => {
            let ms = pttl(store, args[1], now);
            r.int(if ms < 0 { ms } else { (ms + 500) / 1000 });
        }
        "pttl" => {
            let ms = pttl(store, args[1], now);
            r.int(ms);
        }
        "persist" => {
            let had = store
                .entry(args[1], now)
                .is_some_and(|e| e.expires.is_some());
            if had {
                store.set_expiry(args[1], None, now);
            }
            r.int(i64::from(had));
        }
        "type" => {
            let t = if store.live(args[1], now) {
                "string"
            } else {
                "none"
            };
            r.simple(t);
        }
        "rename" | "renamenx" => {
            if !store.live(args[1], now) {
                r.err("ERR no such key");
            } else if spec.name == "renamenx" {
                if args[1] == args[2] || store.live(args[2], now) {
                    r.int(0);
                } else {
                    store.rename(args[1], args[2]);
                    r.int(1);
                }
            } else {
                if args[1] != args[2] {
                    store.rename(args[1], args[2]);
                }
                r.ok();
            }
        }
        "keys" => return keys(store, sess, args[1], r, now),
        "scan" => scan(store, args, r, now),
        _ => r.err(&format!("ERR unknown command '{}'", spec.name)),
    }
    Outcome::Done
}

/// Redis's GETRANGE: inclusive, negative indices from the end, clamped.
pub fn range(v: &[u8], start: i64, end: i64) -> &[u8] {
    let len = v.len() as i64;
    if (start < 0 && end < 0 && start > end) || len == 0 {
        return &[];
    }
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 {
        (len + end).max(0)
    } else {
        end.min(len - 1)
    };
    if start > end {
        return &[];
    }
    &v[start as usize..=end as usize]
}

/// Replaces the integer in `key` (0 when missing) by what `f` makes of it.
fn incr(
    store: &mut Store,
    key: &[u8],
    r: &mut Reply<'_>,
    now: Instant,
    f: impl Fn(&[u8]) -> Result<i64, &'static str>,
) {
    let result = match store.entry(key, now) {
        Some(e) => f(&e.value),
        None => f(b"0"),
    };
    match result {
        Ok(n) => {
            let text = n.to_string().into_bytes();
            if store.update(key, now, |v| v.clone_from(&text)).is_none() {
                store.set(key, text, None);
            }
            r.int(n);
        }
        Err(e) => r.err(e),
    }
}

fn set(store: &mut Store, args: &[&[u8]], r: &mut Reply<'_>, now: Instant) {
    let (mut expires, mut nx, mut xx, mut keep, mut get) = (None, false, false, false, false);
    let mut i = 3;
    while i < args.len() {
        let a = args[i];
        if eq_ic(a, "nx") && !xx {
            nx = true;
        } else if eq_ic(a, "xx") && !nx {
            xx = true;
        } else if eq_ic(a, "get") {
            get = true;
        } else if eq_ic(a, "keepttl") && expires.is_none() {
            keep = true;
        } else if EXPIRY_OPTIONS.iter().any(|o| eq_ic(a, o))
            && expires.is_none()
            && !keep
            && i + 1 < args.len()
        {
            match expiry_option(a, args[i + 1], "set", now) {
                Ok(w) => expires = Some(w),
                Err(e) => {
                    r.err(&e);
                    return;
                }
            }
            i += 1;
        } else {
            r.err(SYNTAX);
            return;
        }
        i += 1;
    }
    // The old value is copied only for GET (or a refused NX/XX with GET).
    let (exists, old_ttl) = match store.entry(args[1], now) {
        Some(e) => (true, e.expires),
        None => (false, None),
    };
    if (nx && exists) || (xx && !exists) {
        if get {
            let v = store.entry(args[1], now).map(|e| e.value.clone());
            r.opt(v.as_deref());
        } else {
            r.null();
        }
        return;
    }
    let old = match expires {
        Some(When::Past) => store.remove(args[1]).map(|e| e.value),
        Some(When::At(t)) => store.set(args[1], args[2].to_vec(), Some(t)),
        None => store.set(args[1], args[2].to_vec(), if keep { old_ttl } else { None }),
    };
    if get {
        r.opt(old.as_deref());
    } else {
        r.ok();
    }
}

/// The options of SET and GETEX that set an expiry.
const EXPIRY_OPTIONS: [&str; 4] = ["ex", "px", "exat", "pxat"];

/// The time an `EX`/`PX`/`EXAT`/`PXAT` option of `cmd` names, or the error
/// to reply (not an integer, not positive, or out of range).
fn expiry_option(opt: &[u8], arg: &[u8], cmd: &str, now: Instant) -> Result<When, String> {
    let n = int(arg).ok_or(NOT_INT)?;
    let millis = eq_ic(opt, "px") || eq_ic(opt, "pxat");
    let absolute = eq_ic(opt, "exat") || eq_ic(opt, "pxat");
    (n > 0)
        .then(|| when(n, millis, absolute, now))
        .flatten()
        .ok_or_else(|| format!("ERR invalid expire time in '{cmd}' command"))
}

fn getex(store: &mut Store, args: &[&[u8]], r: &mut Reply<'_>, now: Instant) {
    let mut change: Option<Option<When>> = None;
    let mut i = 2;
    while i < args.len() {
        let a = args[i];
        if eq_ic(a, "persist") && change.is_none() {
            change = Some(None);
        } else if EXPIRY_OPTIONS.iter().any(|o| eq_ic(a, o))
            && change.is_none()
            && i + 1 < args.len()
        {
            match expiry_option(a, args[i + 1], "getex", now) {
                Ok(w) => change = Some(Some(w)),
                Err(e) => {
                    r.err(&e);
                    return;
                }
            }
            i += 1;
        } else {
            r.err(SYNTAX);
            return;
        }
        i += 1;
    }
    let Some(v) = store.get(args[1], now).map(<[u8]>::to_vec) else {
        r.null();
        return;
    };
    match change {
        Some(Some(When::Past)) => {
            store.remove(args[1]);
        }
        Some(Some(When::At(t))) => {
            store.set_expiry(args[1], Some(t), now);
        }
        Some(None) => {
            store.set_expiry(args[1], None, now);
        }
        None => {}
    }
    r.bulk(&v);
}

fn setrange(store: &mut Store, args: &[&[u8]], r: &mut Reply<'_>, now: Instant) {
    let Some(offset) = int(args[2]) else {
        r.err(NOT_INT);
        return;
    };
    if offset < 0 {
        r.err("ERR offset is out of range");
        return;
    }
    let value = args[3];
    let offset = offset as u64;
    let exists = store.live(args[1], now);
    if value.is_empty() {
        let n = store.entry(args[1], now).map_or(0, |e| e.value.len());
        r.int(n as i64);
        return;
    }
    if offset + value.len() as u64 > store.max_bulk as u64 {
        r.err(TOO_BIG);
        return;
    }
    let offset = offset as usize;
    let write = |v: &mut Vec<u8>| {
        if v.len() < offset + value.len() {
            v.resize(offset + value.len(), 0);
        }
        v[offset..offset + value.len()].copy_from_slice(value);
        v.len()
    };
    let n = if exists {
        store.update(args[1], now, write).unwrap_or(0)
    } else {
        let mut v = Vec::new();
        let n = write(&mut v);
        store.set(args[1], v, None);
        n
    };
    r.int(n as i64);
}

fn expire(store: &mut Store, name: &str, args: &[&[u8]], r: &mut Reply<'_>, now: Instant) {
    let Some(n) = int(args[2]) else {
        r.err(NOT_INT);
        return;
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for a in &args[3..] {
        match () {
            _ if eq_ic(a, "nx") => nx = true,
            _ if eq_ic(a, "xx") => xx = true,
            _ if eq_ic(a, "gt") => gt = true,
            _ if eq_ic(a, "lt") => lt = true,
            _ => {
                r.err(&format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(a)
                ));
                return;
            }
        }
    }
    if nx && (xx || gt || lt) {
        r.err("ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    if gt && lt {
        r.err("ERR GT and LT options at the same time are not compatible");
        return;
    }
    let millis = name.starts_with('p');
    let absolute = name.ends_with("at");
    let Some(w) = when(n, millis, absolute, now) else {
        r.err(&format!("ERR invalid expire time in '{name}' command"));
        return;
    };
    let Some(current) = store.entry(args[1], now).map(|e| e.expires) else {
        r.int(0);
        return;
    };
    // No expiry counts as an infinite one for GT and LT.
    let new = match w {
        When::At(t) => Some(t),
        When::Past => None,
    };
    let allowed = match (nx, xx, gt, lt) {
        (true, ..) => current.is_none(),
        (_, true, ..) if current.is_none() => false,
        (_, _, true, _) => match (current, new) {
            (None, _) => false,
            (Some(c), Some(t)) => t > c,
            (Some(_), None) => false,
        },
        (_, _, _, true) => match (current, new) {
            (None, _) => true,
            (Some(c), Some(t)) => t < c,
            (Some(_), None) => true,
        },
        _ => true,
    };
    if !allowed {
        r.int(0);
        return;
    }
    match w {
        When::Past => {
            store.remove(args[1]);
        }
        When::At(t) => {
            store.set_expiry(args[1], Some(t), now);
        }
    }
    r.int(1);
}

/// Runs the commands queued since MULTI, unless one was refused or a
/// WATCHed key changed.
fn exec(server: &mut Server, sess: &mut Session, r: &mut Reply<'_>, now: Instant) -> Outcome {
    let Some(queue) = sess.multi.take() else {
        r.err("ERR EXEC without MULTI");
        return Outcome::Done;
    };
    let watched = std::mem::take(&mut sess.watched);
    if std::mem::take(&mut sess.multi_failed) {
        r.err("EXECABORT Transaction discarded because of previous errors.");
        return Outcome::Done;
    }
    if watched
        .iter()
        .any(|(k, stamp)| server.store.stamp(k, now) != *stamp)
    {
        resp::null_array(r.out, r.v);
        return Outcome::Done;
    }
    r.array(queue.len());
    sess.in_exec = true;
    let mut outcome = Outcome::Done;
    for args in &queue {
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        if execute(server, sess, &args, r.out, now) == Outcome::Close {
            outcome = Outcome::Close;
        }
    }
    sess.in_exec = false;
    outcome
}

fn keys(
    store: &mut Store,
    sess: &mut Session,
    pattern: &[u8],
    r: &mut Reply<'_>,
    now: Instant,
) -> Outcome {
    let mut walk = sess.walk.take().unwrap_or(Walk {
        cursor: 0,
        count: 0,
        encoded: Vec::new(),
    });
    let all = pattern == b"*";
    let start = Instant::now();
    loop {
        walk.cursor = store.scan(walk.cursor, KEYS_STEP, now, |k| {
            if all || glob::matches(pattern, k) {
                walk.count += 1;
                resp::bulk(&mut walk.encoded, Some(k));
            }
        });
        if walk.cursor == 0 {
            break;
        }
        // Inside EXEC the walk can't wait for another turn (Redis runs a
        // transaction at once too).
        if !sess.in_exec && start.elapsed() >= KEYS_SLICE {
            sess.walk = Some(walk);
            return Outcome::Again;
        }
    }
    r.array(walk.count);
    r.out.extend_from_slice(&walk.encoded);
    Outcome::Done
}

fn scan(store: &mut Store, args: &[&[u8]], r: &mut Reply<'_>, now: Instant) {
    let Some(cursor) = std::str::from_utf8(args[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        r.err("ERR invalid cursor");
        return;
    };
    let (mut pattern, mut count, mut only_strings) = (None, 10usize, true);
    let mut i = 2;
    while i < args.len() {
        let a = args[i];
        if i + 1 >= args.len() {
            r.err(SYNTAX);
            return;
        }
        if eq_ic(a, "match") {
            pattern = Some(args[i + 1]);
        } else if eq_ic(a, "count") {
            match int(args[i + 1]) {
                None => {
                    r.err(NOT_INT);
                    return;
                }
                Some(n) if n < 1 => {
                    r.err(SYNTAX);
                    return;
                }
                Some(n) => count = n.min(SCAN_MAX_COUNT as i64) as usize,
            }
        } else if eq_ic(a, "type") {
            only_strings = eq_ic(args[i + 1], "string");
        } else {
            r.err(SYNTAX);
            return;
        }
        i += 2;
    }
    let pattern = pattern.filter(|p| *p != b"*");
    let mut found = Vec::new();
    let next = store.scan(cursor, count, now, |k| {
        if only_strings && pattern.map_or(true, |p| glob::matches(p, k)) {
            found.push(k.clone());
        }
    });
    r.array(2);
    r.bulk(next.to_string().as_bytes());
    r.array(found.len());
    for k in &found {
        r.bulk(k);
    }
}

fn hello(server: &mut Server, sess: &mut Session, args: &[&[u8]], r: &mut Reply<'_>) {
    let mut version = sess.version;
    if let Some(v) = args.get(1) {
        match int(v) {
            None => {
                r.err("ERR Protocol version is not an integer or out of range");
                return;
            }
            Some(2) => version = Version::Resp2,
            Some(3) => version = Version::Resp3,
            Some(_) => {
                r.err("NOPROTO unsupported protocol version");
                return;
            }
        }
    }
    let (mut auth, mut name) = (None, None);
    let mut i = 2;
    while i < args.len() {
        if eq_ic(args[i], "auth") && i + 2 < args.len() {
            auth = Some((args[i + 1], args[i + 2]));
            i += 3;
        } else if eq_ic(args[i], "setname") && i + 1 < args.len() {
            name = Some(args[i + 1]);
            i += 2;
        } else {
            r.err(&format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(args[i])
            ));
            return;
        }
    }
    if let Some((user, pass)) = auth {
        if !authenticate(server, user, pass) {
            r.err(WRONGPASS);
            return;
        }
        sess.authenticated = true;
    }
    if !sess.authenticated {
        r.err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        return;
    }
    if let Some(n) = name {
        if bad_name(n) {
            r.err("ERR Client names cannot contain spaces, newlines or special characters.");
            return;
        }
        sess.name = (!n.is_empty()).then(|| n.to_vec());
    }
    sess.version = version;
    r.v = version;
    r.map(7);
    r.bulk(b"server");
    r.bulk(b"redis");
    r.bulk(b"version");
    r.bulk(REDIS_VERSION.as_bytes());
    r.bulk(b"proto");
    r.int(version.number());
    r.bulk(b"id");
    r.int(sess.id as i64);
    r.bulk(b"mode");
    r.bulk(b"standalone");
    r.bulk(b"role");
    r.bulk(b"master");
    r.bulk(b"modules");
    r.array(0);
}

fn client(
    server: &mut Server,
    sess: &mut Session,
    args: &[&[u8]],
    r: &mut Reply<'_>,
    now: Instant,
) {
    let sub = String::from_utf8_lossy(args[1]).to_ascii_lowercase();
    let argc = args.len();
    let arity_ok = match sub.as_str() {
        "setname" => argc == 3,
        "getname" | "id" | "info" | "help" => argc == 2,
        "setinfo" => argc == 4,
        "list" => argc >= 2,
        "no-evict" | "no-touch" => argc == 3,
        _ => {
            r.err(&format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(args[1])
            ));
            return;
        }
    };
    if !arity_ok {
        r.wrong_args(&format!("client|{sub}"));
        return;
    }
    match sub.as_str() {
        "setname" => {
            if bad_name(args[2]) {
                r.err("ERR Client names cannot contain spaces, newlines or special characters.");
            } else {
                sess.name = (!args[2].is_empty()).then(|| args[2].to_vec());
                r.ok();
            }
        }
        "getname" => r.opt(sess.name.as_deref()),
        "id" => r.int(sess.id as i64),
        "info" => r.verbatim(&sess.line(now)),
        "setinfo" => {
            let attr = String::from_utf8_lossy(args[2]).to_ascii_lowercase();
            let v = args[3];
            let field = match attr.as_str() {
                "lib-name" => &mut sess.lib_name,
                "lib-ver" => &mut sess.lib_ver,
                _ => {
                    r.err(&format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(args[2])
                    ));
                    return;
                }
            };
            if bad_name(v) {
                r.err(&format!(
                    "ERR {attr} cannot contain spaces, newlines or special characters."
                ));
                return;
            }
            *field = (!v.is_empty()).then(|| v.to_vec());
            r.ok();
        }
        "list" => {
            let mut ids: Option<Vec<u64>> = None;
            let mut i = 2;
            while i < argc {
                if eq_ic(args[i], "type") && i + 1 < argc {
                    if !eq_ic(args[i + 1], "normal") {
                        ids = Some(Vec::new());
                    }
                    i += 2;
                } else if eq_ic(args[i], "id") && i + 1 < argc {
                    let mut list = Vec::new();
                    for a in &args[i + 1..] {
                        match int(a).filter(|&n| n > 0) {
                            Some(n) => list.push(n as u64),
                            None => {
                                r.err("ERR Invalid client ID");
                                return;
                            }
                        }
                    }
                    ids = Some(list);
                    i = argc;
                } else {
                    r.err(SYNTAX);
                    return;
                }
            }
            let mut text = String::new();
            server.clients.retain(|_, w| w.strong_count() > 0);
            for (&id, w) in &server.clients {
                if ids.as_ref().is_some_and(|l| !l.contains(&id)) {
                    continue;
                }
                if id == sess.id {
                    text.push_str(&sess.line(now));
                } else if let Some(s) = w.upgrade() {
                    if let Ok(s) = s.try_borrow() {
                        text.push_str(&s.line(now));
                    }
                }
            }
            r.verbatim(&text);
        }
        "no-evict" | "no-touch" => {
            if eq_ic(args[2], "on") || eq_ic(args[2], "off") {
                r.ok();
            } else {
                r.err(SYNTAX);
            }
        }
        _ => {
            let lines = [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GETNAME",
                "ID",
                "INFO",
                "LIST [TYPE normal] [ID id ...]",
                "NO-EVICT (ON|OFF)",
                "NO-TOUCH (ON|OFF)",
                "SETINFO <LIB-NAME|LIB-VER> <value>",
                "SETNAME <name>",
                "HELP",
            ];
            r.array(lines.len());
            for l in lines {
                r.simple(l);
            }
        }
    }
}

fn command(args: &[&[u8]], r: &mut Reply<'_>) {
    let info = |r: &mut Reply<'_>, s: &Spec| {
        r.array(10);
        r.bulk(s.name.as_bytes());
        r.int(s.arity);
        r.set(s.flags.len());
        for f in s.flags {
            r.simple(f);
        }
        r.int(s.first_key);
        r.int(s.last_key);
        r.int(s.step);
        r.set(0);
        r.set(0);
        r.array(0);
        r.array(0);
    };
    let Some(sub) = args.get(1) else {
        r.array(COMMANDS.len());
        for s in COMMANDS {
            info(r, s);
        }
        return;
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
    match sub.as_str() {
        "count" if args.len() == 2 => r.int(COMMANDS.len() as i64),
        "list" => {
            r.array(COMMANDS.len());
            for s in COMMANDS {
                r.bulk(s.name.as_bytes());
            }
        }
        "info" => {
            if args.len() == 2 {
                r.array(COMMANDS.len());
                COMMANDS.iter().for_each(|s| info(r, s));
            } else {
                r.array(args.len() - 2);
                for a in &args[2..] {
                    match lookup(a) {
                        Some(s) => info(r, s),
                        None => resp::null_array(r.out, r.v),
                    }
                }
            }
        }
        // Documentation is optional; clients take an empty map.
        "docs" => r.map(0),
        "count" => r.wrong_args("command|count"),
        _ => r.err(&format!(
            "ERR unknown subcommand '{sub}'. Try COMMAND HELP."
        )),
    }
}

fn info(server: &Server, args: &[&[u8]], r: &mut Reply<'_>) {
    let store = &server.store;
    let live = server
        .clients
        .values()
        .filter(|w| w.strong_count() > 0)
        .count();
    let sections: [(&str, String); 6] = [
        (
            "server",
            format!(
                "redis_version:{REDIS_VERSION}\r\nprocwire_version:{}\r\nredis_mode:standalone\r\nprocess_id:{}\r\nuptime_in_seconds:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                server.started.elapsed().as_secs()
            ),
        ),
        (
            "clients",
            format!("connected_clients:{live}\r\nconnected_clients_total:{}\r\n", server.connections),
        ),
        (
            "memory",
            format!(
                "used_memory:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:{}\r\n",
                store.used(),
                store.max_memory.unwrap_or(0),
                if store.max_memory.is_some() { "allkeys-lru" } else { "noeviction" }
            ),
        ),
        ("persistence", "loading:0\r\n".to_string()),
        (
            "stats",
            format!(
                "total_commands_processed:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\n",
                server.commands, store.expired, store.evicted
            ),
        ),
        ("keyspace", format!("db0:keys={}\r\n", store.len())),
    ];
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
    let mut text = String::new();
    for (name, body) in &sections {
        if all || wanted.iter().any(|w| w == name) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            let mut title = name.to_string();
            title[..1].make_ascii_uppercase();
            text.push_str(&format!("# {title}\r\n{body}"));
        }
    }
    r.verbatim(&text);
}

fn config(server: &mut Server, args: &[&[u8]], r: &mut Reply<'_>) {
    let sub = String::from_utf8_lossy(args[1]).to_ascii_lowercase();
    match sub.as_str() {
        "get" if args.len() >= 3 => {
            let max = server.store.max_memory.unwrap_or(0).to_string();
            let max_bulk = server.store.max_bulk.to_string();
            let params: [(&str, &str); 6] = [
                ("save", ""),
                ("appendonly", "no"),
                ("maxmemory", &max),
                ("databases", "1"),
                ("proto-max-bulk-len", &max_bulk),
                (
                    "maxmemory-policy",
                    if server.store.max_memory.is_some() {
                        "allkeys-lru"
                    } else {
                        "noeviction"
                    },
                ),
            ];
            let hits: Vec<_> = params
                .iter()
                .filter(|(name, _)| {
                    args[2..]
                        .iter()
                        .any(|p| glob::matches(&p.to_ascii_lowercase(), name.as_bytes()))
                })
                .collect();
            r.map(hits.len());
            for (name, value) in hits {
                r.bulk(name.as_bytes());
                r.bulk(value.as_bytes());
            }
        }
        "resetstat" if args.len() == 2 => {
            server.commands = 0;
            server.store.expired = 0;
            server.store.evicted = 0;
            r.ok();
        }
        "get" | "resetstat" => r.wrong_args(&format!("config|{sub}")),
        _ => r.err(&format!(
            "ERR unknown subcommand '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(args[1])
        )),
    }
}
