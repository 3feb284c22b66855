//! One connected client: its connection, what it was asked and sent,
//! and the blocks it holds.

use std::net::SocketAddr;
use std::rc::Rc;

use procwire::net::buffer::WriteQueue;
use procwire::net::frame::Decoder;
use procwire::sys::socket::Socket;

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
