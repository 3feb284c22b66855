//! [`ShmListener`]: accepts [`ShmStream`] connections on a Unix socket path,
//! checking each peer's segment before it maps it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::hello::{self, Hello, ACK};
use super::segment::{segment_len, Mem, SegmentKind, Side, MAGIC, VERSION};
use super::shared::{self, Shared};
use super::stream::{invalid, ShmStream};
use crate::sys::cpu::cpu_tag;
use crate::sys::fdpass::recv_with_fds;
use crate::sys::process::getpid;
use crate::sys::shm::{self, Access, Mapping, SharedMemory, SysvMapping};
use crate::sys::socket::{Domain, SockAddr, Socket, Type};

/// Accepts [`ShmStream`] connections on a Unix socket path.
///
/// A memfd segment must come sealed against shrinking (a procwire
/// connector always seals it), so a hostile peer can't truncate it under
/// us and turn our accesses into `SIGBUS`. SysV segments can't change size.
/// A POSIX segment can't be sealed: its creator could truncate it at any
/// time, so where memfds exist (Linux, FreeBSD) the listener refuses POSIX
/// segments unless told to trust its peers with
/// [`set_sealed_only(false)`](Self::set_sealed_only). Elsewhere every
/// segment a connector makes is POSIX or SysV, and POSIX ones are taken.
#[derive(Debug)]
pub struct ShmListener {
    sock: Socket,
    sealed_only: bool,
}

impl ShmListener {
    /// Listens on `path` (which must not exist).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let sock = Socket::new(Domain::UNIX, Type::STREAM)?;
        sock.bind(SockAddr::unix(path.as_ref()))?;
        sock.listen(1024)?;
        Ok(Self {
            sock,
            sealed_only: shm::HAVE_MEMFD,
        })
    }

    /// Whether to refuse segments their creator could shrink under us
    /// (POSIX ones), taking only a sealed memfd or a SysV segment: on by
    /// default where memfds exist. Turn it off to take POSIX segments from
    /// peers you trust.
    pub fn set_sealed_only(&mut self, on: bool) {
        self.sealed_only = on;
    }

    /// Accepts one connection: receives the peer's segment, checks its size
    /// and header, maps it and acknowledges. A peer that sends something
    /// else gets its connection closed and an `InvalidData` error here.
    pub fn accept(&self) -> io::Result<ShmStream> {
        let (sock, _) = self.sock.accept()?;
        sock.set_read_timeout(Some(hello::TIMEOUT))?;
        let mut bytes = [0u8; hello::LEN];
        let mut fds = Vec::new();
        let mut got = 0;
        while got < hello::LEN {
            let r = recv_with_fds(&sock, &mut bytes[got..], &mut fds, 1)?;
            if r.bytes == 0 {
                return Err(invalid("the peer closed during the handshake"));
            }
            got += r.bytes;
        }
        let hello = Hello::decode(&bytes).map_err(|e| invalid(&e.to_string()))?;
        let len = segment_len(hello.ring_size as usize);
        let mem = match hello.kind {
            SegmentKind::Memfd | SegmentKind::Posix => {
                let fd = fds.pop().ok_or_else(|| invalid("no segment fd"))?;
                let size = shm::file_size(fd.as_fd())?;
                if size != len as u64 {
                    return Err(invalid(&format!("segment of {size} bytes, expected {len}")));
                }
                if !shm::is_sealed_against_shrinking(fd.as_fd()) {
                    // Where memfds exist, a procwire connector seals its
                    // memfd; elsewhere its memfd request became POSIX.
                    if hello.kind == SegmentKind::Memfd && shm::HAVE_MEMFD {
                        return Err(invalid("memfd segment not sealed against shrinking"));
                    }
                    if self.sealed_only {
                        return Err(invalid(
                            "unsealed (POSIX) segment refused: the listener takes only sealed ones",
                        ));
                    }
                }
                Mem::Map(Mapping::map(fd.as_fd(), len, Access::ReadWrite)?)
            }
            SegmentKind::SysV => {
                let id = hello.sysv_id;
                check_sysv_creator(&sock, id)?;
                let m = SysvMapping::attach(id, Access::ReadWrite)?;
                if m.len() != len {
                    return Err(invalid(&format!(
                        "segment of {} bytes, expected {len}",
                        m.len()
                    )));
                }
                if !shm::SYSV_ATTACH_AFTER_REMOVE {
                    // The creator could not remove it before we attached.
                    let _ = shm::shm_remove(id);
                }
                Mem::Sysv(m)
            }
        };
        if hello.prefault {
            mem.memory().populate()?;
        }
        let shared = Arc::new(Shared {
            mem,
            ring_size: hello.ring_size,
            side: Side::Acceptor,
            pid: AtomicU32::new(getpid() as u32),
            holders: AtomicU32::new(1),
        });
        let h = shared.header();
        if h.magic.load(Ordering::Acquire) != MAGIC
            || h.version.load(Ordering::Relaxed) != VERSION
            || h.ring_size.load(Ordering::Relaxed) != hello.ring_size
        {
            return Err(invalid("bad segment header"));
        }
        shared.refs().store(1, Ordering::Relaxed);
        h.running[Side::Acceptor.index()].store(cpu_tag(), Ordering::Relaxed);
        sock.set_read_timeout(None)?;
        sock.send(&[ACK])?;
        shared::register(&shared);
        Ok(ShmStream::new(sock, shared))
    }

    /// The path it listens on.
    pub fn local_addr(&self) -> io::Result<SockAddr> {
        Ok(self.sock.local_addr()?)
    }
}

impl AsFd for ShmListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Refuses a SysV segment that the peer did not create: any id it names
/// that we may attach would do otherwise, including another connection's
/// segment. Checked where the socket tells the peer's pid (Linux, Android).
fn check_sysv_creator(sock: &Socket, id: i32) -> io::Result<()> {
    if let Some(peer) = sock.peer_pid()? {
        let stat = shm::shm_stat(id)?;
        if stat.creator_pid != peer {
            return Err(invalid(&format!(
                "SysV segment {id} was made by pid {}, not by the peer (pid {peer})",
                stat.creator_pid
            )));
        }
    }
    Ok(())
}
