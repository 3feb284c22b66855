//! Good ports for services that need a *persistent* port number (port-for's
//! rules): free now, not IANA-assigned, outside this host's ephemeral range
//! (so the kernel never hands the port to a passing outgoing connection),
//! and not within a few ports of an assigned one, drawn from large free
//! ranges.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::reservation::Transport;
use super::unassigned::UNASSIGNED_RANGES;
use crate::sys::socket::{Domain, Socket, Type};
use crate::sys::{errno, Error, Result};

/// The ephemeral range assumed where the host's can't be read (port-for's
/// default; it covers the usual Linux, BSD and IANA ranges).
pub const DEFAULT_EPHEMERAL_RANGE: (u16, u16) = (32768, 65535);

/// Ranges shorter than this (after trimming) are skipped: ports next to
/// assigned ones are more likely to be taken by something unlisted.
const MIN_RANGE_LEN: u32 = 20;
/// Ports trimmed from each end of a free range.
const BORDER: u16 = 3;
/// At most this many candidates are probed by one `select_random`.
const TRIES: usize = 100;

/// This host's ephemeral (autobind) port ranges: Linux
/// `/proc/sys/net/ipv4/ip_local_port_range` minus
/// `/proc/sys/net/ipv4/ip_local_reserved_ports` (ports the kernel never
/// autobinds); `net.inet.ip.portrange.first` / `.last` (and
/// `hifirst`/`hilast`) by sysctl on macOS and the BSDs;
/// [`DEFAULT_EPHEMERAL_RANGE`] where neither can be read.
pub fn ephemeral_ranges() -> Vec<(u16, u16)> {
    let r = read_ephemeral();
    if r.is_empty() {
        return vec![DEFAULT_EPHEMERAL_RANGE];
    }
    let reserved = read_reserved();
    if reserved.is_empty() {
        r
    } else {
        subtract(&r, &reserved)
    }
}

/// Parses a Linux port list as `ip_local_reserved_ports` holds it: ports
/// and inclusive ranges separated by commas (`8080,9000-9100`), in any
/// order; returns sorted, merged ranges, or `None` for anything malformed
/// (a bad number, a range backwards, a port above 65535).
pub fn parse_port_list(text: &str) -> Option<Vec<(u16, u16)>> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for item in text.trim().split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?),
            None => {
                let p = item.parse::<u16>().ok()?;
                (p, p)
            }
        };
        if lo > hi {
            return None;
        }
        out.push((lo, hi));
    }
    out.sort_unstable();
    Some(merge_adjacent(out))
}

/// Sorted inclusive ranges with the overlapping and adjacent ones joined.
fn merge_adjacent(sorted: impl IntoIterator<Item = (u16, u16)>) -> Vec<(u16, u16)> {
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (lo, hi) in sorted {
        match merged.last_mut() {
            Some(last) if u32::from(last.1) + 1 >= u32::from(lo) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_reserved() -> Vec<(u16, u16)> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
        .ok()
        .and_then(|t| parse_port_list(&t))
        .unwrap_or_default()
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_reserved() -> Vec<(u16, u16)> {
    Vec::new()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_ephemeral() -> Vec<(u16, u16)> {
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range") else {
        return Vec::new();
    };
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => vec![(lo, hi)],
        _ => Vec::new(),
    }
}

#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd"
))]
fn read_ephemeral() -> Vec<(u16, u16)> {
    use crate::sys::sysctl::sysctl_int;
    let mut out = Vec::new();
    for (a, b) in [("first", "last"), ("hifirst", "hilast")] {
        let get = |k: &str| {
            sysctl_int(&format!("net.inet.ip.portrange.{k}"))
                .ok()
                .and_then(|v| u16::try_from(v).ok())
        };
        if let (Some(lo), Some(hi)) = (get(a), get(b)) {
            if lo <= hi && !out.contains(&(lo, hi)) {
                out.push((lo, hi));
            }
        }
    }
    out
}

#[cfg(target_os = "openbsd")]
fn read_ephemeral() -> Vec<(u16, u16)> {
    Vec::new()
}

/// Inclusive ranges minus inclusive ranges, both sorted.
fn subtract(ranges: &[(u16, u16)], minus: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for &(lo, hi) in ranges {
        let mut pieces = vec![(u32::from(lo), u32::from(hi))];
        for &(mlo, mhi) in minus {
            let (mlo, mhi) = (u32::from(mlo), u32::from(mhi));
            pieces = pieces
                .into_iter()
                .flat_map(|(a, b)| {
                    if mhi < a || mlo > b {
                        vec![(a, b)]
                    } else {
                        let mut v = Vec::new();
                        if mlo > a {
                            v.push((a, mlo - 1));
                        }
                        if mhi < b {
                            v.push((mhi + 1, b));
                        }
                        v
                    }
                })
                .collect();
        }
        out.extend(pieces.into_iter().map(|(a, b)| (a as u16, b as u16)));
    }
    out
}

/// The good ranges for a given set of ephemeral ranges: unassigned, 1024 and
/// up, outside the ephemeral ranges, long enough, borders trimmed.
fn good_ranges_for(ephemeral: &[(u16, u16)]) -> Vec<(u16, u16)> {
    // Adjacent unassigned ranges form one free stretch.
    let merged = merge_adjacent(UNASSIGNED_RANGES.iter().copied());
    let mut minus = vec![(0, 1023)];
    minus.extend_from_slice(ephemeral);
    minus.sort_unstable();
    subtract(&merged, &minus)
        .into_iter()
        .filter(|&(lo, hi)| u32::from(hi) - u32::from(lo) >= MIN_RANGE_LEN + 2 * u32::from(BORDER))
        .map(|(lo, hi)| (lo + BORDER, hi - BORDER))
        .collect()
}

/// How long the good ranges are reused before the ephemeral range is read
/// again (an administrator may change it at run time).
const RECHECK: Duration = Duration::from_secs(1);

/// The good ranges for this host, recomputed when the ephemeral setting
/// changed (checked at most once a second).
fn good_ranges() -> Arc<Vec<(u16, u16)>> {
    struct Cached {
        checked: Instant,
        ephemeral: Vec<(u16, u16)>,
        ranges: Arc<Vec<(u16, u16)>>,
    }
    static CACHE: Mutex<Option<Cached>> = Mutex::new(None);
    let mut guard = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if let Some(c) = guard.as_mut() {
        if now.duration_since(c.checked) < RECHECK {
            return Arc::clone(&c.ranges);
        }
        let eph = ephemeral_ranges();
        c.checked = now;
        if eph != c.ephemeral {
            c.ranges = Arc::new(good_ranges_for(&eph));
            c.ephemeral = eph;
        }
        return Arc::clone(&c.ranges);
    }
    let ephemeral = ephemeral_ranges();
    let ranges = Arc::new(good_ranges_for(&ephemeral));
    *guard = Some(Cached {
        checked: now,
        ephemeral,
        ranges: Arc::clone(&ranges),
    });
    ranges
}

/// The generated table of IANA-unassigned port ranges (inclusive,
/// ascending); `scripts/gen-unassigned-ports.py` names its source and date.
pub fn unassigned_ranges() -> &'static [(u16, u16)] {
    UNASSIGNED_RANGES
}

/// Every good port (see the module docs), ascending. About 10,000 ports on
/// a Linux host with the default ephemeral range.
pub fn available_good_ports() -> Vec<u16> {
    good_ranges().iter().flat_map(|&(lo, hi)| lo..=hi).collect()
}

/// Whether `port` is a good port by the static rules (not whether it is
/// free now).
pub fn is_good(port: u16) -> bool {
    good_ranges()
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&port))
}

/// Whether nothing uses `port` on this host now: a connection to
/// 127.0.0.1 is refused (nothing listens there), and then a bind of the
/// wildcard address succeeds (IPv6 dual-stack, which conflicts with any
/// bind of the port on loopback or the wildcard, IPv4 or IPv6; plain IPv4
/// where IPv6 is off). Port 0 is never available.
///
/// Both tests use one non-blocking socket: a connect that was refused
/// leaves it unbound, so the bind follows on the same socket, and the
/// probe costs one socket, one refused connect and one bind. The order
/// matters: a socket bound to `port` first would connect to itself. A
/// listener whose queue is full never answers: after [`PROBE_WAIT`] of
/// silence the port counts as taken.
pub fn is_available(port: u16) -> bool {
    port != 0 && probe(port).unwrap_or(false)
}

/// Whether `port` is free for `transport`: TCP as [`is_available`]
/// checks it, UDP by a bind of the wildcard address (dual-stack where
/// IPv6 is on), both for [`Transport::TcpAndUdp`] (as Python's
/// `portpicker.is_port_free` checks both).
pub fn is_available_for(port: u16, transport: Transport) -> bool {
    let tcp = || is_available(port);
    let udp = || port != 0 && udp_free(port).unwrap_or(false);
    match transport {
        Transport::Tcp => tcp(),
        Transport::Udp => udp(),
        _ => tcp() && udp(),
    }
}

fn udp_free(port: u16) -> Result<bool> {
    match Socket::new(Domain::IPV6, Type::DGRAM) {
        Ok(s) => {
            s.set_only_v6(false)?;
            Ok(s.bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
                .is_ok())
        }
        Err(_) => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM)?;
            Ok(s.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
                .is_ok())
        }
    }
}

/// How long [`is_available`] waits for an answer to its connect. On
/// loopback the refusal normally arrives within the connect call itself.
pub const PROBE_WAIT: Duration = Duration::from_millis(100);

fn probe(port: u16) -> Result<bool> {
    let (s, loopback, wildcard) = match Socket::new_nonblocking(Domain::IPV6, Type::STREAM) {
        Ok(s) => {
            s.set_only_v6(false)?;
            let mapped = SocketAddr::from((Ipv4Addr::LOCALHOST.to_ipv6_mapped(), port));
            (s, mapped, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
        }
        Err(_) => (
            Socket::new_nonblocking(Domain::IPV4, Type::STREAM)?,
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        ),
    };
    match s.connect(loopback) {
        Err(e) if e.raw_os_error() == errno::ECONNREFUSED => {
            return bind_after_refusal(s, wildcard)
        }
        Err(e) if e.raw_os_error() == errno::EINPROGRESS => {}
        Err(_) => return Ok(false),
        Ok(()) => return self_connected(s, wildcard),
    }
    // On loopback the RST has normally been handled before connect
    // returned: the socket is closed and unbound again, and the bind is
    // the second test. EINVAL means the connect is still going (or done).
    match s.bind(wildcard) {
        Ok(()) => return Ok(true),
        Err(e) if e.raw_os_error() != errno::EINVAL => return Ok(false),
        Err(_) => {}
    }
    if !s.wait_writable(PROBE_WAIT)? {
        return Ok(false);
    }
    match s.take_error()? {
        Some(e) if e.raw_os_error() == Some(errno::ECONNREFUSED) => bind_after_refusal(s, wildcard),
        Some(_) => Ok(false),
        None => self_connected(s, wildcard),
    }
}

/// The bind test on the socket whose connect was refused. Linux lets a
/// socket bind after a failed connect; where the platform doesn't
/// (`EINVAL`), a fresh socket takes the test.
fn bind_after_refusal(s: Socket, wildcard: SocketAddr) -> Result<bool> {
    match s.bind(wildcard) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == errno::EINVAL => {
            drop(s);
            fresh_bind(wildcard)
        }
        Err(_) => Ok(false),
    }
}

/// After a connect to `port` succeeded: when the kernel picked `port`
/// itself as the source port, the SYN reached the socket itself and
/// nothing listens; the bind test then needs another socket.
fn self_connected(s: Socket, wildcard: SocketAddr) -> Result<bool> {
    if s.local_addr()? != s.peer_addr()? {
        return Ok(false);
    }
    drop(s);
    fresh_bind(wildcard)
}

fn fresh_bind(wildcard: SocketAddr) -> Result<bool> {
    let domain = if wildcard.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let t = Socket::new(domain, Type::STREAM)?;
    if wildcard.is_ipv6() {
        t.set_only_v6(false)?;
    }
    Ok(t.bind(wildcard).is_ok())
}

/// A random number from the process's OS-seeded hasher keys and a counter.
fn random_u64() -> u64 {
    static STATE: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = STATE.get_or_init(RandomState::new).build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

fn random_below(n: usize) -> usize {
    (random_u64() % n as u64) as usize
}

/// A random free port: from `candidates` if given, else from the good
/// ports; never one in `exclude`. Up to 100 random candidates are probed
/// with [`is_available`].
///
/// # Errors
///
/// `EADDRINUSE` (call `select_random`) when no probed candidate was free or
/// there were none.
pub fn select_random(candidates: Option<&[u16]>, exclude: &[u16]) -> Result<u16> {
    let fail = |n: usize| {
        Error::new(
            "select_random",
            format!(
                "no free port among {n} candidates ({} excluded)",
                exclude.len()
            ),
            errno::EADDRINUSE,
        )
    };
    match candidates {
        Some(list) => {
            let mut pool: Vec<u16> = list
                .iter()
                .copied()
                .filter(|p| *p != 0 && !exclude.contains(p))
                .collect();
            pool.sort_unstable();
            pool.dedup();
            let n = pool.len();
            for _ in 0..TRIES.min(n) {
                let p = pool.swap_remove(random_below(pool.len()));
                if is_available(p) {
                    return Ok(p);
                }
            }
            Err(fail(n))
        }
        None => {
            let ranges = good_ranges();
            let total: usize = ranges
                .iter()
                .map(|&(lo, hi)| usize::from(hi - lo) + 1)
                .sum();
            if total == 0 {
                return Err(fail(0));
            }
            let mut tried = [0u16; TRIES];
            for n in 0..TRIES {
                // Uniform over ports, so larger ranges are drawn from more.
                let mut i = random_below(total);
                let mut port = 0;
                for &(lo, hi) in ranges.iter() {
                    let len = usize::from(hi - lo) + 1;
                    if i < len {
                        port = lo + i as u16;
                        break;
                    }
                    i -= len;
                }
                if exclude.contains(&port) || tried[..n].contains(&port) {
                    continue;
                }
                tried[n] = port;
                if is_available(port) {
                    return Ok(port);
                }
            }
            Err(fail(total))
        }
    }
}

/// One element of a [`PortSpec`] list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortItem {
    /// One port.
    One(u16),
    /// An inclusive range, first <= last.
    Range(u16, u16),
}

/// Which ports [`get_port`] may return, as port-for's `get_port` takes
/// them: any good port, one exact port, or ranges and sets of ports.
///
/// Parses from `any`, `8000`, `8000-9000`, `8000,8001,8005`, and mixes such
/// as `2000-3000,4002,4003`, and prints back in the same form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortSpec {
    /// Any good free port.
    Any,
    /// This port, as given, unchecked (binding it reports a conflict).
    Exact(u16),
    /// A free port among these.
    Among(Vec<PortItem>),
}

/// Why a [`PortSpec`] didn't parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpecError {
    input: String,
    reason: String,
}

impl fmt::Display for PortSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad port spec {:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for PortSpecError {}

fn parse_port(s: &str) -> std::result::Result<u16, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("a port is missing".into());
    }
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{t:?} is not a port number"));
    }
    match t.parse::<u32>() {
        Ok(0) => Err("port 0 is not a port".into()),
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(format!("{t} is above 65535")),
    }
}

impl FromStr for PortSpec {
    type Err = PortSpecError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let err = |reason: String| PortSpecError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        if t.eq_ignore_ascii_case("any") {
            return Ok(Self::Any);
        }
        if t.is_empty() {
            return Err(err("empty (use \"any\" for any port)".into()));
        }
        if !t.contains(',') && !t.contains('-') {
            return parse_port(t).map(Self::Exact).map_err(err);
        }
        let mut items = Vec::new();
        for part in t.split(',') {
            let item = match part.split_once('-') {
                Some((a, b)) => {
                    let (lo, hi) = (parse_port(a).map_err(&err)?, parse_port(b).map_err(&err)?);
                    if lo > hi {
                        return Err(err(format!("range {lo}-{hi} is inverted")));
                    }
                    PortItem::Range(lo, hi)
                }
                None => PortItem::One(parse_port(part).map_err(&err)?),
            };
            items.push(item);
        }
        Ok(Self::Among(items))
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::Exact(p) => write!(f, "{p}"),
            Self::Among(items) => {
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    match it {
                        PortItem::One(p) => write!(f, "{p}")?,
                        PortItem::Range(a, b) => write!(f, "{a}-{b}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl PortSpec {
    /// The ports a list names, ascending and without repeats (empty for
    /// `Any`; the one port for `Exact`).
    pub fn ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = match self {
            Self::Any => Vec::new(),
            Self::Exact(p) => vec![*p],
            Self::Among(items) => items
                .iter()
                .flat_map(|it| match *it {
                    PortItem::One(p) => p..=p,
                    PortItem::Range(a, b) => a..=b,
                })
                .collect(),
        };
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// A port by port-for's `get_port` rules: `Any` gives a random good free
/// port, `Exact` gives that port unchecked, `Among` a random free port of
/// the list; never one in `exclude` (except an `Exact` port, given as is).
///
/// # Errors
///
/// As [`select_random`].
pub fn get_port(spec: &PortSpec, exclude: &[u16]) -> Result<u16> {
    match spec {
        PortSpec::Any => select_random(None, exclude),
        PortSpec::Exact(p) => Ok(*p),
        PortSpec::Among(_) => select_random(Some(&spec.ports()), exclude),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_parse_merge_and_refuse_junk() {
        assert_eq!(parse_port_list(""), Some(vec![]));
        assert_eq!(parse_port_list("\n"), Some(vec![]));
        assert_eq!(parse_port_list("8080\n"), Some(vec![(8080, 8080)]));
        assert_eq!(
            parse_port_list("9000-9100,8080, 9050-9200,9201,1"),
            Some(vec![(1, 1), (8080, 8080), (9000, 9201)])
        );
        assert_eq!(parse_port_list("0-65535"), Some(vec![(0, 65535)]));
        assert_eq!(parse_port_list("5-5"), Some(vec![(5, 5)]));
        // Adjacent but not touching stays apart.
        assert_eq!(parse_port_list("1-2,4"), Some(vec![(1, 2), (4, 4)]));
        assert_eq!(parse_port_list("1-2,3"), Some(vec![(1, 3)]));
        for bad in ["x", "10-5", "65536", "1-65536", "-5", "5-", "1,,x"] {
            assert_eq!(parse_port_list(bad), None, "{bad:?}");
        }
        // Reserved ports come out of the ephemeral range.
        let r = parse_port_list("40000-40009,60999").unwrap();
        assert_eq!(
            subtract(&[(32768, 60999)], &r),
            vec![(32768, 39999), (40010, 60998)]
        );
    }

    #[test]
    fn udp_and_tcp_availability_are_told_apart() {
        // A UDP socket on a port: free for TCP, not for UDP or both.
        let u = Socket::new(Domain::IPV4, Type::DGRAM).unwrap();
        u.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
            .unwrap();
        let p = u.local_addr().unwrap().port().unwrap();
        assert!(!is_available_for(p, Transport::Udp));
        assert!(!is_available_for(p, Transport::TcpAndUdp));
        // (TCP may be taken by a stranger meanwhile; only check it's not
        // refused for the UDP socket's sake when it is free.)
        let t = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
        if t.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, p))).is_ok() {
            drop(t);
            assert!(is_available_for(p, Transport::Tcp));
        }
        drop(u);
        // A TCP listener: taken for TCP and for both.
        let l = Socket::new(Domain::IPV4, Type::STREAM).unwrap();
        l.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        l.listen(1).unwrap();
        let q = l.local_addr().unwrap().port().unwrap();
        assert!(!is_available_for(q, Transport::Tcp));
        assert!(!is_available_for(q, Transport::TcpAndUdp));
        // UDP alone doesn't care about the TCP listener (when nothing holds
        // the UDP port).
        if udp_free(q).unwrap() {
            assert!(is_available_for(q, Transport::Udp));
        }
        assert!(!is_available_for(0, Transport::Udp));
    }

    #[test]
    fn subtract_cuts_ranges() {
        assert_eq!(
            subtract(&[(10, 20)], &[(12, 13), (20, 30)]),
            vec![(10, 11), (14, 19)]
        );
        assert_eq!(subtract(&[(10, 20)], &[(0, 65535)]), vec![]);
    }

    #[test]
    fn good_ranges_avoid_ephemeral_low_and_borders() {
        let eph = [(32768, 60999)];
        let good = good_ranges_for(&eph);
        assert!(!good.is_empty());
        for &(lo, hi) in &good {
            assert!(lo >= 1024 && lo <= hi);
            assert!(
                hi < 32768 || lo > 60999,
                "{lo}-{hi} overlaps the ephemeral range"
            );
            assert!(u32::from(hi) - u32::from(lo) >= MIN_RANGE_LEN);
            for p in [lo - BORDER, hi + BORDER] {
                assert!(
                    UNASSIGNED_RANGES.iter().any(|&(a, b)| (a..=b).contains(&p)),
                    "border {p} is unassigned"
                );
            }
        }
    }

    #[test]
    fn spec_parses_and_prints_back() {
        for s in [
            "8000",
            "8000-9000",
            "8000,8001,8005",
            "2000-3000,4002,4003",
            "any",
        ] {
            let spec: PortSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(spec.to_string().parse::<PortSpec>().unwrap(), spec);
        }
        assert_eq!("8000".parse::<PortSpec>().unwrap(), PortSpec::Exact(8000));
        assert_eq!(
            "2000-2002,4002".parse::<PortSpec>().unwrap().ports(),
            vec![2000, 2001, 2002, 4002]
        );
    }

    #[test]
    fn spec_errors_say_what_is_wrong() {
        let e = |s: &str| s.parse::<PortSpec>().unwrap_err().to_string();
        assert!(e("").contains("empty"));
        assert!(e("9000-8000").contains("range 9000-8000 is inverted"));
        assert!(e("0").contains("port 0"));
        assert!(e("70000").contains("70000 is above 65535"));
        assert!(e("8000-").contains("missing"));
        assert!(e("8000,,8001").contains("missing"));
        assert!(e("80a").contains("not a port number"));
        assert!(e("-5").contains("missing"));
    }
}
