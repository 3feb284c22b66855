//! The peer-server-peer wire format, shared by `psp_server`, `psp_client`
//! and `client_manager`. Every message is encoded and decoded field by
//! field (big-endian, no struct transmutes) and every field is checked on
//! the way in; a message that fails a check is dropped by the caller.
//!
//! Two kinds of message travel on two layers:
//! - control messages (`Reg`, `Info`, `Req`, `Ask`, `Have`, `Done`, `Bye`,
//!   `Lost`), padded
//!   to [`CONTROL_SIZE`] bytes so a TCP stream of them is a stream of
//!   fixed-size records;
//! - chunks: `[7, id u32, len u32, data; chunk_size]`, also fixed-size (the
//!   last chunk of a file is padded; `len` says how much is data).
//!
//! In `--control udp` mode control messages are UDP datagrams and chunks
//! go over TCP; in `--control tcp` mode it is the other way round.
//!
//! Over UDP no datagram is larger than the path allows ([`Layout`]): chunk
//! records that fit are packed whole, several to a datagram; a record that
//! does not fit travels as pieces `[11, id u32, index u8, count u8, len
//! u16, bytes]`, each checked on arrival and put back together by a
//! [`Reassembly`] (which then checks the record as a whole); a receiver
//! that misses some asks for just those (`Pieces`).

#![allow(dead_code)]

use std::fmt;

/// Every control message occupies this many bytes.
pub const CONTROL_SIZE: usize = 48;
/// A chunk record's header: type, id, length.
pub const CHUNK_HEADER: usize = 9;
/// The largest chunk: a chunk with its header must fit one UDP datagram
/// on loopback (65,507 bytes of payload over IPv4).
pub const MAX_CHUNK: usize = 65_000;
/// The most bytes of chunk records packed into one datagram (several
/// records when chunks are small; one 65,000-byte chunk fits).
pub const MAX_DATAGRAM: usize = MAX_CHUNK + CHUNK_HEADER;
/// The server's cache by default: this many bytes' worth of chunks.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;
/// The seed's chunk size.
pub const DEFAULT_CHUNK: usize = 1024;

const T_REG: u8 = 1;
const T_INFO: u8 = 2;
const T_REQ: u8 = 3;
const T_ASK: u8 = 4;
const T_DONE: u8 = 5;
const T_BYE: u8 = 6;
/// The type byte of a chunk record.
pub const T_CHUNK: u8 = 7;
const T_LOST: u8 = 8;
const T_HAVE: u8 = 9;
const T_PIECES: u8 = 10;
/// The type byte of a piece of a chunk record.
pub const T_PIECE: u8 = 11;
/// A piece's header: type, chunk id, index, count, length.
pub const PIECE_HEADER: usize = 9;
/// The most pieces one chunk record is cut into.
pub const MAX_PIECES: usize = 255;

/// Which layer carries control messages (the other carries chunks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Control over UDP, chunks over TCP.
    Udp,
    /// Control over TCP, chunks over UDP.
    Tcp,
}

impl std::str::FromStr for Control {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            _ => Err(format!("--control takes udp or tcp, not {s:?}")),
        }
    }
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        })
    }
}

/// What the server tells a registered client about the file and its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    pub client: u32,
    pub n_chunks: u32,
    pub chunk_size: u32,
    pub file_size: u64,
    pub file_hash: u64,
    /// The client's block: chunks `block_start..block_end`.
    pub block_start: u32,
    pub block_end: u32,
    /// The replica the client also holds: `replica_start..replica_end`.
    pub replica_start: u32,
    pub replica_end: u32,
}

/// A control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Client -> server: register (`pid` for logs only).
    Reg { pid: u32 },
    /// Server -> client: the file and the client's block.
    Info(Info),
    /// Client -> server: send me chunks `start..start + count`.
    Req { start: u32, count: u32 },
    /// Server -> client: send me your copies of `start..start + count`.
    Ask { start: u32, count: u32 },
    /// Client -> server: I hold my block and my replica.
    Have,
    /// Client -> server: I have the whole file, verified.
    Done,
    /// Server -> client: every client is done; exit.
    Bye,
    /// Server -> client: chunk `id` is gone (its only holder left and it
    /// was not cached): the file can't be completed.
    Lost { id: u32 },
    /// Client -> server: of chunk `id`, send me again the pieces whose bits
    /// are set in `want` (bit `i` of byte `i / 8`); the others came.
    Pieces { id: u32, want: [u8; 32] },
}

/// Why a message was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bad(pub String);

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl Msg {
    /// Encodes into a fixed-size record.
    pub fn encode(&self) -> [u8; CONTROL_SIZE] {
        let mut b = [0u8; CONTROL_SIZE];
        let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        match *self {
            Msg::Reg { pid } => {
                put(0, &[T_REG]);
                put(1, &pid.to_be_bytes());
            }
            Msg::Info(i) => {
                put(0, &[T_INFO]);
                put(1, &i.client.to_be_bytes());
                put(5, &i.n_chunks.to_be_bytes());
                put(9, &i.chunk_size.to_be_bytes());
                put(13, &i.file_size.to_be_bytes());
                put(21, &i.file_hash.to_be_bytes());
                put(29, &i.block_start.to_be_bytes());
                put(33, &i.block_end.to_be_bytes());
                put(37, &i.replica_start.to_be_bytes());
                put(41, &i.replica_end.to_be_bytes());
            }
            Msg::Req { start, count } => {
                put(0, &[T_REQ]);
                put(1, &start.to_be_bytes());
                put(5, &count.to_be_bytes());
            }
            Msg::Ask { start, count } => {
                put(0, &[T_ASK]);
                put(1, &start.to_be_bytes());
                put(5, &count.to_be_bytes());
            }
            Msg::Have => put(0, &[T_HAVE]),
            Msg::Done => put(0, &[T_DONE]),
            Msg::Bye => put(0, &[T_BYE]),
            Msg::Lost { id } => {
                put(0, &[T_LOST]);
                put(1, &id.to_be_bytes());
            }
            Msg::Pieces { id, want } => {
                put(0, &[T_PIECES]);
                put(1, &id.to_be_bytes());
                put(5, &want);
            }
        }
        b
    }

    /// Decodes one record, checking its length and type and that its
    /// fields are self-consistent; ranges against the file are checked by
    /// the receiver, which knows the file.
    pub fn decode(b: &[u8]) -> Result<Msg, Bad> {
        if b.len() != CONTROL_SIZE {
            return Err(Bad(format!(
                "control message of {} bytes, expected {CONTROL_SIZE}",
                b.len()
            )));
        }
        let m = match b[0] {
            T_REG => Msg::Reg { pid: u32_at(b, 1) },
            T_INFO => {
                let i = Info {
                    client: u32_at(b, 1),
                    n_chunks: u32_at(b, 5),
                    chunk_size: u32_at(b, 9),
                    file_size: u64_at(b, 13),
                    file_hash: u64_at(b, 21),
                    block_start: u32_at(b, 29),
                    block_end: u32_at(b, 33),
                    replica_start: u32_at(b, 37),
                    replica_end: u32_at(b, 41),
                };
                let cs = i.chunk_size as u64;
                if cs == 0 || cs > MAX_CHUNK as u64 {
                    return Err(Bad(format!("chunk size {cs} out of range")));
                }
                if i.file_size.div_ceil(cs) != u64::from(i.n_chunks) {
                    return Err(Bad(format!(
                        "{} chunks of {cs} bytes don't make {} bytes",
                        i.n_chunks, i.file_size
                    )));
                }
                for (a, z) in [
                    (i.block_start, i.block_end),
                    (i.replica_start, i.replica_end),
                ] {
                    if a > z || z > i.n_chunks {
                        return Err(Bad(format!("block {a}..{z} outside {} chunks", i.n_chunks)));
                    }
                }
                Msg::Info(i)
            }
            T_REQ | T_ASK => {
                let (start, count) = (u32_at(b, 1), u32_at(b, 5));
                if count == 0 || start.checked_add(count).is_none() {
                    return Err(Bad(format!("bad range {start}+{count}")));
                }
                if b[0] == T_REQ {
                    Msg::Req { start, count }
                } else {
                    Msg::Ask { start, count }
                }
            }
            T_HAVE => Msg::Have,
            T_DONE => Msg::Done,
            T_BYE => Msg::Bye,
            T_LOST => Msg::Lost { id: u32_at(b, 1) },
            T_PIECES => {
                let mut want = [0u8; 32];
                want.copy_from_slice(&b[5..37]);
                // Bit 255 would be a 256th piece.
                if want == [0u8; 32] || want[31] & 0x80 != 0 {
                    return Err(Bad("a piece request for no piece or piece 255".into()));
                }
                Msg::Pieces {
                    id: u32_at(b, 1),
                    want,
                }
            }
            t => return Err(Bad(format!("unknown message type {t}"))),
        };
        Ok(m)
    }
}

/// The record size of a chunk on the wire for `chunk_size`.
pub fn chunk_record(chunk_size: usize) -> usize {
    CHUNK_HEADER + chunk_size
}

/// Encodes chunk `id` (`data` at most `chunk_size` bytes) as a record of
/// [`chunk_record`] bytes appended to `out`.
pub fn encode_chunk(id: u32, data: &[u8], chunk_size: usize, out: &mut Vec<u8>) {
    debug_assert!(data.len() <= chunk_size);
    out.push(T_CHUNK);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + (chunk_size - data.len()), 0);
}

/// Decodes a chunk record of a file of `n_chunks` chunks of `chunk_size`
/// bytes and `file_size` bytes: the id must be in range and the length
/// exactly that chunk's length.
pub fn decode_chunk(
    b: &[u8],
    chunk_size: usize,
    n_chunks: u32,
    file_size: u64,
) -> Result<(u32, &[u8]), Bad> {
    if b.len() != chunk_record(chunk_size) {
        return Err(Bad(format!(
            "chunk record of {} bytes, expected {}",
            b.len(),
            chunk_record(chunk_size)
        )));
    }
    if b[0] != T_CHUNK {
        return Err(Bad(format!("type {} where a chunk was expected", b[0])));
    }
    let id = u32_at(b, 1);
    let len = u32_at(b, 5) as usize;
    if id >= n_chunks {
        return Err(Bad(format!("chunk id {id} out of range (0..{n_chunks})")));
    }
    let want = chunk_len(id, chunk_size, file_size);
    if len != want {
        return Err(Bad(format!("chunk {id} says {len} bytes, expected {want}")));
    }
    Ok((id, &b[CHUNK_HEADER..CHUNK_HEADER + len]))
}

/// How chunk records of `rec` bytes travel in datagrams of at most
/// `payload` bytes: whole and packed, or in pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// A chunk record's size.
    pub rec: usize,
    /// The most bytes of one datagram.
    pub payload: usize,
    /// Pieces per record: 1 when records travel whole.
    pub count: usize,
}

impl Layout {
    /// The layout for records of `rec` bytes in datagrams of `payload`
    /// bytes; `None` when a record would need more than [`MAX_PIECES`]
    /// pieces (the path is too small for the chunk size).
    pub fn new(rec: usize, payload: usize) -> Option<Layout> {
        if rec == 0 {
            return None;
        }
        if rec <= payload {
            return Some(Layout {
                rec,
                payload,
                count: 1,
            });
        }
        let room = payload.checked_sub(PIECE_HEADER).filter(|&r| r > 0)?;
        let count = rec.div_ceil(room);
        (count <= MAX_PIECES).then_some(Layout {
            rec,
            payload,
            count,
        })
    }

    /// Bytes of the record in each piece but (perhaps) the last.
    pub fn piece_size(&self) -> usize {
        self.rec.div_ceil(self.count)
    }

    /// Piece `i`'s span of the record.
    pub fn piece(&self, i: usize) -> std::ops::Range<usize> {
        let s = self.piece_size();
        (i * s).min(self.rec)..((i + 1) * s).min(self.rec)
    }

    /// The datagrams that carry `records` (whole records, back to back),
    /// given one at a time to `out`; of a record in pieces, only those
    /// whose bit is set in `want` (all when `None`).
    pub fn datagrams(&self, records: &[u8], want: Option<&[u8; 32]>, mut out: impl FnMut(&[u8])) {
        if self.count == 1 {
            let per = (self.payload / self.rec).max(1) * self.rec;
            for d in records.chunks(per) {
                out(d);
            }
            return;
        }
        let mut buf = Vec::with_capacity(PIECE_HEADER + self.piece_size());
        for rec in records.chunks_exact(self.rec) {
            for i in 0..self.count {
                if want.is_some_and(|w| w[i / 8] & (1 << (i % 8)) == 0) {
                    continue;
                }
                let span = self.piece(i);
                buf.clear();
                buf.push(T_PIECE);
                buf.extend_from_slice(&rec[1..5]);
                buf.push(i as u8);
                buf.push(self.count as u8);
                buf.extend_from_slice(&(span.len() as u16).to_be_bytes());
                buf.extend_from_slice(&rec[span]);
                out(&buf);
            }
        }
    }
}

/// The most bytes one GSO send carries (the IP packet limit, less headers).
pub const GSO_BYTES: usize = 65_000;
/// The most segments one GSO send carries (Linux's `UDP_MAX_SEGMENTS`).
pub const GSO_SEGMENTS: usize = 64;

/// Cuts a run of datagrams of `sizes` (in order) into groups that one UDP
/// GSO send can carry: equal sizes, of which only the last may be
/// shorter, at most [`GSO_SEGMENTS`] and [`GSO_BYTES`] in all. A group of
/// one goes as a plain datagram.
pub fn gso_groups(sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < sizes.len() {
        let seg = sizes[start];
        let mut end = start + 1;
        let mut bytes = seg;
        while end < sizes.len()
            && end - start < GSO_SEGMENTS
            && sizes[end] <= seg
            && bytes + sizes[end] <= GSO_BYTES
        {
            bytes += sizes[end];
            end += 1;
            if sizes[end - 1] < seg {
                // A shorter one ends the group.
                break;
            }
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// One chunk record being put back together.
struct Partial {
    buf: Vec<u8>,
    have: [u8; 32],
    count: usize,
    got: usize,
    /// When it was last added to (the oldest goes first when full).
    touched: u64,
}

/// Chunk records arriving in pieces, put back together; see the module
/// docs. Holds at most `limit` records at once (the oldest is dropped for a
/// new one: its pieces are asked for again).
pub struct Reassembly {
    rec: usize,
    n_chunks: u32,
    limit: usize,
    parts: std::collections::HashMap<u32, Partial>,
    clock: u64,
}

impl Reassembly {
    /// For records of `rec` bytes of a file of `n_chunks` chunks, at most
    /// `limit` (at least 1) under way at once.
    pub fn new(rec: usize, n_chunks: u32, limit: usize) -> Self {
        Self {
            rec,
            n_chunks,
            limit: limit.max(1),
            parts: std::collections::HashMap::new(),
            clock: 0,
        }
    }

    /// Adds one piece datagram; a whole record once its last piece came.
    /// Every field is checked: the type, the id against the file, the
    /// index against the count, the count against the record size, and
    /// the length against where the piece goes. A piece that came before
    /// is ignored.
    pub fn add(&mut self, d: &[u8]) -> Result<Option<Vec<u8>>, Bad> {
        if d.len() < PIECE_HEADER || d[0] != T_PIECE {
            return Err(Bad(format!("a piece datagram of {} bytes", d.len())));
        }
        let id = u32_at(d, 1);
        let (index, count) = (usize::from(d[5]), usize::from(d[6]));
        let len = usize::from(u16::from_be_bytes([d[7], d[8]]));
        if id >= self.n_chunks {
            return Err(Bad(format!(
                "piece of chunk {id} out of range (0..{})",
                self.n_chunks
            )));
        }
        if count < 2 || index >= count || self.rec.div_ceil(count) * (count - 1) >= self.rec {
            return Err(Bad(format!(
                "piece {index} of {count} of a {}-byte record",
                self.rec
            )));
        }
        let layout = Layout {
            rec: self.rec,
            payload: 0,
            count,
        };
        let span = layout.piece(index);
        if len != span.len() || d.len() != PIECE_HEADER + len {
            return Err(Bad(format!(
                "piece {index} of {count} of chunk {id} says {len} bytes in {}, expected {}",
                d.len() - PIECE_HEADER,
                span.len()
            )));
        }
        self.clock += 1;
        if !self.parts.contains_key(&id) && self.parts.len() >= self.limit {
            if let Some(&old) = self
                .parts
                .iter()
                .min_by_key(|(_, p)| p.touched)
                .map(|(k, _)| k)
            {
                self.parts.remove(&old);
            }
        }
        let clock = self.clock;
        let rec = self.rec;
        let p = self.parts.entry(id).or_insert_with(|| Partial {
            buf: vec![0; rec],
            have: [0; 32],
            count,
            got: 0,
            touched: clock,
        });
        if p.count != count {
            // Cut another way (a sender whose path changed): start again.
            *p = Partial {
                buf: vec![0; rec],
                have: [0; 32],
                count,
                got: 0,
                touched: clock,
            };
        }
        p.touched = clock;
        let bit = 1u8 << (index % 8);
        if p.have[index / 8] & bit != 0 {
            return Ok(None);
        }
        p.have[index / 8] |= bit;
        p.got += 1;
        p.buf[span].copy_from_slice(&d[PIECE_HEADER..]);
        if p.got < p.count {
            return Ok(None);
        }
        Ok(self.parts.remove(&id).map(|p| p.buf))
    }

    /// The pieces of chunk `id` still missing, as a [`Msg::Pieces`] mask,
    /// if some of it came.
    pub fn missing(&self, id: u32) -> Option<[u8; 32]> {
        let p = self.parts.get(&id)?;
        let mut want = [0u8; 32];
        for i in 0..p.count {
            if p.have[i / 8] & (1 << (i % 8)) == 0 {
                want[i / 8] |= 1 << (i % 8);
            }
        }
        Some(want)
    }

    /// Forgets chunk `id` (it came whole another way).
    pub fn forget(&mut self, id: u32) {
        self.parts.remove(&id);
    }

    /// Records under way.
    pub fn len(&self) -> usize {
        self.parts.len()
    }
}

/// The length of chunk `id`.
pub fn chunk_len(id: u32, chunk_size: usize, file_size: u64) -> usize {
    let start = u64::from(id) * chunk_size as u64;
    (file_size.saturating_sub(start)).min(chunk_size as u64) as usize
}

/// The checksum of a chunk or a file (xxh3, 64 bits: it catches corruption,
/// not a forger).
pub fn checksum(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// The whole file's checksum: the checksum of its chunks' checksums (each
/// 8 bytes, little-endian, in chunk order). A client computes it from the
/// chunks as they arrive, without reading the file back.
pub fn file_checksum(chunk_sums: &[u64]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for s in chunk_sums {
        h.update(&s.to_le_bytes());
    }
    h.digest()
}

/// Splits `n` chunks into `k` contiguous blocks whose sizes differ by at
/// most one; block `i` is `blocks(n, k)[i]`.
pub fn blocks(n: u32, k: u32) -> Vec<(u32, u32)> {
    let k = k.max(1);
    let (base, extra) = (n / k, n % k);
    let mut out = Vec::with_capacity(k as usize);
    let mut at = 0;
    for i in 0..k {
        let len = base + u32::from(i < extra);
        out.push((at, at + len));
        at += len;
    }
    out
}

/// Adaptive retransmission timeout after RFC 6298: a smoothed round trip
/// and its variation, `rto = srtt + 4 * rttvar`, clamped.
#[derive(Clone, Copy, Debug)]
pub struct Rto {
    srtt: f64,
    rttvar: f64,
    seeded: bool,
}

impl Default for Rto {
    fn default() -> Self {
        Self {
            srtt: 0.05,
            rttvar: 0.025,
            seeded: false,
        }
    }
}

impl Rto {
    pub const MIN: f64 = 0.005;
    pub const MAX: f64 = 1.0;

    /// Adds one measured round trip, in seconds.
    pub fn sample(&mut self, rtt: f64) {
        if !self.seeded {
            self.srtt = rtt;
            self.rttvar = rtt / 2.0;
            self.seeded = true;
        } else {
            self.rttvar = 0.75 * self.rttvar + 0.25 * (self.srtt - rtt).abs();
            self.srtt = 0.875 * self.srtt + 0.125 * rtt;
        }
    }

    /// The current timeout, in seconds.
    pub fn timeout(&self) -> f64 {
        (self.srtt + 4.0 * self.rttvar).clamp(Self::MIN, Self::MAX)
    }
}

/// Round trips in logarithmic buckets (8 per doubling, from 1 us), so
/// clients can report a distribution in one line and the manager can merge
/// them.
#[derive(Clone, Debug)]
pub struct Hist {
    pub buckets: Vec<u64>,
    pub sum_us: f64,
    pub count: u64,
}

const HIST_BUCKETS: usize = 8 * 24;

impl Default for Hist {
    fn default() -> Self {
        Self {
            buckets: vec![0; HIST_BUCKETS],
            sum_us: 0.0,
            count: 0,
        }
    }
}

impl Hist {
    pub fn add(&mut self, us: f64) {
        let b = if us <= 1.0 {
            0
        } else {
            ((us.log2() * 8.0) as usize).min(HIST_BUCKETS - 1)
        };
        self.buckets[b] += 1;
        self.sum_us += us;
        self.count += 1;
    }

    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.sum_us += o.sum_us;
        self.count += o.count;
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_us / self.count as f64
        }
    }

    /// The upper edge of the bucket holding quantile `q`, in microseconds.
    pub fn quantile(&self, q: f64) -> f64 {
        let want = (self.count as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want.max(1) {
                return 2f64.powf((i + 1) as f64 / 8.0);
            }
        }
        0.0
    }

    /// `sum count b0,b1,...` with trailing empty buckets left off.
    pub fn to_line(&self) -> String {
        let last = self
            .buckets
            .iter()
            .rposition(|&n| n > 0)
            .map_or(0, |i| i + 1);
        let b: Vec<String> = self.buckets[..last].iter().map(u64::to_string).collect();
        format!("{:.0} {} {}", self.sum_us, self.count, b.join(","))
    }

    pub fn from_line(s: &str) -> Option<Hist> {
        let mut it = s.split_whitespace();
        let sum_us = it.next()?.parse().ok()?;
        let count = it.next()?.parse().ok()?;
        let mut h = Hist {
            sum_us,
            count,
            ..Hist::default()
        };
        if let Some(list) = it.next() {
            for (i, v) in list.split(',').enumerate() {
                *h.buckets.get_mut(i)? = v.parse().ok()?;
            }
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused() {
        let info = Info {
            client: 3,
            n_chunks: 10,
            chunk_size: 1024,
            file_size: 9 * 1024 + 1,
            file_hash: 77,
            block_start: 2,
            block_end: 4,
            replica_start: 4,
            replica_end: 6,
        };
        for m in [
            Msg::Reg { pid: 9 },
            Msg::Info(info),
            Msg::Req { start: 1, count: 2 },
            Msg::Ask { start: 5, count: 1 },
            Msg::Have,
            Msg::Done,
            Msg::Bye,
            Msg::Lost { id: 4 },
            Msg::Pieces {
                id: 8,
                want: {
                    let mut w = [0u8; 32];
                    w[0] = 0b101;
                    w[30] = 0xff;
                    w
                },
            },
        ] {
            assert_eq!(Msg::decode(&m.encode()), Ok(m));
        }
        // A piece request for nothing, or for a 256th piece, is refused.
        for want in [[0u8; 32], {
            let mut w = [0u8; 32];
            w[31] = 0x80;
            w
        }] {
            assert!(Msg::decode(&Msg::Pieces { id: 1, want }.encode()).is_err());
        }
        assert!(Msg::decode(&[T_REQ; CONTROL_SIZE - 1]).is_err());
        let mut b = Msg::Req { start: 1, count: 0 }.encode();
        assert!(Msg::decode(&b).is_err());
        b[0] = 99;
        assert!(Msg::decode(&b).is_err());
        let bad = Info {
            n_chunks: 11,
            ..info
        };
        assert!(Msg::decode(&Msg::Info(bad).encode()).is_err());
    }

    #[test]
    fn chunks_check_id_and_length() {
        let mut out = Vec::new();
        encode_chunk(9, b"x", 4, &mut out);
        assert_eq!(decode_chunk(&out, 4, 10, 37), Ok((9, &b"x"[..])));
        assert!(decode_chunk(&out, 4, 9, 37).is_err(), "id out of range");
        assert!(decode_chunk(&out, 4, 10, 40).is_err(), "wrong length");
        assert!(decode_chunk(&out[..5], 4, 10, 37).is_err());
    }

    #[test]
    fn blocks_differ_by_at_most_one() {
        let b = blocks(10, 3);
        assert_eq!(b, vec![(0, 4), (4, 7), (7, 10)]);
        assert_eq!(blocks(2, 4), vec![(0, 1), (1, 2), (2, 2), (2, 2)]);
    }

    fn record(id: u32, cs: usize, len: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..len).map(|i| (i as u32 * 7 + id) as u8).collect();
        let mut out = Vec::new();
        encode_chunk(id, &data, cs, &mut out);
        out
    }

    #[test]
    fn a_layout_packs_records_that_fit_and_cuts_those_that_do_not() {
        let l = Layout::new(1033, 1472).expect("fits");
        assert_eq!(l.count, 1);
        let recs: Vec<u8> = (0..5).flat_map(|i| record(i, 1024, 1024)).collect();
        let mut sizes = Vec::new();
        l.datagrams(&recs, None, |d| sizes.push(d.len()));
        // One whole record per 1472-byte datagram.
        assert_eq!(sizes, vec![1033; 5]);
        let l = Layout::new(1033, 65_507).expect("fits");
        let mut sizes = Vec::new();
        l.datagrams(&recs, None, |d| sizes.push(d.len()));
        assert_eq!(sizes, vec![5 * 1033]);

        let rec = chunk_record(64_000);
        let l = Layout::new(rec, 1472).expect("pieces");
        assert_eq!(l.count, rec.div_ceil(1472 - PIECE_HEADER));
        assert!(l.piece_size() + PIECE_HEADER <= 1472);
        let covered: usize = (0..l.count).map(|i| l.piece(i).len()).sum();
        assert_eq!(covered, rec);
        assert_eq!(l.piece(l.count - 1).end, rec);
        let r = record(3, 64_000, 64_000);
        let mut n = 0;
        l.datagrams(&r, None, |d| {
            assert!(d.len() <= 1472 && d[0] == T_PIECE && d[5] as usize == n);
            n += 1;
        });
        assert_eq!(n, l.count);
        let mut want = [0u8; 32];
        want[0] = 0b10;
        want[5] = 0b1;
        let mut idx = Vec::new();
        l.datagrams(&r, Some(&want), |d| idx.push(d[5]));
        assert_eq!(idx, vec![1, 40]);
        // Too small a path for the chunk, or for a piece header at all.
        assert!(Layout::new(chunk_record(65_000), 200).is_none());
        assert!(Layout::new(100, PIECE_HEADER).is_none());
        assert!(Layout::new(0, 1472).is_none());
        assert!(Layout::new(rec, rec).is_some_and(|l| l.count == 1));
        // Exactly the most pieces, and one more.
        let room = 100 - PIECE_HEADER;
        assert!(Layout::new(room * MAX_PIECES, 100).is_some_and(|l| l.count == MAX_PIECES));
        assert!(Layout::new(room * MAX_PIECES + 1, 100).is_none());
        assert!(Layout::new(rec, rec - 1).is_some_and(|l| l.count == 2));
    }

    fn pieces_of(rec: &[u8], payload: usize) -> Vec<Vec<u8>> {
        let l = Layout::new(rec.len(), payload).expect("layout");
        let mut out = Vec::new();
        l.datagrams(rec, None, |d| out.push(d.to_vec()));
        out
    }

    #[test]
    fn pieces_in_any_order_and_twice_make_the_record_once() {
        let rec = record(6, 5000, 4321);
        let mut ps = pieces_of(&rec, 1000);
        assert_eq!(ps.len(), 6);
        ps.reverse();
        ps.insert(2, ps[0].clone());
        let mut r = Reassembly::new(rec.len(), 10, 4);
        let mut whole = None;
        for (k, p) in ps.iter().enumerate() {
            match r.add(p).expect("a good piece") {
                Some(w) => {
                    assert!(whole.is_none() && k == ps.len() - 1);
                    whole = Some(w);
                }
                None => {
                    if k == 3 {
                        // Three distinct pieces of six came (one twice).
                        let m = r.missing(6).expect("partial");
                        assert_eq!(m[0].count_ones(), 3);
                        assert_eq!(m[0] & !0b11_1111, 0);
                    }
                }
            }
        }
        assert_eq!(whole.expect("complete"), rec);
        assert_eq!(r.len(), 0);
        assert!(r.missing(6).is_none());
        assert_eq!(
            decode_chunk(&rec, 5000, 10, 6 * 5000 + 4321).map(|(id, _)| id),
            Ok(6)
        );
    }

    #[test]
    fn every_field_of_a_piece_is_checked() {
        let rec = record(2, 5000, 5000);
        let good = pieces_of(&rec, 1000)[1].clone();
        let mut r = Reassembly::new(rec.len(), 3, 4);
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = good.clone();
            f(&mut p);
            p
        };
        for (what, p) in [
            ("short", good[..PIECE_HEADER - 1].to_vec()),
            ("type", bad(&|p| p[0] = T_CHUNK)),
            ("id", bad(&|p| p[1..5].copy_from_slice(&3u32.to_be_bytes()))),
            ("index", bad(&|p| p[5] = p[6])),
            // One past the last, empty: it would count as a piece.
            ("empty index past the end", {
                let mut p = good[..PIECE_HEADER].to_vec();
                p[5] = p[6];
                p[7..9].copy_from_slice(&0u16.to_be_bytes());
                p
            }),
            ("count 1", bad(&|p| p[6] = 1)),
            ("count 0", bad(&|p| p[6] = 0)),
            ("empty last piece", bad(&|p| p[6] = 255)),
            (
                "length",
                bad(&|p| p[7..9].copy_from_slice(&1u16.to_be_bytes())),
            ),
            ("trailing", bad(&|p| p.push(0))),
            (
                "cut",
                bad(&|p| {
                    p.pop();
                }),
            ),
        ] {
            assert!(r.add(&p).is_err(), "{what}");
        }
        assert_eq!(r.len(), 0);
        assert_eq!(r.add(&good), Ok(None));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_full_reassembly_drops_its_oldest_record() {
        let recs: Vec<Vec<u8>> = (0..3).map(|i| record(i, 3000, 3000)).collect();
        let mut r = Reassembly::new(recs[0].len(), 3, 2);
        for rec in &recs {
            r.add(&pieces_of(rec, 1000)[0]).expect("piece");
        }
        assert_eq!(r.len(), 2);
        assert!(r.missing(0).is_none(), "the oldest went");
        assert!(r.missing(1).is_some() && r.missing(2).is_some());
        // Pieces cut another way start the record again.
        let other = pieces_of(&recs[1], 2000);
        assert_eq!(r.add(&other[0]), Ok(None));
        let m = r.missing(1).expect("partial");
        assert_eq!(m[0], 0b10);
        r.forget(1);
        assert!(r.missing(1).is_none());
    }

    #[test]
    fn gso_groups_hold_equal_sizes_with_a_shorter_last_and_respect_the_limits() {
        assert_eq!(gso_groups(&[]), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(gso_groups(&[5]), vec![0..1]);
        assert_eq!(gso_groups(&[5, 5, 5, 3, 5, 5]), vec![0..4, 4..6]);
        assert_eq!(gso_groups(&[5, 6, 6]), vec![0..1, 1..3]);
        let many = vec![10; 130];
        assert_eq!(gso_groups(&many), vec![0..64, 64..128, 128..130]);
        let big = vec![1463 + PIECE_HEADER; 60];
        let g = gso_groups(&big);
        assert!(g
            .iter()
            .all(|r| r.len() * (1463 + PIECE_HEADER) <= GSO_BYTES));
        assert_eq!(g.iter().map(|r| r.len()).sum::<usize>(), 60);
        assert_eq!(g[0].len(), GSO_BYTES / (1463 + PIECE_HEADER));
    }
}
