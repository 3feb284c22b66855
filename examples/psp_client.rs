//! A client of the peer-server-peer file-sharing network (see
//! `psp_server`): registers, fetches its own block and replica first, then
//! every other chunk from the server, with a bounded number of requests in
//! flight and a retry timeout that adapts to the measured round trip; it
//! answers the server's asks for chunks it holds. When it has every chunk
//! it checks the whole file's checksum (over the checksums of its chunks,
//! each taken as the chunk arrived, so nothing is read back) and makes the output appear
//! atomically: chunks go straight into a mapped temporary file next to the
//! output, which is fsynced and renamed over it only after the check (so
//! the file is never held twice in memory); then it reports done and exits
//! 0 when the server says everyone is done.
//!
//! ```text
//! psp_client ADDR [-o OUT] [--control udp|tcp]
//! ```
//!
//! It prints `rtt SUM_US COUNT BUCKETS` (see `proto::Hist`) before it exits.

#[macro_use]
#[path = "cli/mod.rs"]
mod cli;

#[path = "psp_common/pair.rs"]
mod pair;
#[path = "psp_common/proto.rs"]
mod proto;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use procwire::net::buffer::WriteQueue;
use procwire::net::event::{EventLoop, Interest};
use procwire::net::frame::parse_record;
use procwire::sys::errno;
use procwire::sys::socket::{Domain, Socket, Type};
use procwire::sys::udp::{self, PathMtu, RecvBatch};

use cli::Rng;
use proto::{Bad, Control, Hist, Info, Layout, Msg, Reassembly, Rto, CONTROL_SIZE};

const USAGE: &str = "usage: psp_client ADDR [-o OUT] [--control udp|tcp]

Fetches the file psp_server at ADDR (host:port) shares, writes it to OUT
(default: psp-out-PID in the current directory) and exits 0 once the server
says every client is done.";

const TICK: Duration = Duration::from_millis(10);
/// How often an unanswered `Reg` or `Done` is sent again.
const REPEAT_EVERY: Duration = Duration::from_millis(50);
/// How long it waits without any progress (no Info, no new chunk) before
/// it gives up.
const GIVE_UP: Duration = Duration::from_secs(60);

struct Args {
    server: SocketAddr,
    out: PathBuf,
    control: Control,
    drop_udp: f64,
    stall_after: Option<u64>,
    junk: Option<u32>,
}

fn parse() -> Result<Args, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let e = |e: lexopt::Error| e.to_string();
    let (mut server, mut out) = (None, None);
    let mut control = Control::Udp;
    let (mut drop_udp, mut stall_after, mut junk) = (0.0, None, None);
    while let Some(arg) = p.next().map_err(e)? {
        match arg {
            Short('o') | Long("out") => out = Some(PathBuf::from(p.value().map_err(e)?)),
            Long("control") => control = p.value().map_err(e)?.parse().map_err(e)?,
            // Test only: drop this fraction of outgoing datagrams.
            Long("drop-udp") => drop_udp = p.value().map_err(e)?.parse().map_err(e)?,
            // Test only: stop asking for chunks after this many arrived
            // (and print `stalled`), still answering the server.
            Long("stall-after") => stall_after = Some(p.value().map_err(e)?.parse().map_err(e)?),
            // Test only: no client, a hostile peer that sends N junk
            // datagrams and N junk records to the server, then leaves.
            Long("junk") => junk = Some(p.value().map_err(e)?.parse().map_err(e)?),
            Short('h') | Long("help") => {
                outln!("{USAGE}");
                std::process::exit(0);
            }
            Value(v) if server.is_none() => {
                let v = v.into_string().map_err(|v| format!("bad address {v:?}"))?;
                server = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|err| format!("ADDR {v:?}: {err} (expected host:port)"))?,
                );
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    let server = server.ok_or("missing ADDR")?;
    if !(0.0..1.0).contains(&drop_udp) {
        return Err("--drop-udp takes a fraction below 1".into());
    }
    Ok(Args {
        server,
        out: out.unwrap_or_else(|| PathBuf::from(format!("psp-out-{}", std::process::id()))),
        control,
        drop_udp,
        stall_after,
        junk,
    })
}

struct Client {
    control: Control,
    server: SocketAddr,
    tcp: Rc<Socket>,
    udp: Rc<Socket>,
    out_q: WriteQueue,
    /// TCP input: `inbuf[..inlen]` holds bytes not yet handled (records
    /// that came before the `Info` that says how to cut them, or the start
    /// of a record).
    inbuf: Vec<u8>,
    inlen: usize,
    info: Option<Info>,
    /// The temporary output file, mapped; `None` before the Info (and for
    /// an empty file).
    file: Option<OutFile>,
    have: Vec<bool>,
    /// The checksum of each chunk, taken as it arrived.
    sums: Vec<u64>,
    have_count: u32,
    /// Chunks to fetch, in order: own block, replica, then the rest.
    order: Vec<u32>,
    next: usize,
    /// Requests in flight: chunk -> (sent, tries).
    flight: HashMap<u32, (Instant, u32)>,
    /// No request in flight times out before this (`None`: none in
    /// flight was timed yet), so a tick scans `flight` only when one may.
    due_at: Option<Instant>,
    /// The most requests in flight the receive buffer allows.
    window: usize,
    /// Chunks over UDP: the congestion window (additive increase per
    /// chunk that came, halved at most once a round trip on a loss), so
    /// that clients sharing a link fill it without overrunning its queue.
    cwnd: f64,
    last_cut: Instant,
    rto: Rto,
    hist: Hist,
    have_sent: bool,
    done: bool,
    exit: Option<u8>,
    out_path: PathBuf,
    drop_udp: f64,
    rng: Rng,
    scratch: Vec<u8>,
    stall_after: Option<u64>,
    received: u64,
    /// When the last new chunk (or the Info) arrived.
    last_progress: Instant,
    stalled: bool,
    /// When `Reg` (before the Info) or `Done` (over UDP, before the Bye)
    /// was last sent: both are repeated until the server answers.
    last_repeat: Instant,
    /// The most bytes of one datagram to the server (the path MTU less the
    /// headers), and how chunk records travel in such datagrams (from the
    /// Info on).
    payload: usize,
    layout: Option<Layout>,
    /// Chunk records arriving in pieces (chunks over UDP).
    reasm: Option<Reassembly>,
    /// UDP GSO works here (until a send says otherwise).
    gso: bool,
}

impl Client {
    fn send_udp(&mut self, data: &[u8]) {
        if self.drop_udp > 0.0 && self.rng.unit() < self.drop_udp {
            return;
        }
        let _ = self.udp.send_to(data, self.server);
    }

    fn send_tcp(&mut self, data: &[u8]) {
        self.out_q.push(data);
        self.flush();
    }

    /// Writes what the socket takes (a failed send: the server is gone, and
    /// so is what was queued for it).
    fn flush(&mut self) {
        if self.out_q.flush(&self.tcp).is_err() {
            self.out_q.clear();
        }
    }

    fn send_msg(&mut self, m: Msg) {
        let b = m.encode();
        match self.control {
            Control::Udp => self.send_udp(&b),
            Control::Tcp => self.send_tcp(&b),
        }
    }

    /// Appends chunk `id`'s record (read from the output) to `out`.
    fn encode_chunk(&self, id: u32, out: &mut Vec<u8>) {
        let (Some(info), Some(f)) = (self.info, self.file.as_ref()) else {
            return;
        };
        let cs = info.chunk_size as usize;
        let len = proto::chunk_len(id, cs, info.file_size);
        let mut piece = vec![0u8; len];
        if f.load(id as u64 * cs as u64, &mut piece).is_ok() {
            proto::encode_chunk(id, &piece, cs, out);
        }
    }

    /// Sends chunk records on the chunk layer: over UDP in datagrams that
    /// fit the path (whole records packed, or pieces).
    fn send_records(&mut self, recs: &[u8]) {
        match self.control {
            Control::Udp => self.send_tcp(recs),
            Control::Tcp => {
                let Some(layout) = self.layout else { return };
                let mut grams = Vec::new();
                let mut sizes = Vec::new();
                let (drop, rng) = (self.drop_udp, &mut self.rng);
                layout.datagrams(recs, None, |d| {
                    if drop > 0.0 && rng.unit() < drop {
                        return;
                    }
                    sizes.push(d.len());
                    grams.extend_from_slice(d);
                });
                let mut at = 0;
                for g in proto::gso_groups(&sizes) {
                    let len: usize = sizes[g.clone()].iter().sum();
                    let bytes = &grams[at..at + len];
                    at += len;
                    if g.len() > 1
                        && self.gso
                        && self
                            .udp
                            .send_segments(bytes, sizes[g.start] as u16, self.server)
                            .map_err(|e| {
                                // Not a full buffer: no GSO here after all.
                                if !e.is_would_block() {
                                    self.gso = false;
                                }
                            })
                            .is_ok()
                    {
                        continue;
                    }
                    let mut off = 0;
                    for &n in &sizes[g] {
                        let _ = self.udp.send_to(&bytes[off..off + n], self.server);
                        off += n;
                    }
                }
            }
        }
    }

    fn on_msg(&mut self, m: Msg, now: Instant) {
        match m {
            Msg::Info(i) => self.on_info(i, now),
            Msg::Ask { start, count } => {
                let Some(info) = self.info else { return };
                let end = start.saturating_add(count).min(info.n_chunks);
                // Cut into datagrams by `send_records` over UDP.
                let room = 256 * 1024;
                let size = proto::chunk_record(info.chunk_size as usize);
                let mut batch = std::mem::take(&mut self.scratch);
                batch.clear();
                for id in start..end {
                    if self.have[id as usize] {
                        if batch.len() + size > room {
                            self.send_records(&batch);
                            batch.clear();
                        }
                        self.encode_chunk(id, &mut batch);
                    }
                }
                if !batch.is_empty() {
                    self.send_records(&batch);
                }
                self.scratch = batch;
            }
            Msg::Bye => {
                if self.done {
                    self.exit = Some(0);
                } else {
                    eprintln!("psp_client: the server ended the transfer before we had the file");
                    self.exit = Some(1);
                }
            }
            Msg::Lost { id } => {
                eprintln!("psp_client: chunk {id} is lost (every holder left); giving up");
                self.exit = Some(1);
            }
            other => eprintln!("psp_client: dropped {other:?}: not a server message"),
        }
    }

    fn on_info(&mut self, i: Info, now: Instant) {
        if let Some(old) = self.info {
            if old != i {
                eprintln!("psp_client: dropped a second, different Info");
            }
            return;
        }
        let cs = i.chunk_size as usize;
        let rec = proto::chunk_record(cs);
        self.layout = Layout::new(rec, self.payload);
        if self.layout.is_none() && self.control == Control::Tcp {
            eprintln!(
                "psp_client: chunks of {cs} bytes need more than {} pieces of {} bytes; the path is too small",
                proto::MAX_PIECES,
                self.payload
            );
            self.exit = Some(1);
            return;
        }
        if self.control == Control::Tcp {
            self.reasm = Some(Reassembly::new(rec, i.n_chunks, 1024));
        }
        let Ok(size) = usize::try_from(i.file_size) else {
            eprintln!(
                "psp_client: a file of {} bytes doesn't fit in memory",
                i.file_size
            );
            self.exit = Some(1);
            return;
        };
        if size > 0 {
            match OutFile::create(&self.out_path, size) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    eprintln!(
                        "psp_client: making the output next to {}: {e}",
                        self.out_path.display()
                    );
                    self.exit = Some(1);
                    return;
                }
            }
        }
        self.info = Some(i);
        self.last_progress = now;
        self.have = vec![false; i.n_chunks as usize];
        self.sums = vec![0; i.n_chunks as usize];
        let mut order: Vec<u32> = (i.block_start..i.block_end).collect();
        order.extend(
            (i.replica_start..i.replica_end)
                .filter(|id| !(i.block_start..i.block_end).contains(id)),
        );
        order.extend((0..i.n_chunks).filter(|id| {
            !(i.block_start..i.block_end).contains(id)
                && !(i.replica_start..i.replica_end).contains(id)
        }));
        self.order = order;
        // Requests in flight are bounded by bytes: over TCP by what keeps
        // the path busy without piling up in the server's queue, over UDP
        // by what the receive buffer holds (a datagram costs its size plus
        // the kernel's bookkeeping), so a burst of answers is not dropped.
        let per = proto::chunk_record(cs) + 768;
        let budget = match self.control {
            Control::Udp => 1 << 20,
            Control::Tcp => self.udp.recv_buffer_size().unwrap_or(212_992) / 2,
        };
        self.window = (budget / per).clamp(2, 512);
        if self.control == Control::Udp {
            // Room for many chunk records; chunks that came before the
            // Info are waiting at the start.
            let want = (4 * proto::chunk_record(cs)).max(1 << 20);
            if self.inbuf.len() < want {
                self.inbuf.resize(want, 0);
            }
            self.take_records(now);
        }
        if i.n_chunks == 0 {
            self.complete();
        }
        self.fill(now);
    }

    /// Requests in flight now: the buffer's window, and over UDP the
    /// congestion window.
    fn limit(&self) -> usize {
        match self.control {
            Control::Udp => self.window,
            Control::Tcp => (self.cwnd as usize).clamp(1, self.window),
        }
    }

    /// A loss (a request timed out): the congestion window halves, once a
    /// round trip.
    fn on_loss(&mut self, now: Instant) {
        let rtt = Duration::from_secs_f64(self.rto.timeout());
        if now.duration_since(self.last_cut) >= rtt {
            self.cwnd = (self.cwnd / 2.0).max(2.0);
            self.last_cut = now;
        }
    }

    /// Sends requests until the window is full, contiguous chunks as one
    /// range.
    fn fill(&mut self, now: Instant) {
        if self.info.is_none() || self.stalled {
            return;
        }
        let limit = self.limit();
        while self.flight.len() < limit && self.next < self.order.len() {
            let start = self.order[self.next];
            if self.have[start as usize] || self.flight.contains_key(&start) {
                self.next += 1;
                continue;
            }
            let room = limit - self.flight.len();
            let mut count = 0;
            while count < room
                && self.next < self.order.len()
                && self.order[self.next] == start + count as u32
                && !self.have[self.order[self.next] as usize]
            {
                self.flight.insert(start + count as u32, (now, 0));
                let t = now + retry_wait(self.rto.timeout(), 0);
                self.due_at = Some(self.due_at.map_or(t, |d| d.min(t)));
                count += 1;
                self.next += 1;
            }
            self.send_msg(Msg::Req {
                start,
                count: count as u32,
            });
        }
    }

    fn on_chunk(&mut self, rec: &[u8], now: Instant) {
        let Some(info) = self.info else { return };
        let cs = info.chunk_size as usize;
        let (id, bytes) = match proto::decode_chunk(rec, cs, info.n_chunks, info.file_size) {
            Ok(v) => v,
            Err(Bad(why)) => {
                eprintln!("psp_client: dropped a chunk: {why}");
                return;
            }
        };
        if let Some(r) = self.reasm.as_mut() {
            r.forget(id);
        }
        if let Some((sent, tries)) = self.flight.remove(&id) {
            let rtt = now.duration_since(sent);
            self.hist.add(rtt.as_secs_f64() * 1e6);
            // Karn: only first transmissions time the path.
            if tries == 0 {
                self.rto.sample(rtt.as_secs_f64());
            }
            // Additive increase: one more per window's worth that came.
            self.cwnd = (self.cwnd + 1.0 / self.cwnd.max(1.0)).min(self.window as f64);
        }
        if !self.have[id as usize] {
            let at = id as usize * cs;
            let stored = self
                .file
                .as_mut()
                .map_or(Ok(()), |f| f.store(at as u64, bytes));
            if let Err(e) = stored {
                eprintln!("psp_client: storing chunk {id}: {e}");
                self.exit = Some(1);
                return;
            }
            self.have[id as usize] = true;
            self.sums[id as usize] = proto::checksum(bytes);
            self.have_count += 1;
            self.received += 1;
            self.last_progress = now;
            if !self.have_sent && self.holds_blocks(&info) {
                self.have_sent = true;
                self.send_msg(Msg::Have);
            }
            if self.have_count == info.n_chunks {
                self.complete();
            }
            if let Some(k) = self.stall_after {
                if self.received >= k && !self.stalled {
                    self.stalled = true;
                    outln!("stalled");
                    cli::flush();
                }
            }
        }
    }

    fn holds_blocks(&self, i: &Info) -> bool {
        (i.block_start..i.block_end)
            .chain(i.replica_start..i.replica_end)
            .all(|id| self.have[id as usize])
    }

    /// Every chunk is here: check, write, report.
    fn complete(&mut self) {
        let Some(info) = self.info else { return };
        if self.done {
            return;
        }
        let hash = proto::file_checksum(&self.sums);
        if hash != info.file_hash {
            eprintln!("psp_client: the assembled file fails its checksum");
            self.exit = Some(1);
            return;
        }
        // The file stays open: other clients' asks are answered from it.
        let written = match self.file.as_mut() {
            Some(f) => f.commit(&self.out_path),
            None => std::fs::write(&self.out_path, b""),
        };
        if let Err(e) = written {
            eprintln!("psp_client: writing {}: {e}", self.out_path.display());
            self.exit = Some(1);
            return;
        }
        self.done = true;
        if !self.have_sent {
            self.have_sent = true;
            self.send_msg(Msg::Have);
        }
        self.send_msg(Msg::Done);
    }

    /// The size of the records on the TCP connection, once known: chunks
    /// (control over UDP, after the Info) or control messages.
    fn tcp_record(&self) -> Option<usize> {
        match self.control {
            Control::Udp => self
                .info
                .map(|i| proto::chunk_record(i.chunk_size as usize)),
            Control::Tcp => Some(CONTROL_SIZE),
        }
    }

    /// Reads the TCP connection until it would block (at most `budget`
    /// reads) straight into the input buffer and handles each whole record
    /// in place. `Ok(false)` at end of stream.
    fn read_tcp(&mut self, now: Instant, budget: usize) -> std::io::Result<Option<bool>> {
        for _ in 0..budget {
            if self.inlen == self.inbuf.len() {
                if self.tcp_record().is_some() {
                    // Can't happen: records are taken as they complete and
                    // the buffer holds several.
                    return Err(std::io::Error::other("input buffer full"));
                }
                // Before the Info only garbage could pile up: drop it.
                self.inlen = 0;
            }
            let n = match self.tcp.recv(&mut self.inbuf[self.inlen..]) {
                Ok(0) => return Ok(Some(false)),
                Ok(n) => n,
                Err(e) if e.is_would_block() => return Ok(Some(true)),
                Err(e) if e.raw_os_error() == errno::EINTR => continue,
                // Once every client is done the server exits, and a chunk
                // this client was still sending it (an answer to an ask
                // that no longer matters) makes its close a reset: after
                // our Done that is its goodbye, like a Bye or an EOF.
                Err(e) if self.done && e.raw_os_error() == errno::ECONNRESET => {
                    return Ok(Some(false))
                }
                Err(e) => return Err(e.into()),
            };
            self.inlen += n;
            self.take_records(now);
            if self.exit.is_some() {
                return Ok(Some(true));
            }
        }
        Ok(None)
    }

    /// Handles the whole records at the start of the input buffer.
    fn take_records(&mut self, now: Instant) {
        let Some(size) = self.tcp_record() else {
            return;
        };
        let buf = std::mem::take(&mut self.inbuf);
        let mut off = 0;
        while let Some(rec) = parse_record(&buf[off..self.inlen], size) {
            off += size;
            match self.control {
                Control::Udp => self.on_chunk(rec, now),
                Control::Tcp => match Msg::decode(rec) {
                    Ok(m) => self.on_msg(m, now),
                    Err(Bad(why)) => eprintln!("psp_client: dropped a record: {why}"),
                },
            }
        }
        // One request for the room this read made, not one per chunk.
        self.fill(now);
        self.inbuf = buf;
        self.inbuf.copy_within(off..self.inlen, 0);
        self.inlen -= off;
    }

    fn on_datagram(&mut self, d: &[u8], now: Instant) {
        match self.control {
            Control::Udp => match Msg::decode(d) {
                Ok(m) => self.on_msg(m, now),
                Err(Bad(why)) => eprintln!("psp_client: dropped a datagram: {why}"),
            },
            Control::Tcp if d.first() == Some(&proto::T_PIECE) => {
                let Some(r) = self.reasm.as_mut() else { return };
                match r.add(d) {
                    Ok(Some(rec)) => self.on_chunk(&rec, now),
                    Ok(None) => {}
                    Err(Bad(why)) => eprintln!("psp_client: dropped a piece: {why}"),
                }
            }
            Control::Tcp => {
                let Some(info) = self.info else { return };
                let size = proto::chunk_record(info.chunk_size as usize);
                if d.is_empty() || d.len() % size != 0 {
                    eprintln!("psp_client: dropped a datagram of {} bytes", d.len());
                    return;
                }
                for rec in d.chunks(size) {
                    self.on_chunk(rec, now);
                }
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        if self.info.is_none() {
            if now.duration_since(self.last_repeat) >= REPEAT_EVERY {
                self.last_repeat = now;
                self.send_msg(Msg::Reg {
                    pid: std::process::id(),
                });
            }
            return;
        }
        if self.done {
            // Over UDP the Done may be lost: say it again until the server
            // answers (Bye, or closing the connection).
            if self.control == Control::Udp && now.duration_since(self.last_repeat) >= REPEAT_EVERY
            {
                self.last_repeat = now;
                self.send_msg(Msg::Done);
            }
            return;
        }
        if self.stalled {
            return;
        }
        if self.due_at.is_some_and(|t| now < t) {
            return;
        }
        let base = self.rto.timeout();
        let mut due: Vec<u32> = self
            .flight
            .iter()
            .filter(|(_, &(sent, tries))| now.duration_since(sent) > retry_wait(base, tries))
            .map(|(&id, _)| id)
            .collect();
        due.sort_unstable();
        if !due.is_empty() {
            self.on_loss(now);
        }
        // A chunk of which some pieces came: only the rest, asked by name.
        if let Some(r) = self.reasm.as_ref() {
            let partial: Vec<(u32, [u8; 32])> = due
                .iter()
                .filter_map(|&id| r.missing(id).map(|w| (id, w)))
                .collect();
            for (id, want) in partial {
                if let Some(f) = self.flight.get_mut(&id) {
                    f.0 = now;
                    f.1 += 1;
                }
                self.send_msg(Msg::Pieces { id, want });
                due.retain(|&x| x != id);
            }
        }
        let mut i = 0;
        while i < due.len() {
            let start = due[i];
            let mut count = 1;
            while i + count < due.len() && due[i + count] == start + count as u32 {
                count += 1;
            }
            for id in start..start + count as u32 {
                if let Some(f) = self.flight.get_mut(&id) {
                    f.0 = now;
                    f.1 += 1;
                }
            }
            self.send_msg(Msg::Req {
                start,
                count: count as u32,
            });
            i += count;
        }
        // The next time one may be due (the timeout may shrink meanwhile:
        // then a retry is late by as much, never early).
        self.due_at = self
            .flight
            .values()
            .map(|&(sent, tries)| sent + retry_wait(base, tries))
            .min();
    }
}

/// How long a request sent `tries` times before waits for its answer: the
/// timeout, doubled per retry (up to 64 times), at most `Rto::MAX`.
fn retry_wait(base: f64, tries: u32) -> Duration {
    Duration::from_secs_f64((base * f64::from(1u32 << tries.min(6))).min(Rto::MAX))
}

/// The output while it is assembled: a temporary file in the output's
/// directory, written chunk by chunk at its offset (`pwrite`: no page is
/// zeroed first, as a mapping's would be); removed unless committed.
struct OutFile {
    tmp: PathBuf,
    file: std::fs::File,
    /// Gathered writes: `pending` belongs at offset `pending_at`.
    pending: Vec<u8>,
    pending_at: u64,
    committed: bool,
}

impl OutFile {
    fn create(out: &Path, size: usize) -> std::io::Result<Self> {
        let name = out
            .file_name()
            .ok_or_else(|| std::io::Error::other("the output path has no file name"))?;
        let tmp = out.with_file_name(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        if let Err(e) = file.set_len(size as u64) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(Self {
            tmp,
            file,
            pending: Vec::new(),
            pending_at: 0,
            committed: false,
        })
    }

    /// Stores `bytes` at offset `at`. Writes that continue the previous
    /// one are gathered (up to 1 MiB) into one `pwrite`: with small chunks
    /// that arrive in order, one system call per chunk would dominate.
    fn store(&mut self, at: u64, bytes: &[u8]) -> std::io::Result<()> {
        let next = self.pending_at + self.pending.len() as u64;
        if self.pending.is_empty() || at != next || self.pending.len() + bytes.len() > 1 << 20 {
            self.flush()?;
            self.pending_at = at;
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    /// Reads `buf.len()` bytes at `at`, from the gathered writes or the file.
    fn load(&self, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = self.pending_at;
        let end = start + self.pending.len() as u64;
        if at >= start && at + buf.len() as u64 <= end {
            let off = (at - start) as usize;
            buf.copy_from_slice(&self.pending[off..off + buf.len()]);
            return Ok(());
        }
        self.file.read_exact_at(buf, at)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all_at(&self.pending, self.pending_at)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Flushes the file to disk and renames it over `out`.
    fn commit(&mut self, out: &Path) -> std::io::Result<()> {
        self.flush()?;
        self.file.sync_all()?;
        std::fs::rename(&self.tmp, out)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The local address the kernel routes `server` from (a UDP `connect`
/// sends nothing): loopback for a server on loopback, this host's address
/// on its network otherwise.
fn local_ip_for(server: SocketAddr) -> std::io::Result<IpAddr> {
    let probe = Socket::new(Domain::IPV4, Type::DGRAM)?;
    probe.connect(server)?;
    probe
        .local_addr()?
        .as_inet()
        .map(|a| a.ip())
        .ok_or_else(|| std::io::Error::other("the route to the server has no IPv4 source"))
}

fn main() -> ExitCode {
    cli::keep_running_without_stdout();
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("psp_client: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("psp_client: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--junk N`: a peer that is no client. It connects (so the server
/// listens to its address) and sends `n` datagrams and `n` TCP records of
/// junk, some of them well-formed pieces and records of chunks nobody
/// asked for, some malformed; then it leaves. The server must drop all of
/// it and the clients must not notice.
fn junk(server: SocketAddr, n: u32) -> std::io::Result<u8> {
    let (udp, tcp, port) = pair::same_port_pair(local_ip_for(server)?)?;
    udp.connect(server)?;
    tcp.connect(server)?;
    let mut rng = Rng::new(u64::from(std::process::id()) << 16 | u64::from(port));
    let mut byte = || (rng.unit() * 256.0) as u8;
    for i in 0..n {
        let len = 1 + (i as usize * 97) % 1400;
        let mut d: Vec<u8> = (0..len).map(|_| byte()).collect();
        match i % 4 {
            // A piece header with its lengths right, of a chunk never asked.
            0 if len > proto::PIECE_HEADER => {
                d[0] = proto::T_PIECE;
                d[1..5].copy_from_slice(&(i % 8).to_be_bytes());
                d[5] = 0;
                d[6] = 2;
                let n = (len - proto::PIECE_HEADER) as u16;
                d[7..9].copy_from_slice(&n.to_be_bytes());
            }
            1 => d[0] = proto::T_CHUNK,
            _ => {}
        }
        let _ = udp.send(&d);
        let mut rec: Vec<u8> = (0..CONTROL_SIZE).map(|_| byte()).collect();
        // Every type but `Reg`: a peer that registers takes a client's
        // place, which no server can tell from a client joining.
        rec[0] = match (i % 12) as u8 {
            1 => 0,
            t => t,
        };
        let _ = tcp.send(&rec);
    }
    // A record cut in the middle, then gone.
    let _ = tcp.send(&[3u8; CONTROL_SIZE / 2]);
    Ok(0)
}

fn run(args: Args) -> std::io::Result<u8> {
    if let Some(n) = args.junk {
        return junk(args.server, n);
    }
    // One port number for both sockets: UDP first (any free port), then
    // TCP bound to the same number before it connects.
    let (udp, tcp, port) = pair::same_port_pair(local_ip_for(args.server)?)?;
    // Room for bursts of chunks: past the system's cap where this process
    // may, else as large as it allows.
    if udp.set_recv_buffer_size_force(4 << 20).is_err() {
        let _ = udp.set_recv_buffer_size(4 << 20);
    }
    udp.connect(args.server)?;
    udp.set_nonblocking(true)?;
    // Never fragment: what goes over UDP is cut to fit the path, whose MTU
    // the connected socket knows.
    let _ = udp.set_path_mtu_discovery(PathMtu::Do);
    // A burst from the server arrives as few receives (where the kernel
    // can; each datagram is taken apart again).
    if std::env::var_os("PSP_NO_GRO").is_none() {
        let _ = udp.set_udp_gro(true);
    }
    let payload = udp
        .path_mtu()
        .map_or(udp::ipv4_payload(1500), udp::ipv4_payload)
        .max(udp::ipv4_payload(576));
    tcp.connect(args.server)?;
    tcp.set_nonblocking(true)?;
    let _ = tcp.set_nodelay(true);
    let (tcp, udp) = (Rc::new(tcp), Rc::new(udp));

    let now = Instant::now();
    let client = Rc::new(RefCell::new(Client {
        control: args.control,
        server: args.server,
        tcp: Rc::clone(&tcp),
        udp: Rc::clone(&udp),
        out_q: WriteQueue::new(),
        inbuf: vec![0; 1 << 20],
        inlen: 0,
        info: None,
        file: None,
        have: Vec::new(),
        sums: Vec::new(),
        have_count: 0,
        order: Vec::new(),
        next: 0,
        flight: HashMap::new(),
        due_at: None,
        cwnd: 4.0,
        last_cut: now,
        window: 8,
        rto: Rto::default(),
        hist: Hist::default(),
        have_sent: false,
        done: false,
        exit: None,
        out_path: args.out,
        drop_udp: args.drop_udp,
        rng: Rng::new(u64::from(std::process::id()) << 16 | u64::from(port)),
        scratch: Vec::new(),
        stall_after: args.stall_after,
        received: 0,
        last_progress: now,
        stalled: false,
        last_repeat: now,
        payload,
        layout: None,
        reasm: None,
        // PSP_NO_GSO (tests, comparisons): one datagram per send.
        gso: udp::udp_gso_supported() && std::env::var_os("PSP_NO_GSO").is_none(),
    }));
    client.borrow_mut().send_msg(Msg::Reg {
        pid: std::process::id(),
    });

    let lp = EventLoop::new()?;
    let c = Rc::clone(&client);
    lp.register(
        tcp,
        Interest::READABLE | Interest::WRITABLE,
        move |cx, _: &Rc<Socket>, ready| {
            let mut cl = c.borrow_mut();
            if ready.is_writable() {
                cl.flush();
            }
            let now = cx.now();
            match cl.read_tcp(now, cx.budget())? {
                Some(true) => {
                    if cl.exit.is_some() {
                        cx.stop();
                    }
                    return Ok(());
                }
                Some(false) => {
                    if cl.exit.is_none() {
                        if cl.done {
                            cl.exit = Some(0);
                        } else {
                            eprintln!("psp_client: the server closed the connection");
                            cl.exit = Some(1);
                        }
                    }
                    cx.stop();
                    cx.deregister_current();
                    return Ok(());
                }
                None => {}
            }
            cx.reschedule();
            Ok(())
        },
    )?
    .detach();

    let c = Rc::clone(&client);
    // Datagrams are read a batch per call.
    let mut batch = RecvBatch::new(64, 65_536);
    let server = args.server;
    lp.register(udp, Interest::READABLE, move |cx, u: &Rc<Socket>, _| {
        let mut cl = c.borrow_mut();
        for _ in 0..cx.budget() {
            match u.recv_batch(&mut batch) {
                Ok(_) => {
                    let now = cx.now();
                    for d in batch.iter() {
                        // A connected UDP socket only receives from the
                        // server; checked again anyway.
                        if d.from == Some(server) && !d.truncated {
                            // Several, when the kernel joined them (GRO).
                            for g in d.segments() {
                                cl.on_datagram(g, now);
                            }
                        }
                        if cl.exit.is_some() {
                            cx.stop();
                            return Ok(());
                        }
                    }
                    // One request for the room this batch made.
                    cl.fill(now);
                }
                Err(e) if e.is_would_block() => return Ok(()),
                Err(e) if e.raw_os_error() == errno::EINTR => {}
                // The server's port refused a datagram (it is gone, or
                // not yet listening): the TCP side decides.
                Err(_) => {}
            }
        }
        cx.reschedule();
        Ok(())
    })?
    .detach();

    let c = Rc::clone(&client);
    lp.every(TICK, move |cx| {
        let mut cl = c.borrow_mut();
        let now = cx.now();
        cl.on_tick(now);
        if cl.exit.is_some() {
            cx.stop();
        }
    });
    let c = Rc::clone(&client);
    lp.every(Duration::from_secs(1), move |cx| {
        let cl = c.borrow();
        if !cl.done && cx.now().duration_since(cl.last_progress) > GIVE_UP {
            eprintln!("psp_client: no progress for {GIVE_UP:?}; giving up");
            cx.stop();
        }
    });
    lp.run()?;
    let cl = client.borrow();
    outln!("rtt {}", cl.hist.to_line());
    cli::flush();
    Ok(cl.exit.unwrap_or(1))
}
