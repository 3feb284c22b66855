//! A cache server on the event loop that speaks the Redis protocol (RESP2,
//! and RESP3 after `HELLO 3`), so `redis-cli`, `redis-benchmark` and Redis
//! client libraries talk to it unchanged, with their default settings.
//!
//! ```text
//! cargo run --release --example cache_server                       # 127.0.0.1, a free port, printed
//! cargo run --release --example cache_server -- --port 6380 --unix /tmp/cache.sock --unix-perm 700
//! cargo run --release --example cache_server -- --data-dir ./data --max-memory 64mb
//! cargo run --release --example cache_server -- --requirepass-file ./secret
//! ```
//!
//! Strings and the keyspace (the commands a cache user sends), the
//! connection commands clients send on their own (HELLO, AUTH, CLIENT,
//! SELECT 0, COMMAND, INFO, CONFIG GET, RESET), with Redis's semantics and
//! error texts; `commands.rs` has the table. With `--data-dir`, a GET of a
//! missing key reads the file of that name from the directory and caches
//! it. `--max-memory` bounds the cache, evicting the least recently used
//! keys; expired keys go on access and on a 100 ms timer. With
//! `--requirepass` (or `--requirepass-file`) every command but AUTH, HELLO
//! with AUTH, QUIT and RESET answers NOAUTH until the connection has
//! authenticated. KEYS walks the keyspace in slices of about a millisecond and lets
//! the other connections run between them, so a KEYS over a million keys
//! never stalls anyone else for long. After each burst of work the loop
//! polls for up to `--busy-poll` microseconds (default 50) before it
//! sleeps, so clients sending their next request within that time don't
//! pay for waking it up; `--busy-poll 0` sleeps at once, as Redis does.

#[macro_use]
#[path = "../cli/mod.rs"]
#[allow(clippy::duplicate_mod, unused_imports)]
mod cli;

mod commands;
mod glob;
mod store;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use procwire::net::event::EventLoop;
use procwire::net::resp::{self, parse_request, Request, DEFAULT_MAX_BULK};
use procwire::net::server::{serve, Output, Protocol, ServerOptions};
use procwire::sys::socket::{Domain, SockAddr, Socket, Type};

use commands::{execute, Outcome, Server, Session};
use store::Store;

const USAGE: &str =
    "usage: cache_server [--port PORT] [--host IP] [--unix PATH] [--unix-perm OCTAL] [--no-tcp]
                    [--data-dir DIR] [--max-memory BYTES[kb|mb|gb]] [--max-bulk BYTES]
                    [--requirepass PASSWORD | --requirepass-file FILE]
                    [--busy-poll MICROSECONDS]

A Redis-protocol cache. Listens on TCP 127.0.0.1 (a free port unless --port)
and/or a Unix socket (mode --unix-perm, as Redis's unixsocketperm); prints
where; serves until Ctrl-C. With a password, clients must AUTH first.";

/// How long the loop polls before it sleeps, by default (microseconds).
const DEFAULT_BUSY_POLL_US: u64 = 50;

/// Replies one call gathers before it hands them to the connection, so a
/// long pipeline of big GETs goes out in pieces under the output limit.
const REPLY_BATCH: usize = 256 * 1024;

/// One client connection: parses requests, executes them in order.
struct Client {
    server: Rc<RefCell<Server>>,
    session: Rc<RefCell<Session>>,
    reply: Vec<u8>,
}

impl Protocol for Client {
    /// Executes every complete request in `input` (pipelining), then sends
    /// all their replies in one write.
    fn on_input(&mut self, input: &[u8], out: &mut Output<'_>) -> std::io::Result<usize> {
        let now = Instant::now();
        self.reply.clear();
        let mut consumed = 0;
        let mut quit = false;
        let mut server = self.server.borrow_mut();
        let mut session = self.session.borrow_mut();
        let max_bulk = server.store.max_bulk;
        while consumed < input.len() && self.reply.len() < REPLY_BATCH && !quit {
            match parse_request(&input[consumed..], max_bulk) {
                Ok(None) => break,
                Ok(Some(Request { args, consumed: n })) => {
                    match execute(&mut server, &mut session, &args, &mut self.reply, now) {
                        Outcome::Done => consumed += n,
                        Outcome::Close => {
                            consumed += n;
                            quit = true;
                        }
                        Outcome::Again => {
                            // The same request comes back next turn.
                            out.resume_later();
                            break;
                        }
                    }
                }
                Err(e) => {
                    // Answer, then close this connection only.
                    resp::error(&mut self.reply, &format!("ERR {e}"));
                    consumed = input.len();
                    quit = true;
                }
            }
        }
        drop((server, session));
        if !self.reply.is_empty() {
            out.write(&self.reply)?;
        }
        if self.reply.capacity() > REPLY_BATCH * 4 {
            // After one huge reply (a KEYS), don't hold its memory forever.
            self.reply = Vec::new();
        }
        if quit {
            out.close();
        }
        Ok(consumed)
    }

    fn on_close(&mut self, _error: Option<&std::io::Error>) {
        let id = self.session.borrow().id;
        self.server.borrow_mut().clients.remove(&id);
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

/// The command line.
struct Config {
    port: u16,
    host: IpAddr,
    unix: Option<PathBuf>,
    unix_perm: Option<u32>,
    tcp: bool,
    data_dir: Option<PathBuf>,
    max_memory: Option<usize>,
    max_bulk: usize,
    busy_poll: u64,
    password: Option<Vec<u8>>,
}

/// The configuration, or `None` after `--help`.
fn parse() -> Result<Option<Config>, Box<dyn std::error::Error>> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut c = Config {
        port: 0,
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        unix: None,
        unix_perm: None,
        tcp: true,
        data_dir: None,
        max_memory: None,
        max_bulk: DEFAULT_MAX_BULK,
        busy_poll: DEFAULT_BUSY_POLL_US,
        password: None,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("port") => c.port = p.value()?.parse()?,
            Long("host") => c.host = p.value()?.parse()?,
            Long("unix") => c.unix = Some(PathBuf::from(p.value()?)),
            Long("no-tcp") => c.tcp = false,
            Long("data-dir") => c.data_dir = Some(PathBuf::from(p.value()?)),
            Long("max-memory") => c.max_memory = Some(parse_size(&p.value()?.string()?)?),
            Long("max-bulk") => c.max_bulk = parse_size(&p.value()?.string()?)?,
            Long("busy-poll") => c.busy_poll = p.value()?.parse()?,
            Long("requirepass") => c.password = Some(p.value()?.string()?.into_bytes()),
            Long("requirepass-file") => {
                let path = PathBuf::from(p.value()?);
                let text = std::fs::read(&path)
                    .map_err(|e| format!("--requirepass-file {}: {e}", path.display()))?;
                // The first line, as a secret written by `echo` ends.
                let line = text.split(|&c| c == b'\n').next().unwrap_or_default();
                c.password = Some(line.strip_suffix(b"\r").unwrap_or(line).to_vec());
            }
            Long("unix-perm") => {
                let v = p.value()?.string()?;
                let mode = u32::from_str_radix(&v, 8).ok().filter(|&m| m <= 0o777);
                c.unix_perm = Some(mode.ok_or_else(|| {
                    format!("--unix-perm: {v:?} is not an octal mode such as 700")
                })?);
            }
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(arg.unexpected().into()),
        }
    }
    if !c.tcp && c.unix.is_none() {
        return Err("--no-tcp needs --unix".into());
    }
    if c.unix_perm.is_some() && c.unix.is_none() {
        return Err("--unix-perm needs --unix".into());
    }
    if c.password.as_ref().is_some_and(Vec::is_empty) {
        return Err("the password is empty".into());
    }
    Ok(Some(c))
}

/// The program (also run by the installable binary of the same name).
pub fn main() -> ExitCode {
    crate::cli::keep_running_without_stdout();
    let config = match parse() {
        Ok(Some(c)) => c,
        Ok(None) => return crate::cli::help(USAGE),
        Err(e) => return crate::cli::usage_error("cache_server", USAGE, e),
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cache_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(c: Config) -> Result<(), Box<dyn std::error::Error>> {
    let Config {
        port,
        host,
        unix,
        unix_perm,
        tcp,
        data_dir,
        max_memory,
        max_bulk,
        busy_poll,
        password,
    } = c;
    let lp = EventLoop::new()?;
    lp.set_busy_poll(Duration::from_micros(busy_poll));
    lp.on_shutdown(|cx| cx.stop())?;
    let server = Rc::new(RefCell::new(Server {
        store: Store::new(max_memory, data_dir, max_bulk),
        password,
        clients: BTreeMap::new(),
        next_id: 0,
        commands: 0,
        connections: 0,
        started: Instant::now(),
    }));
    let opts = ServerOptions::default().// A request may carry one bulk string of up to --max-bulk(// A request may carry one bulk string of up to --max-bulk).plus room.
        max_input(max_bulk.saturating_add(64 * 1024));
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
        if let Some(mode) = unix_perm {
            // Before listen: nobody can connect while the mode is wider.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        l.listen(1024)?;
        listeners.push(l);
    }
    let mut servers = Vec::new();
    for l in listeners {
        let laddr = l.local_addr()?;
        outln!("cache_server listening on {laddr}");
        let laddr = laddr.to_string();
        let sv = Rc::clone(&server);
        servers.push(serve(&lp, l, opts.clone(), move |peer| {
            let mut s = sv.borrow_mut();
            s.connections += 1;
            s.next_id += 1;
            let id = s.next_id;
            let session = Rc::new(RefCell::new(Session::new(
                id,
                peer.to_string(),
                laddr.clone(),
                s.password.is_none(),
                Instant::now(),
            )));
            s.clients.insert(id, Rc::downgrade(&session));
            Client {
                server: Rc::clone(&sv),
                session,
                reply: Vec::new(),
            }
        })?);
    }
    crate::cli::flush();
    let sv = Rc::clone(&server);
    lp.every(Duration::from_millis(100), move |_| {
        sv.borrow_mut().store.expire_due(Instant::now())
    });
    lp.run()?;
    if let Some(path) = &unix {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
