//! The portserver protocol of Python's `portpicker`, both sides.
//!
//! A portserver hands out ports to the test processes of one host so that
//! no two of them get the same port. The protocol is one line each way on
//! a Unix stream socket: the client sends the pid the port is for, in
//! decimal, and a newline; the server answers with a port and a newline,
//! `0` when it has none. An address starting with `@` is a Linux abstract
//! name (`@unittest-portserver` is portpicker's default). Python test
//! suites find the server through `PORTSERVER_ADDRESS`.
//!
//! [`PortPool`] is the server's bookkeeping: each port goes to one pid at a
//! time and is offered again only after that pid has exited (a pid reused
//! by a new process counts as exited, where the process's start time can
//! be read), and it is checked free for TCP and UDP when it is handed out.
//! The client binds the port itself, with no option, so the server can't
//! hold it meanwhile; what closes that window is the pool itself: ports of
//! the host's ephemeral range are left out ([`PortPool::new`]), so no
//! autobind can take a port between the check and the client's bind, and
//! no other client of the server gets it. A process that binds a pool port
//! by number without asking the server is the one case left, as with any
//! portserver. [`request_port`] is the client.

use std::collections::HashMap;
use std::time::Duration;

use super::good::{ephemeral_ranges, is_available_for};
use super::reservation::Transport;
use crate::sys::process::process_exists;
use crate::sys::socket::{Domain, SockAddr, Socket, Type};
use crate::sys::{errno, Error, Result};

/// portpicker's default server address (an abstract name).
pub const DEFAULT_ADDRESS: &str = "@unittest-portserver";

/// portpicker's default pool: 15000 to 24999.
pub const DEFAULT_POOL: (u16, u16) = (15000, 24999);

/// The longest request line taken (a pid is at most 10 digits).
pub const MAX_REQUEST: usize = 32;

/// The socket address a portserver address names: `@name` is a Linux
/// abstract name, anything else a path ([`SockAddr::parse_unix`]).
///
/// # Errors
///
/// `EINVAL` for an empty address, or an `@` name where there are no
/// abstract names.
pub fn address(text: &str) -> Result<SockAddr> {
    SockAddr::parse_unix(text)
}

/// Asks the portserver at `server` (see [`address`]) for a port for `pid`,
/// waiting at most `timeout` for each of the connect's answer and the
/// reply.
///
/// # Errors
///
/// Those of the socket calls (`ECONNREFUSED` or `ENOENT` when no server
/// listens there); `EAGAIN` when it did not answer in time; `EPROTO` for
/// a reply that is not a port; `EADDRNOTAVAIL` when the server had none
/// (`0`).
pub fn request_port(server: &str, pid: u32, timeout: Duration) -> Result<u16> {
    let addr = address(server)?;
    let s = Socket::new(Domain::UNIX, Type::STREAM)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.connect(addr)?;
    let request = format!("{pid}\n");
    let mut sent = 0;
    while sent < request.len() {
        match s.send(&request.as_bytes()[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.raw_os_error() == errno::EINTR => {}
            Err(e) => return Err(e),
        }
    }
    // The reply is one short line, then the server closes.
    let mut reply = [0u8; 64];
    let mut got = 0;
    while got < reply.len() {
        match s.recv(&mut reply[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.raw_os_error() == errno::EINTR => {}
            Err(e) => return Err(e),
        }
    }
    let text = String::from_utf8_lossy(&reply[..got]);
    let line = text.split('\n').next().unwrap_or("").trim();
    match line.parse::<u16>() {
        Ok(0) => Err(Error::new(
            "request_port",
            format!("{server}: the server has no free port"),
            errno::EADDRNOTAVAIL,
        )),
        Ok(p) => Ok(p),
        Err(_) => Err(Error::new(
            "request_port",
            format!("{server}: reply {line:?} is not a port"),
            errno::EPROTO,
        )),
    }
}

/// A request line: the pid in decimal, then a newline (surrounding blanks
/// allowed, as Python's `int()` allows them). `None` while no newline has
/// come, `Some(Err(()))` for anything that is not a positive pid.
pub fn parse_request(input: &[u8]) -> Option<std::result::Result<u32, ()>> {
    let end = input.iter().position(|&b| b == b'\n')?;
    let text = std::str::from_utf8(&input[..end]).map_err(|_| ());
    Some(text.and_then(|t| match t.trim().parse::<u32>() {
        Ok(p) if p > 0 && p <= i32::MAX as u32 => Ok(p),
        _ => Err(()),
    }))
}

/// Who holds a port: a pid and, where it can be read, that process's start
/// time (so a new process with a reused pid is not taken for the holder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owner {
    pid: u32,
    start: Option<u64>,
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, in clock
/// ticks since boot), where there is a `/proc`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Owner {
    fn of(pid: u32) -> Self {
        Self {
            pid,
            start: start_time(pid),
        }
    }

    fn alive(&self) -> bool {
        if !process_exists(self.pid as i32) {
            return false;
        }
        match (self.start, start_time(self.pid)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

/// A portserver's ports and who holds them; see the module docs.
#[derive(Debug)]
pub struct PortPool {
    ports: Vec<u16>,
    owners: HashMap<u16, Owner>,
    next: usize,
    left_out: usize,
    given: u64,
    denied: u64,
}

impl PortPool {
    /// A pool of the ports in `ranges` (inclusive), less port 0, those
    /// below 1024, and those of this host's ephemeral ranges (see the
    /// module docs; [`left_out`](Self::left_out) says how many).
    pub fn new(ranges: &[(u16, u16)]) -> Self {
        let ephemeral = ephemeral_ranges();
        let mut ports = Vec::new();
        let mut left_out = 0;
        for &(lo, hi) in ranges {
            for p in lo..=hi {
                if p < 1024 || ephemeral.iter().any(|&(a, b)| (a..=b).contains(&p)) {
                    left_out += 1;
                } else {
                    ports.push(p);
                }
            }
        }
        // Overlapping ranges name a port once.
        ports.sort_unstable();
        ports.dedup();
        Self {
            ports,
            owners: HashMap::new(),
            next: 0,
            left_out,
            given: 0,
            denied: 0,
        }
    }

    /// How many ports the pool holds.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Whether the pool holds no port.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// How many ports of the ranges given were left out (below 1024 or
    /// ephemeral).
    pub fn left_out(&self) -> usize {
        self.left_out
    }

    /// How many requests got a port, and how many got none.
    pub fn counts(&self) -> (u64, u64) {
        (self.given, self.denied)
    }

    /// A port for `pid`: the next one, in turn, that no live process holds
    /// and that is free for TCP and UDP now. `None` when `pid` is not a
    /// live process (as portpicker's server refuses) or no port qualifies.
    pub fn allocate(&mut self, pid: u32) -> Option<u16> {
        let got = self.pick(pid);
        match got {
            Some(_) => self.given += 1,
            None => self.denied += 1,
        }
        got
    }

    fn pick(&mut self, pid: u32) -> Option<u16> {
        if pid <= 1 || pid > i32::MAX as u32 || !process_exists(pid as i32) {
            return None;
        }
        for _ in 0..self.ports.len() {
            let p = self.ports[self.next];
            self.next = (self.next + 1) % self.ports.len();
            if self.owners.get(&p).is_some_and(Owner::alive) {
                continue;
            }
            if !is_available_for(p, Transport::TcpAndUdp) {
                continue;
            }
            self.owners.insert(p, Owner::of(pid));
            return Some(p);
        }
        None
    }

    /// The reply to one request line (see [`parse_request`]): the port and
    /// a newline, or `0` and a newline.
    pub fn reply(&mut self, request: std::result::Result<u32, ()>) -> String {
        match request.ok().and_then(|pid| self.allocate(pid)) {
            Some(p) => format!("{p}\n"),
            None => {
                if request.is_err() {
                    self.denied += 1;
                }
                "0\n".to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_pids_and_refuse_the_rest() {
        assert_eq!(parse_request(b""), None);
        assert_eq!(parse_request(b"123"), None, "no newline yet");
        assert_eq!(parse_request(b"123\n"), Some(Ok(123)));
        assert_eq!(parse_request(b" 42 \r\n"), Some(Ok(42)));
        assert_eq!(parse_request(b"2147483647\n"), Some(Ok(i32::MAX as u32)));
        for bad in [
            &b"0\n"[..],
            b"-5\n",
            b"2147483648\n",
            b"abc\n",
            b"\n",
            b"\xff\n",
        ] {
            assert_eq!(parse_request(bad), Some(Err(())), "{bad:?}");
        }
    }

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert_eq!(address("/tmp/ps").unwrap(), SockAddr::unix("/tmp/ps"));
        #[cfg(target_os = "linux")]
        assert_eq!(address("@x").unwrap(), SockAddr::abstract_name("x"));
        assert_eq!(address("").unwrap_err().raw_os_error(), errno::EINVAL);
    }

    #[test]
    fn a_port_goes_to_one_live_pid_at_a_time() {
        let me = std::process::id();
        // A pool of free ports outside the ephemeral range.
        let mut ports = Vec::new();
        for p in 20000..24000u16 {
            if is_available_for(p, Transport::TcpAndUdp) {
                ports.push((p, p));
                if ports.len() == 3 {
                    break;
                }
            }
        }
        assert_eq!(ports.len(), 3);
        let mut pool = PortPool::new(&ports);
        assert_eq!(pool.len(), 3);
        let a = pool.allocate(me).unwrap();
        let b = pool.allocate(me).unwrap();
        let c = pool.allocate(me).unwrap();
        let mut all = vec![a, b, c];
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 3, "each port to one request");
        // All held by a live pid: none left.
        assert_eq!(pool.allocate(me), None);
        assert_eq!(pool.reply(Ok(me)), "0\n");
        assert_eq!(pool.reply(Err(())), "0\n");
        // Pids that are no live process get nothing.
        assert_eq!(pool.allocate(1), None);
        assert_eq!(pool.allocate(i32::MAX as u32), None);
        assert_eq!(pool.counts(), (3, 5));
        // A holder that is gone: its port is offered again.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let mut pool = PortPool::new(&ports[..1]);
        let live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut live = live;
        let p = pool.allocate(live.id()).unwrap();
        assert_eq!(pool.allocate(me), None, "held by a live process");
        live.kill().unwrap();
        live.wait().unwrap();
        assert_eq!(pool.reply(Ok(me)), format!("{p}\n"), "its holder exited");
        assert_eq!(pool.allocate(dead), None, "a dead pid asks for nothing");
        // A port in use is skipped.
        let mut pool = PortPool::new(&ports[..1]);
        let taken = Socket::new(Domain::IPV4, Type::DGRAM).unwrap();
        taken
            .bind(std::net::SocketAddr::from(([0, 0, 0, 0], ports[0].0)))
            .unwrap();
        assert_eq!(pool.allocate(me), None, "taken for UDP");
    }

    #[test]
    fn the_pool_leaves_out_low_and_ephemeral_ports() {
        let eph = ephemeral_ranges()[0];
        let pool = PortPool::new(&[(1000, 1029), (eph.0, eph.0 + 9)]);
        assert_eq!((pool.len(), pool.left_out()), (6, 34));
        assert!(PortPool::new(&[]).is_empty());
    }
}
