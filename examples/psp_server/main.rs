//! The server of the peer-server-peer (PSP) file-sharing network after the
//! seed's "trickle": it splits a file into chunks, waits for N clients,
//! gives each a contiguous block (and a replica of its neighbour's block),
//! and forgets the file once every client holds its blocks. From then on it
//! answers every chunk request from a bounded LRU cache or, on a miss, asks
//! a client known to hold the chunk, checks the answer against the checksum
//! it recorded, forwards it to everyone waiting and caches it.
//!
//! ```text
//! psp_server FILE --clients N [--cache CHUNKS] [--chunk-size BYTES] [--control udp|tcp] [--port PORT]
//! ```
//!
//! One TCP listener and one UDP socket on the same port; everything runs on
//! one thread on `net::event`. It prints `ready PORT` when it listens,
//! `status ...` lines while it works and a `summary ...` line at the end.
//!
//! What is lost when clients leave: every chunk starts on two clients (its
//! block's owner and the owner's predecessor, which holds a replica), and
//! also lives on every client the server forwarded it to and in the cache
//! while it stays there. A chunk is lost only when every client that held it
//! left before the chunk was cached or forwarded; the clients still waiting
//! for it are then told (`Lost`) and fail.

#[macro_use]
#[path = "../cli/mod.rs"]
mod cli;

#[path = "../psp_common/proto.rs"]
mod proto;

mod client;
mod lru;
mod server;

use lru::Lru;
use server::{accept_client, on_datagram, Server, SharedFile, Stats};

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use procwire::net::event::{EventLoop, Interest};
use procwire::net::port::ReservedBind;
use procwire::net::server::listen;
use procwire::sys::errno;
use procwire::sys::socket::{SockAddr, Socket};
use procwire::sys::udp::{PathMtu, RecvBatch};

use cli::Rng;
use proto::{Control, Rto};

const USAGE: &str = "usage: psp_server FILE --clients N [--cache CHUNKS] [--chunk-size BYTES] [--control udp|tcp] [--port PORT]

Serves FILE to N psp_client processes through the peer-server-peer network.
--cache CHUNKS     chunks kept in the server's LRU cache (default: 64 MiB
                   worth of chunks)
--chunk-size BYTES bytes per chunk, 1 to 65000 (default 1024)
--control udp|tcp  the layer for control messages; chunks take the other
                   (default udp)
--port PORT        join a reservation of PORT (TCP and UDP, SO_REUSEPORT)
                   made by a parent; default: a free port, printed
--bind IP          the IPv4 address to serve on (default 127.0.0.1)";

/// The most chunks one request or ask may name.
const MAX_RANGE: u32 = 4096;
/// Chunks asked for ahead of a miss.
const PREFETCH: u32 = 32;
/// Drop messages logged before only the counters go on.
const LOG_LIMIT: u64 = 100;
/// Most bytes of chunk records sent in one TCP send.
const BATCH: usize = 256 * 1024;
/// Datagrams (and bytes) queued before they are sent in one `sendmmsg`.
const OUT_BATCH: usize = 256;
const OUT_BYTES: usize = 1 << 20;
/// Chunk records one client may have under way in pieces.
const PIECES_PER_CLIENT: usize = 64;
/// Period of the retry and status timers.
const TICK: Duration = Duration::from_millis(5);
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// TCP writes at least this large go out at once (when nothing is
/// queued); smaller ones wait for the end of the turn.
const DIRECT_BYTES: usize = 64 * 1024;
/// Most bytes queued for one client's TCP connection before new chunks
/// for it are dropped (it will ask again).
const MAX_QUEUE: usize = 8 << 20;

struct Args {
    file: std::path::PathBuf,
    clients: u32,
    cache: usize,
    chunk_size: usize,
    control: Control,
    port: Option<u16>,
    bind: Ipv4Addr,
    drop_udp: f64,
}

fn parse() -> Result<Args, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let (mut file, mut clients) = (None, None);
    let mut a = Args {
        file: Default::default(),
        clients: 0,
        cache: 0,
        chunk_size: proto::DEFAULT_CHUNK,
        control: Control::Udp,
        port: None,
        bind: Ipv4Addr::LOCALHOST,
        drop_udp: 0.0,
    };
    let e = |e: lexopt::Error| e.to_string();
    while let Some(arg) = p.next().map_err(e)? {
        match arg {
            Long("clients") => clients = Some(p.value().map_err(e)?.parse().map_err(e)?),
            Long("cache") => {
                a.cache = p.value().map_err(e)?.parse().map_err(e)?;
                if a.cache == 0 {
                    return Err("--cache must be at least 1 chunk".into());
                }
            }
            Long("chunk-size") => a.chunk_size = p.value().map_err(e)?.parse().map_err(e)?,
            Long("control") => a.control = p.value().map_err(e)?.parse().map_err(e)?,
            Long("port") => a.port = Some(p.value().map_err(e)?.parse().map_err(e)?),
            Long("bind") => {
                let v = p.value().map_err(e)?.string().map_err(e)?;
                a.bind = v
                    .parse()
                    .map_err(|_| format!("--bind takes an IPv4 address, not {v:?}"))?;
            }
            // Test only: drop this fraction of outgoing datagrams.
            Long("drop-udp") => a.drop_udp = p.value().map_err(e)?.parse().map_err(e)?,
            Short('h') | Long("help") => {
                outln!("{USAGE}");
                std::process::exit(0);
            }
            Value(v) if file.is_none() => file = Some(v.into()),
            other => return Err(other.unexpected().to_string()),
        }
    }
    a.file = file.ok_or("missing FILE")?;
    a.clients = clients.ok_or("missing --clients N")?;
    if a.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if a.chunk_size == 0 || a.chunk_size > proto::MAX_CHUNK {
        return Err(format!(
            "--chunk-size must be 1 to {} (a chunk must fit one datagram)",
            proto::MAX_CHUNK
        ));
    }
    if a.cache == 0 {
        a.cache = (proto::DEFAULT_CACHE_BYTES / a.chunk_size).max(1);
    }
    if !(0.0..1.0).contains(&a.drop_udp) {
        return Err("--drop-udp takes a fraction below 1".into());
    }
    Ok(a)
}

/// CPU time of this process (user + system).
fn cpu_seconds() -> Option<f64> {
    procwire::sys::process::own_cpu_time()
        .ok()
        .map(|d| d.as_secs_f64())
}

fn main() -> ExitCode {
    cli::keep_running_without_stdout();
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("psp_server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("psp_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> std::io::Result<()> {
    let data = std::fs::read(&args.file)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", args.file.display())))?;
    let cs = args.chunk_size;
    let n_chunks = u32::try_from(data.len().div_ceil(cs))
        .map_err(|_| std::io::Error::other("the file has more than 2^32 chunks"))?;
    let sums: Vec<u64> = data.chunks(cs).map(proto::checksum).collect();
    let file_hash = proto::file_checksum(&sums);

    let port = match args.port {
        Some(p) => p,
        None => procwire::net::port::select_random(None, &[])?,
    };
    let addr = SocketAddr::from((args.bind, port));
    let bind = ReservedBind::new(addr).backlog(1024);
    let listener = bind.listen()?;
    let udp = bind.udp()?;
    udp.set_nonblocking(true)?;
    // Never fragment: every datagram is cut to fit its client's path, and
    // one the path no longer takes fails (EMSGSIZE) instead of going out
    // as fragments that all must arrive.
    let _ = udp.set_path_mtu_discovery(PathMtu::Do);
    // Bursts of pieces from one holder arrive as few receives.
    if std::env::var_os("PSP_NO_GRO").is_none() {
        let _ = udp.set_udp_gro(true);
    }
    // Large buffers ride out bursts of requests and answers: past the
    // system's cap where this process may, else as large as it allows.
    if udp.set_recv_buffer_size_force(16 << 20).is_err() {
        let _ = udp.set_recv_buffer_size(16 << 20);
    }
    if udp.set_send_buffer_size_force(4 << 20).is_err() {
        let _ = udp.set_send_buffer_size(4 << 20);
    }
    let udp = Rc::new(udp);

    let lp = EventLoop::new()?;
    let server = Rc::new(RefCell::new(Server {
        control: args.control,
        file: SharedFile {
            chunk_size: cs,
            n_chunks,
            size: data.len() as u64,
            hash: file_hash,
            sums,
            bytes: Some(data),
        },
        expected: args.clients,
        started: false,
        clients: Vec::new(),
        by_addr: HashMap::new(),
        cache: Lru::new(args.cache),
        waiters: HashMap::new(),
        asks: HashMap::new(),
        extra_holders: HashMap::new(),
        udp: Rc::clone(&udp),
        rto: Rto::default(),
        stats: Stats::default(),
        drop_udp: args.drop_udp,
        rng: Rng::new(u64::from(std::process::id()) << 20 | u64::from(port)),
        scratch: Vec::new(),
        finished: false,
        start: Instant::now(),
        pending_asks: Vec::new(),
        liars: HashMap::new(),
        batch: Vec::new(),
        batched: Vec::new(),
        logged: 0,
        out: Vec::new(),
        out_msgs: Vec::new(),
        grams: Vec::new(),
        corked: Vec::new(),
        // PSP_NO_GSO (tests, comparisons): one datagram per send.
        gso: procwire::sys::udp::udp_gso_supported() && std::env::var_os("PSP_NO_GSO").is_none(),
    }));

    let s = Rc::clone(&server);
    listen(
        &lp,
        listener,
        Duration::from_millis(100),
        move |cx, sock, peer| accept_client(cx, &s, sock, peer),
    )?
    .detach();

    let s = Rc::clone(&server);
    // Datagrams are read (and answered) a batch per call.
    let mut batch = RecvBatch::new(64, 65_536);
    lp.register(
        Rc::clone(&udp),
        Interest::READABLE,
        move |cx, u: &Rc<Socket>, _| {
            for _ in 0..cx.budget() {
                match u.recv_batch(&mut batch) {
                    Ok(_) => {
                        for d in batch.iter() {
                            let Some(from) = d.from.filter(|_| !d.truncated) else {
                                continue;
                            };
                            let from = SockAddr::from(from);
                            // Several, when the kernel joined them (GRO).
                            for g in d.segments() {
                                on_datagram(&s, g, &from);
                            }
                        }
                    }
                    Err(e) if e.is_would_block() => {
                        s.borrow_mut().flush_out();
                        return Ok(());
                    }
                    Err(e) if e.raw_os_error() == errno::EINTR => {}
                    // ICMP errors from a client that left: nothing to do.
                    Err(_) => {}
                }
                s.borrow_mut().flush_out();
            }
            cx.reschedule();
            Ok(())
        },
    )?
    .detach();

    let s = Rc::clone(&server);
    lp.every(TICK, move |cx| {
        let mut sv = s.borrow_mut();
        sv.on_tick(cx.now());
        sv.flush_out();
        if sv.finished && sv.clients.iter().all(|c| c.gone || c.out.is_empty()) {
            cx.stop();
        }
    });
    let s = Rc::clone(&server);
    lp.every(STATUS_EVERY, move |_| {
        outln!("{}", s.borrow().status_line());
        cli::flush();
    });
    lp.on_shutdown(|cx| cx.stop())?;

    outln!("ready {port}");
    cli::flush();
    lp.run()?;

    let sv = server.borrow();
    outln!("{}", sv.status_line());
    let s = &sv.stats;
    let lookups = s.hits + s.misses;
    outln!(
        "summary wall_s={:.3} cpu_s={} hit_rate={:.3} served={} bad={} unasked={} malformed={} lost={} datagrams={} send_calls={} pieces_again={}",
        sv.start.elapsed().as_secs_f64(),
        cpu_seconds().map_or("n/a".to_string(), |c| format!("{c:.2}")),
        if lookups == 0 { 0.0 } else { s.hits as f64 / lookups as f64 },
        s.served,
        s.bad_chunks,
        s.unasked,
        s.malformed,
        s.lost,
        s.datagrams,
        s.send_calls,
        s.pieces_again
    );
    Ok(())
}
