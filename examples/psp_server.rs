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
#[path = "cli/mod.rs"]
mod cli;

#[path = "psp_common/proto.rs"]
mod proto;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use procwire::net::buffer::WriteQueue;
use procwire::net::event::{Context, EventLoop, Interest};
use procwire::net::frame::{Decoder, Framing};
use procwire::net::port::ReservedBind;
use procwire::net::server::listen;
use procwire::sys::errno;
use procwire::sys::socket::{SockAddr, Socket};

use cli::Rng;
use proto::{Bad, Control, Info, Msg, Rto, CONTROL_SIZE};

const USAGE: &str = "usage: psp_server FILE --clients N [--cache CHUNKS] [--chunk-size BYTES] [--control udp|tcp] [--port PORT]

Serves FILE to N psp_client processes through the peer-server-peer network.
--cache CHUNKS     chunks kept in the server's LRU cache (default: 64 MiB
                   worth of chunks)
--chunk-size BYTES bytes per chunk, 1 to 65000 (default 1024)
--control udp|tcp  the layer for control messages; chunks take the other
                   (default udp)
--port PORT        join a reservation of PORT (TCP and UDP, SO_REUSEPORT)
                   made by a parent; default: a free port, printed";

/// The most chunks one request or ask may name.
const MAX_RANGE: u32 = 4096;
/// Chunks asked for ahead of a miss.
const PREFETCH: u32 = 32;
/// Drop messages logged before only the counters go on.
const LOG_LIMIT: u64 = 100;
/// Most bytes of chunk records sent in one TCP send.
const BATCH: usize = 256 * 1024;
/// Period of the retry and status timers.
const TICK: Duration = Duration::from_millis(5);
const STATUS_EVERY: Duration = Duration::from_millis(100);
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

/// A bounded LRU map of chunk id -> bytes, in a slab with an intrusive
/// doubly linked list (most recent at the head).
struct Lru {
    cap: usize,
    map: HashMap<u32, usize>,
    slots: Vec<(u32, Vec<u8>, usize, usize)>,
    head: usize,
    tail: usize,
}

const NIL: usize = usize::MAX;

impl Lru {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            map: HashMap::new(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].2, self.slots[i].3);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev].3 = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next].2 = prev;
        }
    }

    fn push_front(&mut self, i: usize) {
        self.slots[i].2 = NIL;
        self.slots[i].3 = self.head;
        if self.head != NIL {
            self.slots[self.head].2 = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn get(&mut self, id: u32) -> Option<&[u8]> {
        let i = *self.map.get(&id)?;
        self.unlink(i);
        self.push_front(i);
        Some(&self.slots[i].1)
    }

    fn contains(&self, id: u32) -> bool {
        self.map.contains_key(&id)
    }

    fn put(&mut self, id: u32, data: &[u8]) {
        if let Some(&i) = self.map.get(&id) {
            self.unlink(i);
            self.push_front(i);
            return;
        }
        let i = if self.slots.len() < self.cap {
            self.slots.push((id, data.to_vec(), NIL, NIL));
            self.slots.len() - 1
        } else {
            let i = self.tail;
            self.unlink(i);
            self.map.remove(&self.slots[i].0);
            self.slots[i].0 = id;
            self.slots[i].1.clear();
            self.slots[i].1.extend_from_slice(data);
            i
        };
        self.map.insert(id, i);
        self.push_front(i);
    }
}

struct Client {
    addr: SocketAddr,
    tcp: Rc<Socket>,
    out: WriteQueue,
    decoder: Decoder,
    pid: u32,
    registered: bool,
    has_blocks: bool,
    done: bool,
    gone: bool,
    /// Bit per chunk: asked of this client at some point.
    asked_ever: Vec<u64>,
    /// Bit per chunk: sent to it over TCP (so it will arrive).
    sent: Vec<u64>,
    /// Its own block and the replica block it also holds.
    block: (u32, u32),
    replica: (u32, u32),
}

/// An ask in flight for one chunk.
struct Ask {
    /// Clients asked so far, the last one most recently.
    asked: Vec<u32>,
    sent: Instant,
    tries: u32,
}

#[derive(Default)]
struct Stats {
    hits: u64,
    misses: u64,
    asks: u64,
    forwarded: u64,
    served: u64,
    bad_chunks: u64,
    /// Chunks a client sent though it was never asked for them.
    unasked: u64,
    /// Answers to asks already answered by someone else (retries).
    late: u64,
    /// Requests repeated while the chunk was on its way (sent over TCP,
    /// or waited for), not answered again.
    repeats: u64,
    malformed: u64,
    lost: u64,
}

struct Server {
    control: Control,
    chunk_size: usize,
    n_chunks: u32,
    file_size: u64,
    file_hash: u64,
    sums: Vec<u64>,
    file: Option<Vec<u8>>,
    expected: u32,
    started: bool,
    clients: Vec<Client>,
    by_addr: HashMap<SocketAddr, u32>,
    cache: Lru,
    waiters: HashMap<u32, Vec<u32>>,
    asks: HashMap<u32, Ask>,
    /// Clients the server forwarded a chunk to (a few per chunk).
    extra_holders: HashMap<u32, Vec<u32>>,
    udp: Rc<Socket>,
    rto: Rto,
    stats: Stats,
    drop_udp: f64,
    rng: Rng,
    scratch: Vec<u8>,
    finished: bool,
    start: Instant,
    /// (holder, chunk) asks collected this turn.
    pending_asks: Vec<(u32, u32)>,
    /// Clients that answered an ask for a chunk with wrong bytes.
    liars: HashMap<u32, Vec<u32>>,
    /// The records answering one request, and their chunk ids.
    batch: Vec<u8>,
    batched: Vec<u32>,
    /// Lines logged by `note`.
    logged: u64,
}

impl Server {
    /// Logs a dropped or refused message. After `LOG_LIMIT` lines only the
    /// counters of the status lines go on, so a hostile peer can't flood
    /// stderr.
    fn note(&mut self, line: impl FnOnce() -> String) {
        self.logged += 1;
        if self.logged <= LOG_LIMIT {
            eprintln!("psp_server: {}", line());
        } else if self.logged == LOG_LIMIT + 1 {
            eprintln!("psp_server: more drops are only counted (see the status lines)");
        }
    }

    fn record_size(&self) -> usize {
        match self.control {
            Control::Udp => proto::chunk_record(self.chunk_size),
            Control::Tcp => CONTROL_SIZE,
        }
    }

    fn live(&self, c: u32) -> bool {
        self.clients
            .get(c as usize)
            .is_some_and(|c| c.registered && !c.gone)
    }

    fn send_udp(&mut self, to: SocketAddr, data: &[u8]) {
        if self.drop_udp > 0.0 && self.rng.unit() < self.drop_udp {
            return;
        }
        // A full buffer drops the datagram, as the network would; the
        // receiver asks again.
        let _ = self.udp.send_to(data, to);
    }

    /// Sends or queues `data` on client `c`'s connection; `false` when it
    /// was dropped (the client is gone or its queue is full).
    fn send_tcp(&mut self, c: u32, data: &[u8]) -> bool {
        let cl = &mut self.clients[c as usize];
        if cl.gone || cl.out.len() > MAX_QUEUE {
            return false;
        }
        // Straight to the socket while nothing waits in the queue: one
        // copy less. A failed send means the client is gone; its end is
        // noticed on the connection.
        if cl.out.write_to(&cl.tcp, data).is_err() {
            cl.out.clear();
        }
        true
    }

    fn send_msg(&mut self, c: u32, m: Msg) {
        let b = m.encode();
        match self.control {
            Control::Udp => {
                let to = self.clients[c as usize].addr;
                self.send_udp(to, &b);
            }
            Control::Tcp => {
                self.send_tcp(c, &b);
            }
        }
    }

    fn send_chunk(&mut self, c: u32, id: u32, data: &[u8]) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        proto::encode_chunk(id, data, self.chunk_size, &mut buf);
        self.send_record(c, &buf);
        self.scratch = buf;
    }

    /// Sends the chunk records in `batch` (chunks `ids`) to client `c` and
    /// empties both.
    fn send_batch(&mut self, c: u32, batch: &mut Vec<u8>, ids: &mut Vec<u32>) {
        if batch.is_empty() {
            return;
        }
        match self.control {
            Control::Udp => {
                if self.send_tcp(c, batch) {
                    for &id in ids.iter() {
                        set_bit(&mut self.clients[c as usize].sent, id);
                    }
                }
            }
            Control::Tcp => {
                let to = self.clients[c as usize].addr;
                self.send_udp(to, batch);
            }
        }
        batch.clear();
        ids.clear();
    }

    /// Sends an encoded chunk record on the chunk layer.
    fn send_record(&mut self, c: u32, rec: &[u8]) {
        match self.control {
            Control::Udp => {
                // Over TCP it will arrive: a repeated request for it (the
                // client's timer, while it waited in a queue) is not
                // answered twice.
                if self.send_tcp(c, rec) {
                    let id = u32::from_be_bytes([rec[1], rec[2], rec[3], rec[4]]);
                    set_bit(&mut self.clients[c as usize].sent, id);
                }
            }
            Control::Tcp => {
                let to = self.clients[c as usize].addr;
                self.send_udp(to, rec);
            }
        }
    }

    /// A control message from client `c`.
    fn on_msg(&mut self, c: u32, m: Msg, now: Instant) {
        match m {
            Msg::Reg { pid } => self.on_reg(c, pid),
            Msg::Req { start, count } => self.on_req(c, start, count, now),
            Msg::Done => {
                if !self.clients[c as usize].registered {
                    return;
                }
                if self.finished {
                    // Its Bye was lost.
                    self.send_msg(c, Msg::Bye);
                    return;
                }
                self.clients[c as usize].done = true;
                // Done implies it holds its blocks.
                self.on_have(c);
                self.check_finished();
            }
            Msg::Have => self.on_have(c),
            other => {
                self.stats.malformed += 1;
                self.note(|| format!("dropped {other:?} from client {c}: not a client message"));
            }
        }
    }

    fn on_reg(&mut self, c: u32, pid: u32) {
        let registered = self.clients.iter().filter(|c| c.registered).count() as u32;
        let cl = &mut self.clients[c as usize];
        if cl.registered {
            // It didn't get its Info (a lost datagram): again.
            if self.started {
                self.send_info(c);
            }
            return;
        }
        if self.started || registered >= self.expected {
            eprintln!("psp_server: client {c} (pid {pid}) registered too late; ignored");
            return;
        }
        cl.registered = true;
        cl.pid = pid;
        if registered + 1 == self.expected {
            self.start_sharing();
        }
    }

    /// Everyone is here: assign blocks (client i holds block i and a
    /// replica of block i + 1) and tell each client.
    fn start_sharing(&mut self) {
        self.started = true;
        let ids: Vec<u32> = (0..self.clients.len() as u32)
            .filter(|&c| self.clients[c as usize].registered)
            .collect();
        let blocks = proto::blocks(self.n_chunks, ids.len() as u32);
        let words = (self.n_chunks as usize).div_ceil(64);
        for (i, &c) in ids.iter().enumerate() {
            let cl = &mut self.clients[c as usize];
            cl.asked_ever = vec![0; words];
            cl.sent = vec![0; words];
            cl.block = blocks[i];
            cl.replica = blocks[(i + 1) % blocks.len()];
        }
        for &c in &ids {
            self.send_info(c);
        }
        outln!("started clients={} chunks={}", ids.len(), self.n_chunks);
        cli::flush();
    }

    fn send_info(&mut self, c: u32) {
        let cl = &self.clients[c as usize];
        let info = Info {
            client: c,
            n_chunks: self.n_chunks,
            chunk_size: self.chunk_size as u32,
            file_size: self.file_size,
            file_hash: self.file_hash,
            block_start: cl.block.0,
            block_end: cl.block.1,
            replica_start: cl.replica.0,
            replica_end: cl.replica.1,
        };
        self.send_msg(c, Msg::Info(info));
    }

    fn on_have(&mut self, c: u32) {
        let cl = &mut self.clients[c as usize];
        if !cl.registered || cl.has_blocks {
            return;
        }
        cl.has_blocks = true;
        if self.file.is_some()
            && self
                .clients
                .iter()
                .all(|c| !c.registered || c.gone || c.has_blocks)
        {
            self.file = None;
            outln!("forgot the file");
            cli::flush();
        }
    }

    fn holds_initially(&self, c: u32, id: u32) -> bool {
        let cl = &self.clients[c as usize];
        (cl.block.0..cl.block.1).contains(&id) || (cl.replica.0..cl.replica.1).contains(&id)
    }

    fn on_req(&mut self, c: u32, start: u32, count: u32, now: Instant) {
        if !self.started || !self.clients[c as usize].registered {
            return;
        }
        let end = start.saturating_add(count);
        if count > MAX_RANGE || end > self.n_chunks {
            self.stats.malformed += 1;
            let n = self.n_chunks;
            self.note(|| format!("client {c} asked for {start}+{count} of {n} chunks; dropped"));
            return;
        }
        let mut last_miss = None;
        let mut batch = std::mem::take(&mut self.batch);
        let mut batched = std::mem::take(&mut self.batched);
        for id in start..end {
            if get_bit(&self.clients[c as usize].sent, id) {
                self.stats.repeats += 1;
                continue;
            }
            let from_file = self.file.is_some() && self.holds_initially(c, id);
            let data = if from_file {
                let at = id as usize * self.chunk_size;
                let len = proto::chunk_len(id, self.chunk_size, self.file_size);
                self.file.as_deref().map(|f| &f[at..at + len])
            } else {
                self.cache.get(id)
            };
            if let Some(data) = data {
                proto::encode_chunk(id, data, self.chunk_size, &mut batch);
                batched.push(id);
                self.stats.served += 1;
                if !from_file {
                    self.stats.hits += 1;
                    self.note_holder(id, c);
                }
                // The answers to one request go out together: in one send
                // over TCP, packed into as few datagrams as they fit over
                // UDP.
                let room = match self.control {
                    Control::Tcp => proto::MAX_DATAGRAM,
                    Control::Udp => BATCH,
                };
                if batch.len() + proto::chunk_record(self.chunk_size) > room {
                    self.send_batch(c, &mut batch, &mut batched);
                }
                continue;
            }
            let w = self.waiters.entry(id).or_default();
            if w.contains(&c) {
                // Asked again while it waits: not a new lookup.
                self.stats.repeats += 1;
            } else {
                w.push(c);
                self.stats.misses += 1;
            }
            self.ask(id, now);
            last_miss = Some(id);
        }
        self.send_batch(c, &mut batch, &mut batched);
        self.batch = batch;
        self.batched = batched;
        // Prefetch: the other clients will want the next chunks too.
        if let Some(m) = last_miss {
            for id in m + 1..(m + 1).saturating_add(PREFETCH).min(self.n_chunks) {
                if !self.cache.contains(id) {
                    self.ask(id, now);
                }
            }
        }
        self.flush_asks();
    }

    fn note_holder(&mut self, id: u32, c: u32) {
        let h = self.extra_holders.entry(id).or_default();
        if h.len() < 4 && !h.contains(&c) {
            h.push(c);
        }
    }

    /// The next client to ask for `id`: the block owner, then the replica
    /// holder, then clients it was forwarded to; none already asked, none
    /// waiting for it.
    fn next_holder(&self, id: u32, asked: &[u32]) -> Option<u32> {
        let waiting = self.waiters.get(&id);
        let liars = self.liars.get(&id);
        let ok = |c: u32| {
            self.live(c)
                && !asked.contains(&c)
                && !waiting.is_some_and(|w| w.contains(&c))
                && !liars.is_some_and(|l| l.contains(&c))
        };
        let initial = (0..self.clients.len() as u32).filter(|&c| {
            let cl = &self.clients[c as usize];
            cl.registered && (cl.block.0..cl.block.1).contains(&id)
        });
        let replica = (0..self.clients.len() as u32).filter(|&c| {
            let cl = &self.clients[c as usize];
            cl.registered && (cl.replica.0..cl.replica.1).contains(&id)
        });
        let extra = self.extra_holders.get(&id).into_iter().flatten().copied();
        initial.chain(replica).chain(extra).find(|&c| ok(c))
    }

    /// [`Server::next_holder`], starting over when every holder was asked:
    /// a holder may not have had the chunk yet, or its answer was lost.
    fn next_holder_cycling(&self, id: u32, a: &mut Ask) -> Option<u32> {
        if let Some(h) = self.next_holder(id, &a.asked) {
            return Some(h);
        }
        let h = self.next_holder(id, &[])?;
        a.asked.clear();
        Some(h)
    }

    /// Starts an ask for `id` unless one is in flight.
    fn ask(&mut self, id: u32, now: Instant) {
        if self.asks.contains_key(&id) {
            return;
        }
        let Some(h) = self.next_holder(id, &[]) else {
            self.lose(id);
            return;
        };
        self.asks.insert(
            id,
            Ask {
                asked: vec![h],
                sent: now,
                tries: 0,
            },
        );
        self.pending_asks.push((h, id));
    }

    /// Sends the asks collected this turn, contiguous ids to one holder as
    /// one range.
    fn flush_asks(&mut self) {
        let mut list = std::mem::take(&mut self.pending_asks);
        list.sort_unstable();
        let mut i = 0;
        while i < list.len() {
            let (h, start) = list[i];
            let mut count = 1;
            while i + (count as usize) < list.len()
                && list[i + count as usize] == (h, start + count)
                && count < MAX_RANGE
            {
                count += 1;
            }
            for id in start..start + count {
                set_bit(&mut self.clients[h as usize].asked_ever, id);
            }
            self.send_msg(h, Msg::Ask { start, count });
            self.stats.asks += 1;
            i += count as usize;
        }
        list.clear();
        self.pending_asks = list;
    }

    /// No client left holds `id`: everyone waiting for it is told.
    fn lose(&mut self, id: u32) {
        self.asks.remove(&id);
        if let Some(w) = self.waiters.remove(&id) {
            self.stats.lost += 1;
            eprintln!("psp_server: chunk {id} is lost: no client holding it is left");
            for c in w {
                if self.live(c) {
                    self.send_msg(c, Msg::Lost { id });
                }
            }
        }
    }

    /// A chunk record from client `c`.
    fn on_chunk(&mut self, c: u32, rec: &[u8], now: Instant) {
        let (id, data) =
            match proto::decode_chunk(rec, self.chunk_size, self.n_chunks, self.file_size) {
                Ok(v) => v,
                Err(Bad(why)) => {
                    self.stats.malformed += 1;
                    self.note(|| format!("dropped a chunk from client {c}: {why}"));
                    return;
                }
            };
        let asked_this = self.asks.get(&id).is_some_and(|a| a.asked.contains(&c));
        if !asked_this {
            if get_bit(&self.clients[c as usize].asked_ever, id) {
                self.stats.late += 1;
            } else {
                self.stats.unasked += 1;
                self.note(|| format!("dropped chunk {id} from client {c}: never asked for"));
            }
            return;
        }
        if proto::checksum(data) != self.sums[id as usize] {
            self.stats.bad_chunks += 1;
            self.note(|| format!("chunk {id} from client {c} fails its checksum; asking another"));
            self.retry_ask(id, now, Some(c));
            self.flush_asks();
            return;
        }
        let data = data.to_vec();
        if let Some(a) = self.asks.remove(&id) {
            if a.tries == 0 {
                self.rto.sample(now.duration_since(a.sent).as_secs_f64());
            }
        }
        self.cache.put(id, &data);
        if let Some(w) = self.waiters.remove(&id) {
            for to in w {
                if self.live(to) {
                    self.send_chunk(to, id, &data);
                    self.stats.forwarded += 1;
                    self.stats.served += 1;
                    self.note_holder(id, to);
                }
            }
        }
    }

    /// The ask for `id` timed out, its holder left, or `liar` answered with
    /// wrong bytes: ask the next holder, starting over when all were asked
    /// (with a longer wait each round).
    fn retry_ask(&mut self, id: u32, now: Instant, liar: Option<u32>) {
        let Some(mut a) = self.asks.remove(&id) else {
            return;
        };
        if let Some(l) = liar {
            // It lied: it is never asked for this chunk again.
            self.liars.entry(id).or_default().push(l);
            a.asked.retain(|&x| x != l);
        }
        let Some(h) = self.next_holder_cycling(id, &mut a) else {
            self.lose(id);
            return;
        };
        if !a.asked.contains(&h) {
            a.asked.push(h);
        }
        a.sent = now;
        a.tries += 1;
        self.asks.insert(id, a);
        self.pending_asks.push((h, id));
    }

    fn on_tick(&mut self, now: Instant) {
        let base = self.rto.timeout();
        let due: Vec<u32> = self
            .asks
            .iter()
            .filter(|(_, a)| {
                let wait = (base * f64::from(1u32 << a.tries.min(6))).min(Rto::MAX);
                now.duration_since(a.sent).as_secs_f64() > wait
            })
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.retry_ask(id, now, None);
        }
        self.flush_asks();
    }

    fn on_gone(&mut self, c: u32, why: &str) {
        let cl = &mut self.clients[c as usize];
        if cl.gone {
            return;
        }
        cl.gone = true;
        let was = cl.registered;
        if was && !cl.done {
            eprintln!(
                "psp_server: client {c} (pid {}) left before it was done: {why}",
                cl.pid
            );
        }
        self.by_addr.remove(&cl.addr);
        for w in self.waiters.values_mut() {
            w.retain(|&x| x != c);
        }
        if !was {
            return;
        }
        // Asks it was to answer go to someone else now.
        let now = Instant::now();
        let mine: Vec<u32> = self
            .asks
            .iter()
            .filter(|(_, a)| a.asked.last() == Some(&c))
            .map(|(&id, _)| id)
            .collect();
        for id in mine {
            self.retry_ask(id, now, None);
        }
        self.flush_asks();
        self.on_have(c);
        self.check_finished();
    }

    fn check_finished(&mut self) {
        if !self.started || self.finished {
            return;
        }
        let all = self
            .clients
            .iter()
            .filter(|c| c.registered)
            .all(|c| c.done || c.gone);
        if all {
            self.finished = true;
            for c in 0..self.clients.len() as u32 {
                if self.live(c) {
                    self.send_msg(c, Msg::Bye);
                }
            }
        }
    }

    fn status_line(&self) -> String {
        let total = u64::from(self.n_chunks) * u64::from(self.expected);
        let s = &self.stats;
        format!(
            "status served={} total={} done={} hits={} misses={} asks={} repeats={} bad={} unasked={} late={} malformed={} lost={} pending_asks={} waiting={}",
            s.served,
            total,
            self.clients.iter().filter(|c| c.done).count(),
            s.hits,
            s.misses,
            s.asks,
            s.repeats,
            s.bad_chunks,
            s.unasked,
            s.late,
            s.malformed,
            s.lost,
            self.asks.len(),
            self.waiters.len()
        )
    }
}

fn set_bit(bits: &mut [u64], i: u32) {
    if let Some(w) = bits.get_mut(i as usize / 64) {
        *w |= 1 << (i % 64);
    }
}

fn get_bit(bits: &[u64], i: u32) -> bool {
    bits.get(i as usize / 64)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Writes what the socket takes from a client's queue (a failed send: the
/// client is gone, and so is what was queued for it).
fn flush(cl: &mut Client) {
    if cl.out.flush(&cl.tcp).is_err() {
        cl.out.clear();
    }
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
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let bind = ReservedBind::new(addr).backlog(1024);
    let listener = bind.listen()?;
    let udp = bind.udp()?;
    udp.set_nonblocking(true)?;
    // Large buffers ride out bursts of requests; the kernel caps them.
    let _ = udp.set_recv_buffer_size(4 << 20);
    let _ = udp.set_send_buffer_size(4 << 20);
    let udp = Rc::new(udp);

    let lp = EventLoop::new()?;
    let server = Rc::new(RefCell::new(Server {
        control: args.control,
        chunk_size: cs,
        n_chunks,
        file_size: data.len() as u64,
        file_hash,
        sums,
        file: Some(data),
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
    lp.register(
        Rc::clone(&udp),
        Interest::READABLE,
        move |cx, u: &Rc<Socket>, _| {
            let mut buf = vec![0u8; 65536];
            for _ in 0..cx.budget() {
                match u.recv_from(&mut buf) {
                    Ok((n, from)) => on_datagram(&s, &buf[..n], &from),
                    Err(e) if e.is_would_block() => return Ok(()),
                    Err(e) if e.raw_os_error() == errno::EINTR => {}
                    // ICMP errors from a client that left: nothing to do.
                    Err(_) => {}
                }
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
        "summary wall_s={:.3} cpu_s={} hit_rate={:.3} served={} bad={} unasked={} malformed={} lost={}",
        sv.start.elapsed().as_secs_f64(),
        cpu_seconds().map_or("n/a".to_string(), |c| format!("{c:.2}")),
        if lookups == 0 { 0.0 } else { s.hits as f64 / lookups as f64 },
        s.served,
        s.bad_chunks,
        s.unasked,
        s.malformed,
        s.lost
    );
    Ok(())
}

fn accept_client(
    cx: &mut Context<'_>,
    server: &Rc<RefCell<Server>>,
    sock: Socket,
    peer: SockAddr,
) -> std::io::Result<()> {
    let Some(addr) = peer.as_inet() else {
        return Ok(());
    };
    sock.set_nonblocking(true)?;
    let _ = sock.set_nodelay(true);
    let tcp = Rc::new(sock);
    let c = {
        let mut sv = server.borrow_mut();
        let c = sv.clients.len() as u32;
        let rec = sv.record_size();
        sv.clients.push(Client {
            addr,
            tcp: Rc::clone(&tcp),
            out: WriteQueue::new(),
            decoder: Decoder::new(Framing::Fixed(rec)),
            pid: 0,
            registered: false,
            has_blocks: false,
            done: false,
            gone: false,
            asked_ever: Vec::new(),
            sent: Vec::new(),
            block: (0, 0),
            replica: (0, 0),
        });
        sv.by_addr.insert(addr, c);
        c
    };
    let s = Rc::clone(server);
    let mut buf = vec![0u8; 256 * 1024];
    cx.register(
        tcp,
        Interest::READABLE | Interest::WRITABLE,
        move |cx, t: &Rc<Socket>, ready| {
            let mut sv = s.borrow_mut();
            if ready.is_writable() {
                flush(&mut sv.clients[c as usize]);
            }
            for _ in 0..cx.budget() {
                match t.recv(&mut buf) {
                    Ok(0) => {
                        sv.on_gone(c, "closed its connection");
                        cx.deregister_current();
                        return Ok(());
                    }
                    Ok(n) => {
                        let now = cx.now();
                        sv.clients[c as usize].decoder.feed(&buf[..n]);
                        loop {
                            let rec = match sv.clients[c as usize].decoder.next_frame() {
                                Ok(Some(r)) => r.to_vec(),
                                Ok(None) => break,
                                Err(e) => {
                                    sv.stats.malformed += 1;
                                    sv.on_gone(c, &format!("bad stream: {e}"));
                                    cx.deregister_current();
                                    return Ok(());
                                }
                            };
                            match sv.control {
                                Control::Udp => sv.on_chunk(c, &rec, now),
                                Control::Tcp => match Msg::decode(&rec) {
                                    Ok(m) => sv.on_msg(c, m, now),
                                    Err(Bad(why)) => {
                                        sv.stats.malformed += 1;
                                        sv.note(|| {
                                            format!("dropped a record from client {c}: {why}")
                                        });
                                    }
                                },
                            }
                        }
                    }
                    Err(e) if e.is_would_block() => return Ok(()),
                    Err(e) if e.raw_os_error() == errno::EINTR => {}
                    Err(e) => {
                        sv.on_gone(c, &e.to_string());
                        cx.deregister_current();
                        return Ok(());
                    }
                }
            }
            cx.reschedule();
            Ok(())
        },
    )?
    .detach();
    Ok(())
}

fn on_datagram(server: &Rc<RefCell<Server>>, d: &[u8], from: &SockAddr) {
    let mut sv = server.borrow_mut();
    let Some(addr) = from.as_inet() else { return };
    // Only registered connections' addresses are listened to.
    let Some(&c) = sv.by_addr.get(&addr) else {
        sv.stats.malformed += 1;
        return;
    };
    let now = Instant::now();
    match sv.control {
        Control::Udp => match Msg::decode(d) {
            Ok(m) => sv.on_msg(c, m, now),
            Err(Bad(why)) => {
                sv.stats.malformed += 1;
                sv.note(|| format!("dropped a datagram from client {c}: {why}"));
            }
        },
        Control::Tcp => {
            let size = proto::chunk_record(sv.chunk_size);
            if d.is_empty() || d.len() % size != 0 {
                sv.stats.malformed += 1;
                return;
            }
            for rec in d.chunks(size) {
                sv.on_chunk(c, rec, now);
            }
        }
    }
}
