//! One connected client: its connection, what it was asked and sent,
//! and the blocks it holds.

use std::net::SocketAddr;
use std::rc::Rc;

use procwire::net::buffer::WriteQueue;
use procwire::net::frame::Decoder;
use procwire::sys::socket::{Domain, Socket, Type};
use procwire::sys::udp;

use super::proto::Reassembly;

/// A connected client.
pub(crate) struct Client {
    pub(crate) addr: SocketAddr,
    pub(crate) tcp: Rc<Socket>,
    pub(crate) out: WriteQueue,
    pub(crate) decoder: Decoder,
    pub(crate) pid: u32,
    pub(crate) registered: bool,
    pub(crate) has_blocks: bool,
    pub(crate) done: bool,
    pub(crate) gone: bool,
    /// Bit per chunk: asked of this client at some point.
    pub(crate) asked_ever: Vec<u64>,
    /// Bit per chunk: sent to it over TCP (so it will arrive).
    pub(crate) sent: Vec<u64>,
    /// Its own block and the replica block it also holds.
    pub(crate) block: (u32, u32),
    pub(crate) replica: (u32, u32),
    /// The most bytes of one datagram to it (its path MTU less the IP and
    /// UDP headers).
    pub(crate) payload: usize,
    /// Chunk records it sends in pieces, being put back together.
    pub(crate) reasm: Option<Reassembly>,
    /// Its TCP output waits in `out` for the end of the turn (it is in
    /// `Server::corked`).
    pub(crate) corked: bool,
}

/// The most bytes of one UDP datagram to `to` without fragments: the path
/// MTU the kernel knows (a connected socket that sends nothing), less the
/// IPv4 and UDP headers; the Internet's 1500-byte MTU when it can't tell.
pub(crate) fn path_payload(to: SocketAddr) -> usize {
    let probe = || -> procwire::sys::Result<u32> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM)?;
        s.connect(to)?;
        s.path_mtu()
    };
    udp::ipv4_payload(probe().unwrap_or(1500)).max(udp::ipv4_payload(576))
}

pub(crate) fn set_bit(bits: &mut [u64], i: u32) {
    if let Some(w) = bits.get_mut(i as usize / 64) {
        *w |= 1 << (i % 64);
    }
}

pub(crate) fn get_bit(bits: &[u64], i: u32) -> bool {
    bits.get(i as usize / 64)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Writes what the socket takes from a client's queue (a failed send: the
/// client is gone, and so is what was queued for it).
pub(crate) fn flush(cl: &mut Client) {
    if cl.out.flush(&cl.tcp).is_err() {
        cl.out.clear();
    }
}
