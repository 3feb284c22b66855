//! The UDP and TCP sockets a PSP client uses, bound to one port number:
//! the server knows a client by that port on both transports.

use std::net::{IpAddr, SocketAddr};

use procwire::sys::socket::{Domain, Socket, Type};
use procwire::sys::Errno;

/// A UDP and a TCP socket bound to the same port of `ip`: the kernel picks
/// a free UDP port, and the TCP bind of that number is tried; when TCP has
/// the number in use (a listener, or a closing connection), another pair
/// is tried, at most 100.
pub fn same_port_pair(ip: IpAddr) -> std::io::Result<(Socket, Socket, u16)> {
    let mut last = None;
    for _ in 0..100 {
        let udp = Socket::new(Domain::IPV4, Type::DGRAM)?;
        udp.bind(SocketAddr::from((ip, 0)))?;
        let port = udp.local_addr()?.port().unwrap_or(0);
        let tcp = Socket::new(Domain::IPV4, Type::STREAM)?;
        match tcp.bind(SocketAddr::from((ip, port))) {
            Ok(()) => return Ok((udp, tcp, port)),
            Err(e) if e.errno() == Errno::EADDRINUSE => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map_or_else(|| std::io::Error::other("no port pair"), Into::into))
}
