//! Holding a port from the moment it is found free until a child process has
//! bound it, and the child side that joins the hold.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::sys::socket::{Domain, SockAddr, Socket, Type};
use crate::sys::{errno, Error, Result};

/// Which transport a reservation holds the port for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Transport {
    /// TCP only.
    #[default]
    Tcp,
    /// UDP only.
    Udp,
    /// TCP and UDP with the same port number.
    TcpAndUdp,
}

impl Transport {
    fn types(self) -> &'static [Type] {
        match self {
            Self::Tcp => &[Type::STREAM],
            Self::Udp => &[Type::DGRAM],
            Self::TcpAndUdp => &[Type::STREAM, Type::DGRAM],
        }
    }
}

/// How many times a reservation of port 0 starts over when the port it got
/// on the first address is taken on another (another family or protocol).
const ATTEMPTS: usize = 64;

/// A free port, held: portpicker's `pick_unused_port()`, except that it
/// returns the port still held, not a bare number. The same number is held
/// for TCP and UDP on 127.0.0.1 and ::1 (where IPv6 is on), so nothing
/// else can take it, by either transport or family, until the reservation
/// is dropped; the child joins it with [`ReservedBind`] / [`bind_reserved`]
/// (or, for a socket of the child's own that sets no option, drop the
/// reservation right before the child binds: then it is as good as
/// portpicker's).
///
/// ```
/// let r = procwire::net::port::pick_unused_port()?;
/// let port = r.port();
/// assert_ne!(port, 0);
/// # Ok::<(), procwire::sys::Error>(())
/// ```
///
/// # Errors
///
/// Those of [`ReservationBuilder::reserve`].
pub fn pick_unused_port() -> Result<Reservation> {
    Reservation::builder(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .transport(Transport::TcpAndUdp)
        .both_loopback_families(true)
        .reserve()
}

/// Options for a [`Reservation`]; see [`Reservation::builder`].
#[derive(Clone, Debug)]
#[must_use = "a ReservationBuilder reserves nothing until .reserve() or .reserve_many()"]
pub struct ReservationBuilder {
    ip: IpAddr,
    port: u16,
    transport: Transport,
    reuse_address: bool,
    both_loopback: bool,
}

impl ReservationBuilder {
    /// Reserve on `ip`, port 0 (the kernel picks), TCP, `SO_REUSEPORT` alone.
    pub fn new(ip: IpAddr) -> Self {
        Self {
            ip,
            port: 0,
            transport: Transport::Tcp,
            reuse_address: false,
            both_loopback: false,
        }
    }

    /// Reserve this port instead of letting the kernel pick.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Hold the port for TCP, UDP, or both.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Also set `SO_REUSEADDR` on the holding sockets (the seed's pair).
    ///
    /// Off by default, and for a reason measured on Linux: with the pair, an
    /// unrelated process that sets only `SO_REUSEADDR` (as most servers do)
    /// can bind *and listen on* the reserved port; with `SO_REUSEPORT` alone
    /// it gets `EADDRINUSE`.
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.reuse_address = on;
        self
    }

    /// When the address is loopback, hold the same port on both loopback
    /// addresses, 127.0.0.1 and ::1.
    ///
    /// A hold on 127.0.0.1:P does not stop a stranger binding `[::1]:P`, and a
    /// client that resolves `localhost` to ::1 would then reach the
    /// stranger. Where IPv6 is off, only the IPv4 hold is made and
    /// [`Reservation::note`] says so.
    pub fn both_loopback_families(mut self, on: bool) -> Self {
        self.both_loopback = on;
        self
    }

    /// The addresses to hold, the configured one first.
    fn ips(&self) -> Vec<IpAddr> {
        let mut ips = vec![self.ip];
        if self.both_loopback && self.ip.is_loopback() {
            ips.push(match self.ip {
                IpAddr::V4(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            });
        }
        ips
    }

    fn holding_socket(&self, addr: SocketAddr, ty: Type) -> Result<Socket> {
        let s = bind_joinable(addr, ty, self.reuse_address)?;
        if ty == Type::DGRAM {
            // A bound UDP socket takes its share of the port's datagrams
            // once the child joins the SO_REUSEPORT group. Connected to its
            // own address it only matches datagrams from itself, so the
            // kernel delivers everything else to the child (measured on
            // Linux 6.x: 200 of 200 datagrams reached the child, against
            // 109 of 200 with an unconnected hold).
            let own = s.local_addr()?;
            s.connect(own)?;
        }
        Ok(s)
    }

    /// Binds the holding sockets.
    ///
    /// # Errors
    ///
    /// `bind` errors (`EADDRINUSE` for a chosen port that is taken), or
    /// `EADDRINUSE` (call `reserve`) when no port free on every address was
    /// found in 64 tries.
    pub fn reserve(&self) -> Result<Reservation> {
        let ips = self.ips();
        let types = self.transport.types();
        'attempt: for _ in 0..ATTEMPTS {
            let mut held = Vec::new();
            let mut port = self.port;
            let mut notes = Vec::new();
            for (i, &ip) in ips.iter().enumerate() {
                for &ty in types {
                    let addr = SocketAddr::new(ip, port);
                    match self.holding_socket(addr, ty) {
                        Ok(s) => {
                            if port == 0 {
                                port = s.local_addr()?.port().unwrap_or(0);
                            }
                            held.push(Held {
                                socket: s,
                                addr: SocketAddr::new(ip, port),
                                ty,
                            });
                        }
                        // The extra loopback family is off on this host.
                        Err(e) if i > 0 && family_unavailable(&e) => {
                            notes.push(format!("{ip} not held: {e}"));
                            break;
                        }
                        // The port the kernel picked is taken elsewhere: start over.
                        Err(e)
                            if self.port == 0
                                && !held.is_empty()
                                && e.raw_os_error() == errno::EADDRINUSE =>
                        {
                            continue 'attempt;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            let primary = held[0].addr;
            return Ok(Reservation {
                held,
                primary,
                note: (!notes.is_empty()).then(|| notes.join("; ")),
            });
        }
        Err(Error::new(
            "reserve",
            format!(
                "{} for {:?} on {:?}: no port free on all of them in {ATTEMPTS} tries",
                self.ip, self.transport, ips
            ),
            errno::EADDRINUSE,
        ))
    }

    /// Reserves `n` distinct ports, all or nothing: on any failure the ones
    /// made so far are released and the error is returned.
    pub fn reserve_many(&self, n: usize) -> Result<Vec<Reservation>> {
        (0..n).map(|_| self.reserve()).collect()
    }
}

/// A socket bound to `addr` so that others of this user can join it:
/// `SO_REUSEPORT` (and `SO_REUSEADDR` if asked), IPv6-only for IPv6. Both
/// the hold and the child that joins it bind this way.
fn bind_joinable(addr: SocketAddr, ty: Type, reuse_address: bool) -> Result<Socket> {
    let s = Socket::new(Domain::of(&SockAddr::Inet(addr)), ty)?;
    s.set_reuse_port(true)?;
    if reuse_address {
        s.set_reuse_address(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(addr)?;
    Ok(s)
}

fn family_unavailable(e: &Error) -> bool {
    matches!(
        e.raw_os_error(),
        errno::EAFNOSUPPORT | errno::EADDRNOTAVAIL | errno::EPROTONOSUPPORT
    )
}

struct Held {
    socket: Socket,
    addr: SocketAddr,
    ty: Type,
}

/// A port held by sockets bound with `SO_REUSEPORT` (not listening) for as
/// long as this value lives.
///
/// A child of the same user binds the same address with `SO_REUSEPORT` (see
/// [`ReservedBind`]) and listens; anyone else's bind fails with
/// `EADDRINUSE`. Drop the reservation only after the child has exited: until
/// the child has bound, dropping it reopens the race it exists to close.
#[must_use = "dropping a Reservation frees its port at once, reopening the race it closes; keep it until the child has bound"]
pub struct Reservation {
    held: Vec<Held>,
    primary: SocketAddr,
    note: Option<String>,
}

impl Reservation {
    /// Options for a reservation on `ip`.
    pub fn builder(ip: IpAddr) -> ReservationBuilder {
        ReservationBuilder::new(ip)
    }

    /// Reserves `addr` (port 0: the kernel picks) for TCP with the default
    /// options.
    pub fn new(addr: SocketAddr) -> Result<Self> {
        ReservationBuilder::new(addr.ip())
            .port(addr.port())
            .reserve()
    }

    /// Reserves a TCP port on 127.0.0.1 and the same port on ::1 (where IPv6
    /// is on), so that `localhost` reaches no stranger whichever way it
    /// resolves.
    pub fn localhost() -> Result<Self> {
        ReservationBuilder::new(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .both_loopback_families(true)
            .reserve()
    }

    /// The port number held.
    pub fn port(&self) -> u16 {
        self.primary.port()
    }

    /// The first address held (the builder's address, with the port).
    pub fn addr(&self) -> SocketAddr {
        self.primary
    }

    /// Every address held (once per address, whatever the protocols).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = Vec::new();
        for h in &self.held {
            if !v.contains(&h.addr) {
                v.push(h.addr);
            }
        }
        v
    }

    /// Why less was held than asked for (IPv6 off), if it was.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// The holding TCP sockets and their addresses.
    pub fn tcp_sockets(&self) -> impl Iterator<Item = (SocketAddr, &Socket)> {
        self.held
            .iter()
            .filter(|h| h.ty == Type::STREAM)
            .map(|h| (h.addr, &h.socket))
    }

    /// The holding UDP sockets and their addresses.
    pub fn udp_sockets(&self) -> impl Iterator<Item = (SocketAddr, &Socket)> {
        self.held
            .iter()
            .filter(|h| h.ty == Type::DGRAM)
            .map(|h| (h.addr, &h.socket))
    }

    /// Turns the TCP holds into listening sockets, for handing the sockets
    /// themselves to a child (socket activation): then the child needs no
    /// options and there is no window at all. The parent must not accept on
    /// them.
    pub fn listen(&self, backlog: i32) -> Result<()> {
        for (_, s) in self.tcp_sockets() {
            s.listen(backlog)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("addrs", &self.addrs())
            .field("note", &self.note)
            .finish()
    }
}

/// Reserves `n` distinct TCP ports on 127.0.0.1, all or nothing.
pub fn reserve_many(n: usize) -> Result<Vec<Reservation>> {
    ReservationBuilder::new(IpAddr::V4(Ipv4Addr::LOCALHOST)).reserve_many(n)
}

/// The child's side of hand-off by port number: a socket that joins a
/// reservation (`SO_REUSEPORT`, and `SO_REUSEADDR` if asked), binds and, for
/// TCP, listens.
#[derive(Clone, Debug)]
#[must_use = "a ReservedBind binds nothing until .listen() or .udp()"]
pub struct ReservedBind {
    addr: SocketAddr,
    reuse_address: bool,
    backlog: i32,
}

impl ReservedBind {
    /// Binds `addr` with `SO_REUSEPORT`; backlog 1024.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            reuse_address: false,
            backlog: 1024,
        }
    }

    /// Also set `SO_REUSEADDR`.
    pub fn reuse_address(mut self, on: bool) -> Self {
        self.reuse_address = on;
        self
    }

    /// The `listen` backlog.
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    fn socket(&self, ty: Type) -> Result<Socket> {
        bind_joinable(self.addr, ty, self.reuse_address)
    }

    /// A listening TCP socket on the reserved address.
    pub fn listen(&self) -> Result<Socket> {
        let s = self.socket(Type::STREAM)?;
        s.listen(self.backlog)?;
        Ok(s)
    }

    /// A UDP socket bound to the reserved address. The reservation's UDP
    /// hold is connected to itself, so datagrams from anyone else reach this
    /// socket.
    pub fn udp(&self) -> Result<Socket> {
        self.socket(Type::DGRAM)
    }
}

/// [`ReservedBind::new`]`(addr).listen()`: the one-line child side.
pub fn bind_reserved(addr: SocketAddr) -> Result<Socket> {
    ReservedBind::new(addr).listen()
}

/// The TIME_WAIT reservation, for a child that can only set `SO_REUSEADDR`:
/// bind port 0 with `SO_REUSEADDR`, listen, connect to it, accept, and close
/// the accepted end first. That leaves the port in TIME_WAIT (about 60 s on
/// Linux), during which the kernel hands it to no autobind (port 0) and a
/// plain bind fails, while a bind with `SO_REUSEADDR` succeeds. Nothing stays
/// open in this process; the hold ends when TIME_WAIT does.
pub fn reserve_time_wait(ip: IpAddr) -> Result<u16> {
    let addr = SocketAddr::new(ip, 0);
    let listener = Socket::new(Domain::of(&SockAddr::Inet(addr)), Type::STREAM)?;
    listener.set_reuse_address(true)?;
    listener.bind(addr)?;
    listener.listen(1)?;
    let bound = listener.local_addr()?;
    let client = Socket::new(Domain::of(&bound), Type::STREAM)?;
    client.connect(bound.clone())?;
    let (accepted, _) = listener.accept()?;
    // The accepted side closes first, so it (local port = the reserved
    // port) is the one that enters TIME_WAIT.
    drop(accepted);
    drop(client);
    drop(listener);
    bound.port().ok_or_else(|| {
        Error::new(
            "getsockname",
            "not an internet address",
            errno::EAFNOSUPPORT,
        )
    })
}
