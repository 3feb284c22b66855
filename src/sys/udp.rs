//! Many UDP datagrams per system call, and the path MTU.
//!
//! A server that forwards thousands of small datagrams a second spends most
//! of its time entering the kernel, once per `sendto`. These calls move a
//! batch in one: [`Socket::send_batch`] (`sendmmsg(2)`),
//! [`Socket::recv_batch`] (`recvmmsg(2)` into a reusable [`RecvBatch`]), and
//! [`Socket::send_segments`], which hands the kernel one buffer that it cuts
//! into equal datagrams (UDP generic segmentation offload, `UDP_SEGMENT`,
//! Linux 4.18+). Where a call is missing (`sendmmsg` off Linux, GSO on an old
//! kernel) the batch calls fall back to one call per datagram, and
//! [`Socket::send_segments`] says `EOPNOTSUPP` or `EINVAL` so that the
//! caller can send the pieces itself; [`udp_gso_supported`] asks once.
//!
//! The path MTU: [`Socket::set_path_mtu_discovery`] (`IP_MTU_DISCOVER`:
//! never fragment, so a datagram too large for the path fails with
//! `EMSGSIZE` instead of being split into fragments that all must arrive)
//! and [`Socket::path_mtu`] (`IP_MTU` of a connected socket).
//!
//! Only IP addresses are taken: these are UDP calls.

use std::net::{Ipv4Addr, SocketAddr};
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::net::{Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::os::fd::AsRawFd;

#[cfg(any(target_os = "linux", target_os = "android"))]
use super::error::{last_errno, Context};
use super::error::{Error, Result};
use super::socket::{fd_arg, SockAddr, Socket};

/// The most datagrams one batch call moves (Linux's `UIO_MAXIOV`).
pub const MAX_BATCH: usize = 1024;

/// The most segments one [`Socket::send_segments`] buffer may hold (Linux's
/// `UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;

/// The IPv4 and UDP headers: a datagram of `mtu - UDP_IPV4_OVERHEAD` bytes
/// fills an IPv4 packet of `mtu` bytes exactly.
pub const UDP_IPV4_OVERHEAD: usize = 28;

/// The IPv6 and UDP headers (without extension headers).
pub const UDP_IPV6_OVERHEAD: usize = 48;

#[cfg(any(target_os = "linux", target_os = "android"))]
const UDP_SEGMENT: libc::c_int = 103;
#[cfg(any(target_os = "linux", target_os = "android"))]
const UDP_GRO: libc::c_int = 104;
/// Control bytes per received message: room for one `int` message (the
/// GRO segment size), in `u64`s so that it is aligned for `cmsghdr`.
#[cfg(any(target_os = "linux", target_os = "android"))]
const CONTROL_WORDS: usize = 4;

#[cfg(any(target_os = "linux", target_os = "android"))]
/// A socket address in the C layout, and its length.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
impl RawAddr {
    fn zeroed() -> Self {
        // SAFETY: `sockaddr_storage` is plain data; all zeroes is a valid
        // (unspecified-family) value.
        let storage = unsafe { std::mem::zeroed::<libc::sockaddr_storage>() };
        Self {
            storage,
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    fn from_std(a: &SocketAddr) -> Self {
        let mut r = Self::zeroed();
        match a {
            SocketAddr::V4(v4) => {
                // SAFETY: `sockaddr_storage` is large enough and aligned for
                // every socket address type, `sockaddr_in` among them.
                let sin = unsafe {
                    &mut *(&mut r.storage as *mut libc::sockaddr_storage)
                        .cast::<libc::sockaddr_in>()
                };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr = libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                };
                r.len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(v6) => {
                // SAFETY: as above, for `sockaddr_in6`.
                let sin6 = unsafe {
                    &mut *(&mut r.storage as *mut libc::sockaddr_storage)
                        .cast::<libc::sockaddr_in6>()
                };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = v6.port().to_be();
                sin6.sin6_addr = libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                };
                sin6.sin6_flowinfo = v6.flowinfo();
                sin6.sin6_scope_id = v6.scope_id();
                r.len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        r
    }

    /// The address the kernel wrote, if it is an IP one (a length that
    /// does not fit the family is not trusted).
    fn to_std(&self) -> Option<SocketAddr> {
        let len = self.len as usize;
        match i32::from(self.storage.ss_family) {
            libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a `sockaddr_in`.
                let sin = unsafe {
                    &*(&self.storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: the family says the storage holds a `sockaddr_in6`.
                let sin6 = unsafe {
                    &*(&self.storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
/// A `msghdr` with every field empty.
fn empty_msghdr() -> libc::msghdr {
    // SAFETY: `msghdr` is plain data (pointers and lengths); all zeroes is
    // the empty message (null buffers, no name, no control data).
    unsafe { std::mem::zeroed::<libc::msghdr>() }
}

/// Reusable buffers for [`Socket::recv_batch`]: `count` datagrams of at most
/// `size` bytes each, with their senders.
pub struct RecvBatch {
    data: Vec<u8>,
    size: usize,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    from: Vec<Option<SocketAddr>>,
    segment: Vec<Option<usize>>,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    control: Vec<u64>,
    received: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("count", &self.lens.len())
            .field("size", &self.size)
            .field("received", &self.received)
            .finish()
    }
}

/// One datagram of a [`RecvBatch`].
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// Its bytes (at most the batch's `size`).
    pub data: &'a [u8],
    /// Who sent it (`None` if the kernel gave no IP address).
    pub from: Option<SocketAddr>,
    /// It was longer than the batch's `size`, and cut (`MSG_TRUNC`).
    pub truncated: bool,
    /// With [`Socket::set_udp_gro`]: the kernel joined datagrams of this
    /// size (the last may be shorter) from one sender into `data`;
    /// [`Datagram::segments`] gives them back one by one.
    pub segment: Option<usize>,
}

impl<'a> Datagram<'a> {
    /// The datagrams the sender sent: `data` cut at `segment` bytes when
    /// the kernel joined several, else `data` whole.
    pub fn segments(&self) -> std::slice::Chunks<'a, u8> {
        let size = self
            .segment
            .filter(|&s| s > 0)
            .unwrap_or(self.data.len().max(1));
        self.data.chunks(size)
    }
}

impl RecvBatch {
    /// Buffers for `count` datagrams (1 to [`MAX_BATCH`]; clamped) of up to
    /// `size` bytes each (at least 1).
    pub fn new(count: usize, size: usize) -> Self {
        let count = count.clamp(1, MAX_BATCH);
        let size = size.max(1);
        Self {
            data: vec![0; count * size],
            size,
            lens: vec![0; count],
            truncated: vec![false; count],
            from: vec![None; count],
            segment: vec![None; count],
            #[cfg(any(target_os = "linux", target_os = "android"))]
            control: vec![0; count * CONTROL_WORDS],
            received: 0,
        }
    }

    /// How many datagrams the batch holds room for.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// How many datagrams the last [`Socket::recv_batch`] received.
    pub fn len(&self) -> usize {
        self.received
    }

    /// Whether the last [`Socket::recv_batch`] received nothing.
    pub fn is_empty(&self) -> bool {
        self.received == 0
    }

    /// Datagram `i` of the last receive.
    pub fn get(&self, i: usize) -> Option<Datagram<'_>> {
        if i >= self.received {
            return None;
        }
        let at = i * self.size;
        Some(Datagram {
            data: &self.data[at..at + self.lens[i].min(self.size)],
            from: self.from[i],
            truncated: self.truncated[i],
            segment: self.segment[i],
        })
    }

    /// The datagrams of the last receive, in order.
    pub fn iter(&self) -> impl Iterator<Item = Datagram<'_>> + '_ {
        (0..self.received).filter_map(|i| self.get(i))
    }
}

impl Socket {
    /// Sends each `(bytes, to)` as one datagram, in order, in as few system
    /// calls as the platform allows (`sendmmsg(2)` on Linux, one `sendto`
    /// per datagram elsewhere). Returns how many were sent: fewer than
    /// given when the socket would block (or another error) after the
    /// first; an error only if not even the first went. At most
    /// [`MAX_BATCH`] are looked at per call.
    ///
    /// # Errors
    ///
    /// Those of `sendto(2)` for the first datagram: `EAGAIN` on a full
    /// non-blocking socket, `EMSGSIZE` for a datagram larger than the
    /// protocol allows (or than the path, with
    /// [`Socket::set_path_mtu_discovery`]).
    ///
    /// # References
    ///
    /// - [sendmmsg(2)](https://man7.org/linux/man-pages/man2/sendmmsg.2.html)
    #[doc(alias = "sendmmsg")]
    pub fn send_batch(&self, msgs: &[(&[u8], SocketAddr)]) -> Result<usize> {
        let msgs = &msgs[..msgs.len().min(MAX_BATCH)];
        if msgs.is_empty() {
            return Ok(0);
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let mut addrs: Vec<RawAddr> = msgs.iter().map(|(_, a)| RawAddr::from_std(a)).collect();
            let mut iovs: Vec<libc::iovec> = msgs
                .iter()
                .map(|(b, _)| libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = addrs
                .iter_mut()
                .zip(iovs.iter_mut())
                .map(|(a, iov)| {
                    let mut h = empty_msghdr();
                    h.msg_name = (&mut a.storage as *mut libc::sockaddr_storage).cast();
                    h.msg_namelen = a.len;
                    h.msg_iov = iov;
                    h.msg_iovlen = 1;
                    libc::mmsghdr {
                        msg_hdr: h,
                        msg_len: 0,
                    }
                })
                .collect();
            loop {
                // SAFETY: `hdrs` holds `hdrs.len()` headers whose name and
                // iovec pointers point into `addrs`, `iovs` and the caller's
                // buffers, all alive and unmoved for the call; the kernel
                // only reads them (and writes `msg_len`).
                let n = unsafe {
                    libc::sendmmsg(
                        self.as_raw_fd(),
                        hdrs.as_mut_ptr(),
                        hdrs.len() as libc::c_uint,
                        libc::MSG_NOSIGNAL,
                    )
                };
                if n >= 0 {
                    return Ok(n as usize);
                }
                let errno = last_errno();
                if errno == libc::EINTR {
                    continue;
                }
                return Err(Error::new(
                    "sendmmsg",
                    format!(
                        "{}, {} datagrams, first {} bytes to {}",
                        fd_arg(self.as_fd()),
                        msgs.len(),
                        msgs[0].0.len(),
                        msgs[0].1
                    ),
                    errno,
                ));
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let mut sent = 0;
            for (b, to) in msgs {
                match self.send_to(b, *to) {
                    Ok(_) => sent += 1,
                    Err(e) if sent == 0 => return Err(e),
                    Err(_) => break,
                }
            }
            Ok(sent)
        }
    }

    /// Receives up to `batch.capacity()` datagrams into `batch`: waits (on
    /// a blocking socket) for the first, then takes only what is already
    /// queued (`recvmmsg(2)` with `MSG_WAITFORONE` on Linux; one `recvfrom`
    /// per datagram elsewhere). Returns how many, also in
    /// [`RecvBatch::len`].
    ///
    /// # Errors
    ///
    /// Those of `recvfrom(2)` for the first datagram: `EAGAIN` when a
    /// non-blocking socket has none.
    ///
    /// # References
    ///
    /// - [recvmmsg(2)](https://man7.org/linux/man-pages/man2/recvmmsg.2.html)
    #[doc(alias = "recvmmsg")]
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> Result<usize> {
        batch.received = 0;
        let size = batch.size;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let count = batch.capacity();
            let mut addrs: Vec<RawAddr> = (0..count).map(|_| RawAddr::zeroed()).collect();
            let mut iovs: Vec<libc::iovec> = batch
                .data
                .chunks_mut(size)
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: b.len(),
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = addrs
                .iter_mut()
                .zip(iovs.iter_mut())
                .zip(batch.control.chunks_mut(CONTROL_WORDS))
                .map(|((a, iov), ctl)| {
                    let mut h = empty_msghdr();
                    h.msg_name = (&mut a.storage as *mut libc::sockaddr_storage).cast();
                    h.msg_namelen = a.len;
                    h.msg_iov = iov;
                    h.msg_iovlen = 1;
                    h.msg_control = ctl.as_mut_ptr().cast();
                    h.msg_controllen = std::mem::size_of_val(ctl) as _;
                    libc::mmsghdr {
                        msg_hdr: h,
                        msg_len: 0,
                    }
                })
                .collect();
            let n = loop {
                // SAFETY: `hdrs` holds `count` headers whose name, iovec and
                // control pointers point into `addrs`, `iovs`, `batch.data`
                // (`count` buffers of `size` bytes) and `batch.control`
                // (`CONTROL_WORDS` words each), all alive and unmoved for
                // the call; the kernel writes at most those lengths.
                let n = unsafe {
                    libc::recvmmsg(
                        self.as_raw_fd(),
                        hdrs.as_mut_ptr(),
                        count as libc::c_uint,
                        libc::MSG_WAITFORONE,
                        std::ptr::null_mut(),
                    )
                };
                if n >= 0 {
                    break n as usize;
                }
                let errno = last_errno();
                if errno == libc::EINTR {
                    continue;
                }
                return Err(Error::new(
                    "recvmmsg",
                    format!("{}, {count} x {size} bytes", fd_arg(self.as_fd())),
                    errno,
                ));
            };
            let n = n.min(count);
            for (i, h) in hdrs.iter().take(n).enumerate() {
                addrs[i].len = h.msg_hdr.msg_namelen;
                batch.lens[i] = (h.msg_len as usize).min(size);
                batch.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                batch.from[i] = addrs[i].to_std();
                batch.segment[i] = gro_segment(&h.msg_hdr);
            }
            batch.received = n;
            Ok(n)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let mut n = 0;
            while n < batch.capacity() {
                let buf = &mut batch.data[n * size..(n + 1) * size];
                let r = if n == 0 {
                    self.recv_from(buf)
                } else {
                    self.recv_from_nonblocking(buf)
                };
                match r {
                    Ok((len, from)) => {
                        batch.lens[n] = len.min(size);
                        batch.truncated[n] = false;
                        batch.from[n] = from.as_inet();
                        batch.segment[n] = None;
                        n += 1;
                    }
                    Err(e) if n == 0 => return Err(e),
                    Err(_) => break,
                }
            }
            batch.received = n;
            Ok(n)
        }
    }

    /// Sends `buf` to `to` as datagrams of `segment` bytes each (the last
    /// may be shorter) in one call, cut by the kernel or the NIC (UDP GSO,
    /// `UDP_SEGMENT`). Returns the bytes sent (all of `buf`, or an error).
    ///
    /// # Errors
    ///
    /// `EINVAL` for a `segment` of 0, a buffer of more than
    /// [`MAX_SEGMENTS`] segments, or a kernel without UDP GSO (also
    /// `EOPNOTSUPP`, `ENOPROTOOPT` or `EIO`, by kernel and device: send
    /// the segments one by one then); `EMSGSIZE` for a segment larger than
    /// the path; the errors of `sendmsg(2)`.
    ///
    /// # References
    ///
    /// - [udp(7)](https://man7.org/linux/man-pages/man7/udp.7.html), `UDP_SEGMENT`
    #[doc(alias = "UDP_SEGMENT")]
    pub fn send_segments(&self, buf: &[u8], segment: u16, to: SocketAddr) -> Result<usize> {
        let args = || {
            format!(
                "{}, {} bytes in {segment}-byte segments to {to}",
                fd_arg(self.as_fd()),
                buf.len()
            )
        };
        if segment == 0 || buf.len().div_ceil(usize::from(segment)) > MAX_SEGMENTS {
            return Err(Error::new("sendmsg", args(), libc::EINVAL));
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let mut addr = RawAddr::from_std(&to);
            let mut iov = libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            // Room for one `u16` control message, aligned as `cmsghdr`.
            // SAFETY: CMSG_SPACE is a pure computation.
            let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
            let mut control = vec![0u64; space.div_ceil(8)];
            let mut h = empty_msghdr();
            h.msg_name = (&mut addr.storage as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = addr.len;
            h.msg_iov = &mut iov;
            h.msg_iovlen = 1;
            h.msg_control = control.as_mut_ptr().cast();
            h.msg_controllen = space as _;
            // SAFETY: `h` points at `control`, which has room for one
            // control message of a `u16` (CMSG_SPACE above), so the first
            // header and its data are inside it.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&h);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
            }
            loop {
                // SAFETY: `h` points at `addr`, `iov` (the caller's buffer)
                // and `control`, all alive for the call; the kernel reads
                // them.
                let n = unsafe { libc::sendmsg(self.as_raw_fd(), &h, libc::MSG_NOSIGNAL) };
                if n >= 0 {
                    return Ok(n as usize);
                }
                let errno = last_errno();
                if errno != libc::EINTR {
                    return Err(Error::new("sendmsg", args(), errno));
                }
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = to;
            Err(Error::new("sendmsg", args(), libc::EOPNOTSUPP))
        }
    }

    /// Sets how IPv4 path MTU discovery treats this socket's datagrams
    /// (`IP_MTU_DISCOVER`, Linux): [`PathMtu::Do`] never fragments, so a
    /// datagram larger than the path's MTU fails with `EMSGSIZE`.
    ///
    /// # Errors
    ///
    /// `ENOPROTOOPT` (or `EOPNOTSUPP`) on a socket that is not IP;
    /// `EOPNOTSUPP` off Linux.
    ///
    /// # References
    ///
    /// - [ip(7)](https://man7.org/linux/man-pages/man7/ip.7.html), `IP_MTU_DISCOVER`
    #[doc(alias = "IP_MTU_DISCOVER")]
    pub fn set_path_mtu_discovery(&self, mode: PathMtu) -> Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use rustix::net::sockopt::Ipv4PathMtuDiscovery as D;
            let v = match mode {
                PathMtu::Dont => D::DONT,
                PathMtu::Want => D::WANT,
                PathMtu::Do => D::DO,
                PathMtu::Probe => D::PROBE,
            };
            rustix::net::sockopt::set_ip_mtu_discover(self, v).ctx("setsockopt", || {
                format!("{}, IP_MTU_DISCOVER, {mode:?}", fd_arg(self.as_fd()))
            })
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            Err(Error::new(
                "setsockopt",
                format!("{}, IP_MTU_DISCOVER, {mode:?}", fd_arg(self.as_fd())),
                libc::EOPNOTSUPP,
            ))
        }
    }

    /// The path MTU the kernel knows for this connected IPv4 socket's peer
    /// (`IP_MTU`, Linux): the largest IP packet, so a datagram of up to
    /// `path_mtu() - UDP_IPV4_OVERHEAD` bytes goes unfragmented.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` on a socket that is not connected; `EOPNOTSUPP` off Linux.
    ///
    /// # References
    ///
    /// - [ip(7)](https://man7.org/linux/man-pages/man7/ip.7.html), `IP_MTU`
    #[doc(alias = "IP_MTU")]
    pub fn path_mtu(&self) -> Result<u32> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            rustix::net::sockopt::ip_mtu(self)
                .ctx("getsockopt", || format!("{}, IP_MTU", fd_arg(self.as_fd())))
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            Err(Error::new(
                "getsockopt",
                format!("{}, IP_MTU", fd_arg(self.as_fd())),
                libc::EOPNOTSUPP,
            ))
        }
    }
}

/// The segment size of a UDP GRO message in `h`'s control data, if the
/// kernel put one there (checked: a message of another kind, or one too
/// short for its `int`, is not read).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn gro_segment(h: &libc::msghdr) -> Option<usize> {
    // `msg_controllen` is a `size_t` in glibc and a `socklen_t` in musl.
    #[allow(clippy::unnecessary_cast)]
    let len = h.msg_controllen as usize;
    if h.msg_control.is_null() || len < std::mem::size_of::<libc::cmsghdr>() {
        return None;
    }
    // SAFETY: `h` is a header the kernel filled: `msg_control` points at
    // our buffer of `msg_controllen` bytes (at most its size), which
    // CMSG_FIRSTHDR/CMSG_NXTHDR walk within; each message's data is read
    // only when its length holds an `int`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let want = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
            if (*c).cmsg_level == libc::SOL_UDP
                && (*c).cmsg_type == UDP_GRO
                && (*c).cmsg_len as usize >= want
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(v).ok().filter(|&v| v > 0);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

impl Socket {
    /// Lets the kernel join datagrams from one sender into one receive
    /// (UDP GRO, `UDP_GRO`, Linux 5.0+): a [`Socket::recv_batch`] slot then
    /// holds several, with their size in [`Datagram::segment`]. The slots
    /// must be large enough (64 KiB) for what is joined.
    ///
    /// # Errors
    ///
    /// `ENOPROTOOPT` on a kernel without it or a socket that is not UDP;
    /// `EOPNOTSUPP` off Linux.
    ///
    /// # References
    ///
    /// - [udp(7)](https://man7.org/linux/man-pages/man7/udp.7.html), `UDP_GRO`
    #[doc(alias = "UDP_GRO")]
    pub fn set_udp_gro(&self, on: bool) -> Result<()> {
        let args = || format!("{}, UDP_GRO, {on}", fd_arg(self.as_fd()));
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let v: libc::c_int = on.into();
            // SAFETY: `v` is a live `c_int` and the length passed is its
            // size; the fd is `self`'s, open for the call.
            let rc = unsafe {
                libc::setsockopt(
                    self.as_raw_fd(),
                    libc::SOL_UDP,
                    UDP_GRO,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(Error::new("setsockopt", args(), last_errno()))
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            Err(Error::new("setsockopt", args(), libc::EOPNOTSUPP))
        }
    }
}

/// IPv4 path MTU discovery modes ([`Socket::set_path_mtu_discovery`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathMtu {
    /// `IP_PMTUDISC_DONT`: never set Don't-Fragment; fragment as needed.
    Dont,
    /// `IP_PMTUDISC_WANT`: the route's setting (the default).
    Want,
    /// `IP_PMTUDISC_DO`: always set Don't-Fragment; larger datagrams fail.
    Do,
    /// `IP_PMTUDISC_PROBE`: set Don't-Fragment but ignore the path MTU.
    Probe,
}

/// The largest UDP payload that fits one IPv4 packet on a path of `mtu`
/// bytes (0 if `mtu` can't hold the headers).
pub fn ipv4_payload(mtu: u32) -> usize {
    (mtu as usize).saturating_sub(UDP_IPV4_OVERHEAD)
}

/// Whether this kernel cuts [`Socket::send_segments`] buffers (UDP GSO): one
/// two-segment datagram to a socket of our own on loopback, asked once per
/// process and remembered.
pub fn udp_gso_supported() -> bool {
    use std::sync::OnceLock;
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let probe = || -> Result<bool> {
            let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            let rx = Socket::for_addr(&SockAddr::Inet(lo), super::socket::Type::DGRAM)?;
            rx.bind(lo)?;
            let to = rx
                .local_addr()?
                .as_inet()
                .ok_or_else(|| Error::invalid_input("getsockname", "not an IP address"))?;
            let tx = Socket::for_addr(&SockAddr::Inet(lo), super::socket::Type::DGRAM)?;
            Ok(tx.send_segments(&[0u8; 16], 8, to).is_ok())
        };
        probe().unwrap_or(false)
    })
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    #[test]
    fn addresses_go_through_the_c_layout_both_ways() {
        let v4: SocketAddr = "192.0.2.7:4242".parse().expect("v4");
        let v6: SocketAddr = "[2001:db8::5]:99".parse().expect("v6");
        for a in [v4, v6] {
            let raw = RawAddr::from_std(&a);
            assert_eq!(raw.to_std(), Some(a));
        }
    }

    #[test]
    fn an_address_shorter_than_its_family_is_not_trusted() {
        for a in ["192.0.2.7:1", "[2001:db8::5]:2"] {
            let a: SocketAddr = a.parse().expect("addr");
            let mut raw = RawAddr::from_std(&a);
            raw.len -= 1;
            assert_eq!(raw.to_std(), None, "{a}");
        }
        assert_eq!(RawAddr::zeroed().to_std(), None);
    }

    #[test]
    fn a_batch_has_at_least_one_slot_and_at_most_max_batch() {
        let b = RecvBatch::new(0, 0);
        assert_eq!((b.capacity(), b.size), (1, 1));
        assert_eq!(RecvBatch::new(MAX_BATCH + 5, 8).capacity(), MAX_BATCH);
        assert_eq!(RecvBatch::new(16, 8).capacity(), 16);
        assert!(b.is_empty());
        assert!(b.get(0).is_none());
        let s = format!("{:?}", RecvBatch::new(3, 9));
        assert!(s.contains("count: 3") && s.contains("size: 9"), "{s}");
    }
}
