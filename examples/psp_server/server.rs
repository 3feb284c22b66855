//! The server's state and what it does with each message: serving
//! chunks from the cache, asking holders, forwarding, and accepting clients.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use procwire::net::buffer::WriteQueue;
use procwire::net::event::{Context, Interest};
use procwire::net::frame::{Decoder, Framing};
use procwire::sys::errno;
use procwire::sys::socket::{SockAddr, Socket};

use super::client::{flush, get_bit, path_payload, set_bit, Client};
use super::lru::Lru;
use super::proto::{self, Bad, Control, Info, Layout, Msg, Reassembly, Rto, CONTROL_SIZE};
use super::{
    cli, BATCH, DIRECT_BYTES, LOG_LIMIT, MAX_QUEUE, MAX_RANGE, OUT_BATCH, OUT_BYTES,
    PIECES_PER_CLIENT, PREFETCH,
};
use cli::Rng;

/// An ask in flight for one chunk.
pub(crate) struct Ask {
    /// Clients asked so far, the last one most recently.
    pub(crate) asked: Vec<u32>,
    pub(crate) sent: Instant,
    pub(crate) tries: u32,
}

/// What the server counts, printed at the end.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) asks: u64,
    pub(crate) forwarded: u64,
    pub(crate) served: u64,
    pub(crate) bad_chunks: u64,
    /// Chunks a client sent though it was never asked for them.
    pub(crate) unasked: u64,
    /// Answers to asks already answered by someone else (retries).
    pub(crate) late: u64,
    /// Requests repeated while the chunk was on its way (sent over TCP,
    /// or waited for), not answered again.
    pub(crate) repeats: u64,
    pub(crate) malformed: u64,
    pub(crate) lost: u64,
    /// Datagrams sent, and the calls that sent them.
    pub(crate) datagrams: u64,
    pub(crate) send_calls: u64,
    /// Requests for some pieces of a chunk, answered.
    pub(crate) pieces_again: u64,
}

/// The file being shared, as the server describes it to clients.
pub(crate) struct SharedFile {
    pub(crate) chunk_size: usize,
    pub(crate) n_chunks: u32,
    pub(crate) size: u64,
    /// The checksum of the chunks' checksums (`proto::file_checksum`).
    pub(crate) hash: u64,
    /// Each chunk's checksum, to check what clients send.
    pub(crate) sums: Vec<u64>,
    /// The bytes, until every client holds its block (then only the cache
    /// serves).
    pub(crate) bytes: Option<Vec<u8>>,
}

/// Everything the server knows: the file, the clients, the cache, the
/// asks in flight and the counters.
pub(crate) struct Server {
    pub(crate) control: Control,
    pub(crate) file: SharedFile,
    pub(crate) expected: u32,
    pub(crate) started: bool,
    pub(crate) clients: Vec<Client>,
    pub(crate) by_addr: HashMap<SocketAddr, u32>,
    pub(crate) cache: Lru,
    pub(crate) waiters: HashMap<u32, Vec<u32>>,
    pub(crate) asks: HashMap<u32, Ask>,
    /// Clients the server forwarded a chunk to (a few per chunk).
    pub(crate) extra_holders: HashMap<u32, Vec<u32>>,
    pub(crate) udp: Rc<Socket>,
    pub(crate) rto: Rto,
    pub(crate) stats: Stats,
    pub(crate) drop_udp: f64,
    pub(crate) rng: Rng,
    pub(crate) scratch: Vec<u8>,
    pub(crate) finished: bool,
    pub(crate) start: Instant,
    /// (holder, chunk) asks collected this turn.
    pub(crate) pending_asks: Vec<(u32, u32)>,
    /// Clients that answered an ask for a chunk with wrong bytes.
    pub(crate) liars: HashMap<u32, Vec<u32>>,
    /// The records answering one request, and their chunk ids.
    pub(crate) batch: Vec<u8>,
    pub(crate) batched: Vec<u32>,
    /// Lines logged by `note`.
    pub(crate) logged: u64,
    /// Datagrams queued for [`Server::flush_out`]: their bytes, and (to,
    /// offset, length) of each.
    pub(crate) out: Vec<u8>,
    pub(crate) out_msgs: Vec<(SocketAddr, usize, usize)>,
    /// Scratch for the datagrams of one send.
    pub(crate) grams: Vec<u8>,
    /// UDP GSO works here (until a send says otherwise).
    pub(crate) gso: bool,
    /// Clients with TCP output queued this turn, sent by
    /// [`Server::flush_out`].
    pub(crate) corked: Vec<u32>,
}

impl Server {
    /// Logs a dropped or refused message. After `LOG_LIMIT` lines only the
    /// counters of the status lines go on, so a hostile peer can't flood
    /// stderr.
    pub(crate) fn note(&mut self, line: impl FnOnce() -> String) {
        self.logged += 1;
        if self.logged <= LOG_LIMIT {
            eprintln!("psp_server: {}", line());
        } else if self.logged == LOG_LIMIT + 1 {
            eprintln!("psp_server: more drops are only counted (see the status lines)");
        }
    }

    pub(crate) fn record_size(&self) -> usize {
        match self.control {
            Control::Udp => proto::chunk_record(self.file.chunk_size),
            Control::Tcp => CONTROL_SIZE,
        }
    }

    pub(crate) fn live(&self, c: u32) -> bool {
        self.clients
            .get(c as usize)
            .is_some_and(|c| c.registered && !c.gone)
    }

    /// Queues one datagram; [`Server::flush_out`] sends the queue in as
    /// few calls as it can.
    pub(crate) fn send_udp(&mut self, to: SocketAddr, data: &[u8]) {
        if self.drop_udp > 0.0 && self.rng.unit() < self.drop_udp {
            return;
        }
        self.queue_udp(to, data);
    }

    /// Queues one datagram (no test drop: the caller decided).
    pub(crate) fn queue_udp(&mut self, to: SocketAddr, data: &[u8]) {
        let at = self.out.len();
        self.out.extend_from_slice(data);
        self.out_msgs.push((to, at, data.len()));
        if self.out_msgs.len() >= OUT_BATCH || self.out.len() >= OUT_BYTES {
            self.flush_udp();
        }
    }

    /// Sends what this turn queued: each corked client's TCP output in one
    /// send, then the datagrams.
    pub(crate) fn flush_out(&mut self) {
        for c in std::mem::take(&mut self.corked) {
            let cl = &mut self.clients[c as usize];
            cl.corked = false;
            flush(cl);
        }
        self.flush_udp();
    }

    /// Sends the queued datagrams: per client, in the order queued, runs of
    /// equal-sized ones as one UDP GSO send each (the kernel cuts them),
    /// the rest in `sendmmsg` batches. A full buffer drops what is left of
    /// a batch, as the network would; the receivers ask again. A datagram
    /// the path no longer takes (`EMSGSIZE`, its MTU shrank) is dropped and
    /// its client's payload looked up again.
    pub(crate) fn flush_udp(&mut self) {
        if self.out_msgs.is_empty() {
            return;
        }
        let mut msgs = std::mem::take(&mut self.out_msgs);
        // Stable: each client's datagrams stay in order.
        msgs.sort_by_key(|m| m.0);
        let mut singles: Vec<(SocketAddr, usize, usize)> = Vec::new();
        let mut k = 0;
        while k < msgs.len() {
            let to = msgs[k].0;
            let end = k + msgs[k..].iter().take_while(|m| m.0 == to).count();
            let sizes: Vec<usize> = msgs[k..end].iter().map(|m| m.2).collect();
            for g in proto::gso_groups(&sizes) {
                let group = &msgs[k + g.start..k + g.end];
                if group.len() > 1 && self.gso {
                    let mut buf = std::mem::take(&mut self.grams);
                    buf.clear();
                    for &(_, at, len) in group {
                        buf.extend_from_slice(&self.out[at..at + len]);
                    }
                    let r = self.udp.send_segments(&buf, group[0].2 as u16, to);
                    self.grams = buf;
                    match r {
                        Ok(_) => {
                            self.stats.datagrams += group.len() as u64;
                            self.stats.send_calls += 1;
                            continue;
                        }
                        Err(e) if e.is_would_block() => continue,
                        Err(e) if e.raw_os_error() == errno::EMSGSIZE => {
                            self.refresh_payload(to);
                            continue;
                        }
                        // No GSO after all: one datagram at a time from now.
                        Err(_) => self.gso = false,
                    }
                }
                singles.extend_from_slice(group);
            }
            k = end;
        }
        let mut from = 0;
        while from < singles.len() {
            let batch: Vec<(&[u8], SocketAddr)> = singles[from..]
                .iter()
                .map(|&(to, at, len)| (&self.out[at..at + len], to))
                .collect();
            match self.udp.send_batch(&batch) {
                Ok(n) => {
                    self.stats.datagrams += n as u64;
                    self.stats.send_calls += 1;
                    from += n.max(1);
                }
                Err(e) if e.raw_os_error() == errno::EMSGSIZE => {
                    self.refresh_payload(singles[from].0);
                    from += 1;
                }
                Err(e) if e.raw_os_error() == errno::EINTR => {}
                // Full, or a client that left (ICMP): the rest is dropped.
                Err(_) => break,
            }
        }
        self.out.clear();
        msgs.clear();
        self.out_msgs = msgs;
    }

    /// The path to `to` no longer takes our datagrams: ask the kernel again.
    fn refresh_payload(&mut self, to: SocketAddr) {
        if let Some(&c) = self.by_addr.get(&to) {
            self.clients[c as usize].payload = path_payload(to);
        }
    }

    /// How chunk records travel to client `c` over UDP.
    pub(crate) fn layout(&self, c: u32) -> Option<Layout> {
        Layout::new(
            proto::chunk_record(self.file.chunk_size),
            self.clients[c as usize].payload,
        )
    }

    /// Queues chunk records (`records`, back to back) for client `c` over
    /// UDP, in datagrams that fit its path: packed whole, or in pieces (of
    /// a record in pieces only those set in `want`, all when `None`).
    pub(crate) fn send_records_udp(&mut self, c: u32, records: &[u8], want: Option<&[u8; 32]>) {
        let to = self.clients[c as usize].addr;
        let Some(layout) = self.layout(c) else {
            self.note(|| format!("client {c}'s path is too small for the chunk size; dropped"));
            return;
        };
        // Queued (with the test's drops, one datagram at a time):
        // `flush_udp` joins them into GSO sends.
        layout.datagrams(records, want, |d| self.send_udp(to, d));
    }

    /// Sends or queues `data` on client `c`'s connection; `false` when it
    /// was dropped (the client is gone or its queue is full).
    ///
    /// Small writes are corked until the end of the turn
    /// ([`Server::flush_out`]): the chunks one turn forwards to a client
    /// go out in one send and wake it once, not once per chunk.
    pub(crate) fn send_tcp(&mut self, c: u32, data: &[u8]) -> bool {
        let cl = &mut self.clients[c as usize];
        if cl.gone || cl.out.len() > MAX_QUEUE {
            return false;
        }
        if data.len() >= DIRECT_BYTES && cl.out.is_empty() {
            // Straight to the socket while nothing waits in the queue: one
            // copy less. A failed send means the client is gone; its end
            // is noticed on the connection.
            if cl.out.write_to(&cl.tcp, data).is_err() {
                cl.out.clear();
            }
            return true;
        }
        cl.out.push(data);
        if !cl.corked {
            cl.corked = true;
            self.corked.push(c);
        }
        true
    }

    pub(crate) fn send_msg(&mut self, c: u32, m: Msg) {
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

    pub(crate) fn send_chunk(&mut self, c: u32, id: u32, data: &[u8]) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        proto::encode_chunk(id, data, self.file.chunk_size, &mut buf);
        self.send_record(c, &buf);
        self.scratch = buf;
    }

    /// Sends the chunk records in `batch` (chunks `ids`) to client `c` and
    /// empties both.
    pub(crate) fn send_batch(&mut self, c: u32, batch: &mut Vec<u8>, ids: &mut Vec<u32>) {
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
            Control::Tcp => self.send_records_udp(c, batch, None),
        }
        batch.clear();
        ids.clear();
    }

    /// Sends an encoded chunk record on the chunk layer.
    pub(crate) fn send_record(&mut self, c: u32, rec: &[u8]) {
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
            Control::Tcp => self.send_records_udp(c, rec, None),
        }
    }

    /// A control message from client `c`.
    pub(crate) fn on_msg(&mut self, c: u32, m: Msg, now: Instant) {
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
            Msg::Pieces { id, want } => self.on_pieces(c, id, &want, now),
            other => {
                self.stats.malformed += 1;
                self.note(|| format!("dropped {other:?} from client {c}: not a client message"));
            }
        }
    }

    pub(crate) fn on_reg(&mut self, c: u32, pid: u32) {
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
    pub(crate) fn start_sharing(&mut self) {
        self.started = true;
        let ids: Vec<u32> = (0..self.clients.len() as u32)
            .filter(|&c| self.clients[c as usize].registered)
            .collect();
        let blocks = proto::blocks(self.file.n_chunks, ids.len() as u32);
        let words = (self.file.n_chunks as usize).div_ceil(64);
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
        outln!(
            "started clients={} chunks={}",
            ids.len(),
            self.file.n_chunks
        );
        cli::flush();
    }

    pub(crate) fn send_info(&mut self, c: u32) {
        let cl = &self.clients[c as usize];
        let info = Info {
            client: c,
            n_chunks: self.file.n_chunks,
            chunk_size: self.file.chunk_size as u32,
            file_size: self.file.size,
            file_hash: self.file.hash,
            block_start: cl.block.0,
            block_end: cl.block.1,
            replica_start: cl.replica.0,
            replica_end: cl.replica.1,
        };
        self.send_msg(c, Msg::Info(info));
    }

    pub(crate) fn on_have(&mut self, c: u32) {
        let cl = &mut self.clients[c as usize];
        if !cl.registered || cl.has_blocks {
            return;
        }
        cl.has_blocks = true;
        if self.file.bytes.is_some()
            && self
                .clients
                .iter()
                .all(|c| !c.registered || c.gone || c.has_blocks)
        {
            self.file.bytes = None;
            outln!("forgot the file");
            cli::flush();
        }
    }

    pub(crate) fn holds_initially(&self, c: u32, id: u32) -> bool {
        let cl = &self.clients[c as usize];
        (cl.block.0..cl.block.1).contains(&id) || (cl.replica.0..cl.replica.1).contains(&id)
    }

    /// Client `c` has some pieces of chunk `id` and wants the rest (`want`):
    /// those pieces again if the chunk is at hand, else the whole chunk as
    /// a request would get it.
    pub(crate) fn on_pieces(&mut self, c: u32, id: u32, want: &[u8; 32], now: Instant) {
        if !self.started || !self.clients[c as usize].registered || self.control != Control::Tcp {
            return;
        }
        if id >= self.file.n_chunks {
            self.stats.malformed += 1;
            let n = self.file.n_chunks;
            self.note(|| format!("client {c} asked for pieces of chunk {id} of {n}; dropped"));
            return;
        }
        let from_file = self.file.bytes.is_some() && self.holds_initially(c, id);
        let data = if from_file {
            let at = id as usize * self.file.chunk_size;
            let len = proto::chunk_len(id, self.file.chunk_size, self.file.size);
            self.file.bytes.as_deref().map(|f| f[at..at + len].to_vec())
        } else {
            self.cache.get(id).map(<[u8]>::to_vec)
        };
        let Some(data) = data else {
            self.on_req(c, id, 1, now);
            return;
        };
        let mut rec = std::mem::take(&mut self.scratch);
        rec.clear();
        proto::encode_chunk(id, &data, self.file.chunk_size, &mut rec);
        self.stats.pieces_again += 1;
        self.send_records_udp(c, &rec, Some(want));
        self.scratch = rec;
    }

    pub(crate) fn on_req(&mut self, c: u32, start: u32, count: u32, now: Instant) {
        if !self.started || !self.clients[c as usize].registered {
            return;
        }
        let end = start.saturating_add(count);
        if count > MAX_RANGE || end > self.file.n_chunks {
            self.stats.malformed += 1;
            let n = self.file.n_chunks;
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
            let from_file = self.file.bytes.is_some() && self.holds_initially(c, id);
            let data = if from_file {
                let at = id as usize * self.file.chunk_size;
                let len = proto::chunk_len(id, self.file.chunk_size, self.file.size);
                self.file.bytes.as_deref().map(|f| &f[at..at + len])
            } else {
                self.cache.get(id)
            };
            if let Some(data) = data {
                proto::encode_chunk(id, data, self.file.chunk_size, &mut batch);
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
                    // Cut into datagrams by the client's path.
                    Control::Tcp => OUT_BYTES / 2,
                    Control::Udp => BATCH,
                };
                if batch.len() + proto::chunk_record(self.file.chunk_size) > room {
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
            for id in m + 1..(m + 1).saturating_add(PREFETCH).min(self.file.n_chunks) {
                if !self.cache.contains(id) {
                    self.ask(id, now);
                }
            }
        }
        self.flush_asks();
    }

    pub(crate) fn note_holder(&mut self, id: u32, c: u32) {
        let h = self.extra_holders.entry(id).or_default();
        if h.len() < 4 && !h.contains(&c) {
            h.push(c);
        }
    }

    /// The next client to ask for `id`: the block owner, then the replica
    /// holder, then clients it was forwarded to; none already asked, none
    /// waiting for it.
    pub(crate) fn next_holder(&self, id: u32, asked: &[u32]) -> Option<u32> {
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
    pub(crate) fn next_holder_cycling(&self, id: u32, a: &mut Ask) -> Option<u32> {
        if let Some(h) = self.next_holder(id, &a.asked) {
            return Some(h);
        }
        let h = self.next_holder(id, &[])?;
        a.asked.clear();
        Some(h)
    }

    /// Starts an ask for `id` unless one is in flight.
    pub(crate) fn ask(&mut self, id: u32, now: Instant) {
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
    pub(crate) fn flush_asks(&mut self) {
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
    pub(crate) fn lose(&mut self, id: u32) {
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
    pub(crate) fn on_chunk(&mut self, c: u32, rec: &[u8], now: Instant) {
        let (id, data) = match proto::decode_chunk(
            rec,
            self.file.chunk_size,
            self.file.n_chunks,
            self.file.size,
        ) {
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
        if proto::checksum(data) != self.file.sums[id as usize] {
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
    pub(crate) fn retry_ask(&mut self, id: u32, now: Instant, liar: Option<u32>) {
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

    pub(crate) fn on_tick(&mut self, now: Instant) {
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

    pub(crate) fn on_gone(&mut self, c: u32, why: &str) {
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

    pub(crate) fn check_finished(&mut self) {
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

    pub(crate) fn status_line(&self) -> String {
        let total = u64::from(self.file.n_chunks) * u64::from(self.expected);
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

pub(crate) fn accept_client(
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
            payload: path_payload(addr),
            reasm: None,
            corked: false,
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
                        sv.flush_out();
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
                    Err(e) if e.is_would_block() => {
                        // What the requests read here queued goes out.
                        sv.flush_out();
                        return Ok(());
                    }
                    Err(e) if e.raw_os_error() == errno::EINTR => {}
                    Err(e) => {
                        sv.on_gone(c, &e.to_string());
                        cx.deregister_current();
                        return Ok(());
                    }
                }
            }
            sv.flush_out();
            cx.reschedule();
            Ok(())
        },
    )?
    .detach();
    Ok(())
}

pub(crate) fn on_datagram(server: &Rc<RefCell<Server>>, d: &[u8], from: &SockAddr) {
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
        Control::Tcp if d.first() == Some(&proto::T_PIECE) => {
            let rec = proto::chunk_record(sv.file.chunk_size);
            let n = sv.file.n_chunks;
            let got = sv.clients[c as usize]
                .reasm
                .get_or_insert_with(|| Reassembly::new(rec, n, PIECES_PER_CLIENT))
                .add(d);
            match got {
                Ok(Some(whole)) => sv.on_chunk(c, &whole, now),
                Ok(None) => {}
                Err(Bad(why)) => {
                    sv.stats.malformed += 1;
                    sv.note(|| format!("dropped a piece from client {c}: {why}"));
                }
            }
        }
        Control::Tcp => {
            let size = proto::chunk_record(sv.file.chunk_size);
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
