//! A network of hosts on one machine, for running the peer-server-peer
//! programs (and their baselines) over real links instead of loopback.
//!
//! Each host is a network namespace with one interface, `eth0`, whose
//! other end (a veth pair) is a port of a bridge in a namespace of its own
//! (the switch), so no host sees the machine's own network and the machine
//! sees none of them. Hosts get `10.77.H.L/16` addresses (host 0 is
//! 10.77.0.1), the links the MTU asked for (1500 by default), and
//! optionally a token-bucket rate limit (`tbf`) in both directions of each
//! link. Programs run on a host through `ip netns exec`.
//!
//! Everything is named `pwnet-<pid>-...` after the process that made it,
//! and removed when the [`Network`] is dropped (the caller also drops it on
//! Ctrl-C); [`sweep_stale`] removes what a killed process left behind, so a
//! second run never finds leftovers. Making namespaces needs root (or
//! `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`); without it [`Network::create`]
//! says so in one line.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

/// The prefix of every namespace this module makes.
const PREFIX: &str = "pwnet-";

/// The first address of the hosts' range; host `i` is this plus `i + 1`.
const BASE: [u8; 2] = [10, 77];

/// Hosts one network may have (the /16 minus the switch's share).
pub const MAX_HOSTS: usize = 60_000;

/// A link rate for `tbf`, in bits per second, from `tc`'s spelling:
/// a number with `bit`, `kbit`, `mbit` or `gbit` (powers of 1000).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("rate {s:?} needs a unit: bit, kbit, mbit or gbit"))?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("rate {s:?} must start with a number"))?;
    let mult = match unit {
        "bit" => 1,
        "kbit" => 1_000,
        "mbit" => 1_000_000,
        "gbit" => 1_000_000_000,
        _ => return Err(format!("rate {s:?}: the unit is bit, kbit, mbit or gbit")),
    };
    match n.checked_mul(mult) {
        Some(0) => Err(format!("rate {s:?} must be more than 0")),
        Some(v) => Ok(v),
        None => Err(format!("rate {s:?} is too large")),
    }
}

/// Host `i`'s address.
pub fn host_addr(i: usize) -> Ipv4Addr {
    let n = i + 1;
    Ipv4Addr::new(BASE[0], BASE[1], (n >> 8) as u8, (n & 0xff) as u8)
}

/// Runs `ip`/`tc` with `args`; its stderr in the error.
fn run(prog: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("{prog} not found (apt-get install iproute2)")
            }
            _ => format!("{prog}: {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces `ip netns list` shows.
fn namespaces() -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the namespaces of networks whose process is gone (killed before
/// it could clean up). Namespaces of live processes are left alone.
pub fn sweep_stale() {
    for ns in namespaces() {
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "delete", &ns]);
        }
    }
}

/// Hosts in network namespaces on one bridge; see the module docs.
pub struct Network {
    switch: String,
    hosts: Vec<String>,
    mtu: u32,
}

impl Network {
    /// Makes `hosts` hosts (at least 1) on one bridge, links of `mtu` bytes
    /// (68 to 65535), each limited to `rate` bits per second in each
    /// direction when given.
    ///
    /// # Errors
    ///
    /// One line saying what failed: no privileges, no `ip`/`tc`, or the
    /// command that failed with its message. What was made is removed.
    pub fn create(hosts: usize, mtu: u32, rate: Option<u64>) -> Result<Self, String> {
        if hosts == 0 || hosts > MAX_HOSTS {
            return Err(format!("a network has 1 to {MAX_HOSTS} hosts, not {hosts}"));
        }
        if !(68..=65_535).contains(&mtu) {
            return Err(format!("--mtu must be 68 to 65535, not {mtu}"));
        }
        sweep_stale();
        let pid = std::process::id();
        let mut net = Self {
            switch: format!("{PREFIX}{pid}-sw"),
            hosts: Vec::new(),
            mtu,
        };
        run("ip", &["netns", "add", &net.switch]).map_err(|e| {
            if e.contains("Operation not permitted") || e.contains("Permission denied") {
                "making network namespaces needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN)"
                    .to_string()
            } else {
                e
            }
        })?;
        let sw = net.switch.clone();
        run("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &sw, "link", "set", "br0", "up"])?;
        // A switch forwards frames; it does not run the firewall on them
        // (with br_netfilter loaded the kernel would, in this namespace).
        for key in ["iptables", "ip6tables", "arptables"] {
            let k = format!("net.bridge.bridge-nf-call-{key}=0");
            let _ = run("ip", &["netns", "exec", &sw, "sysctl", "-qw", &k]);
        }
        let mtu_s = mtu.to_string();
        for i in 0..hosts {
            let ns = format!("{PREFIX}{pid}-h{i}");
            run("ip", &["netns", "add", &ns])?;
            net.hosts.push(ns.clone());
            let port = format!("p{i}");
            run(
                "ip",
                &[
                    "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                    "netns", &sw,
                ],
            )?;
            let addr = format!("{}/16", host_addr(i));
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "mtu", &mtu_s])?;
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &sw, "link", "set", &port, "mtu", &mtu_s])?;
            run("ip", &["-n", &sw, "link", "set", &port, "master", "br0"])?;
            run("ip", &["-n", &sw, "link", "set", &port, "up"])?;
            if let Some(bits) = rate {
                // Out of the host on its eth0, into it on the switch's port.
                net.limit(&ns, "eth0", bits)?;
                net.limit(&sw, &port, bits)?;
            }
        }
        Ok(net)
    }

    /// A token bucket of `bits` per second on `dev` in `ns`: a burst of
    /// 10 ms of the rate (at least 64 KiB, so a full-sized TSO packet
    /// passes), 50 ms of queue before drops.
    fn limit(&self, ns: &str, dev: &str, bits: u64) -> Result<(), String> {
        let burst = (bits / 8 / 100).max(64 << 10).to_string();
        let rate = format!("{bits}bit");
        run(
            "ip",
            &[
                "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                &rate, "burst", &burst, "latency", "50ms",
            ],
        )
    }

    /// How many hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there is no host (never, once made).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The links' MTU.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Host `i`'s namespace name.
    pub fn name(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// A command that runs `program` on host `i`.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i]]).arg(program);
        c
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // A namespace's interfaces go with it; the veth pairs, the bridge
        // and the qdiscs with them.
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            let _ = run("ip", &["netns", "delete", ns]);
        }
    }
}
