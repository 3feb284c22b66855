//! Batched datagrams (`sendmmsg`/`recvmmsg`), UDP segmentation offload and
//! the path MTU, on real loopback sockets.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use procwire::sys::socket::{Domain, Socket, Type};
use procwire::sys::udp::{self, PathMtu, RecvBatch, MAX_SEGMENTS};

fn bound() -> (Socket, SocketAddr) {
    let s = Socket::new(Domain::IPV4, Type::DGRAM).expect("socket");
    s.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("bind");
    // A test that would block fails instead of hanging.
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("SO_RCVTIMEO");
    s.set_recv_buffer_size(4 << 20).expect("SO_RCVBUF");
    let a = s
        .local_addr()
        .expect("getsockname")
        .as_inet()
        .expect("inet");
    (s, a)
}

fn payload(i: usize) -> Vec<u8> {
    // Distinct lengths and contents, so a lost, doubled or reordered
    // datagram shows.
    (0..(1 + i * 7) % 1400)
        .map(|k| (i * 31 + k) as u8)
        .chain(std::iter::once(i as u8))
        .collect()
}

/// Receives until `want` datagrams came, in batches.
fn collect(rx: &Socket, batch: &mut RecvBatch, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut got = Vec::new();
    while got.len() < want {
        let n = rx.recv_batch(batch).expect("recvmmsg");
        assert!(n >= 1 && n == batch.len());
        for d in batch.iter() {
            assert!(!d.truncated);
            got.push((d.data.to_vec(), d.from.expect("sender")));
        }
    }
    got
}

#[test]
fn a_batch_goes_out_in_order_to_each_address_and_comes_back_in_batches() {
    let (tx, tx_addr) = bound();
    let (a, a_addr) = bound();
    let (b, b_addr) = bound();
    let datagrams: Vec<Vec<u8>> = (0..300).map(payload).collect();
    let msgs: Vec<(&[u8], SocketAddr)> = datagrams
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_slice(), if i % 3 == 0 { a_addr } else { b_addr }))
        .collect();
    let mut sent = 0;
    while sent < msgs.len() {
        let n = tx.send_batch(&msgs[sent..]).expect("sendmmsg");
        assert!(n >= 1);
        sent += n;
    }
    let mut batch = RecvBatch::new(64, 2048);
    let want_a: Vec<&Vec<u8>> = datagrams.iter().step_by(3).collect();
    let want_b: Vec<&Vec<u8>> = datagrams
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, d)| d)
        .collect();
    let got_a = collect(&a, &mut batch, want_a.len());
    let got_b = collect(&b, &mut batch, want_b.len());
    assert_eq!(got_a.len(), want_a.len());
    assert_eq!(got_b.len(), want_b.len());
    for (g, w) in got_a.iter().zip(want_a) {
        assert_eq!(&g.0, w);
        assert_eq!(g.1, tx_addr);
    }
    for (g, w) in got_b.iter().zip(want_b) {
        assert_eq!(&g.0, w);
        assert_eq!(g.1, tx_addr);
    }
}

#[test]
fn a_receive_takes_what_is_queued_without_waiting_for_a_full_batch() {
    let (tx, _) = bound();
    let (rx, rx_addr) = bound();
    let mut batch = RecvBatch::new(16, 100);
    rx.set_nonblocking(true).expect("O_NONBLOCK");
    let e = rx.recv_batch(&mut batch).expect_err("nothing queued");
    assert!(e.is_would_block(), "{e}");
    assert_eq!(e.call(), "recvmmsg");
    assert!(batch.is_empty());
    rx.set_nonblocking(false).expect("blocking");
    for i in 0..3u8 {
        tx.send_to(&[i; 5], rx_addr).expect("sendto");
    }
    // Blocking: it waits for the first, then takes the other two and
    // returns (a batch of 16 would otherwise wait for its read timeout).
    let t = std::time::Instant::now();
    let mut got = 0;
    while got < 3 {
        got += rx.recv_batch(&mut batch).expect("recvmmsg");
    }
    assert_eq!(got, 3);
    assert!(!batch.is_empty());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(batch.get(batch.len()).is_none());
}

#[test]
fn a_datagram_longer_than_its_slot_is_cut_and_says_so() {
    let (tx, _) = bound();
    let (rx, rx_addr) = bound();
    tx.send_to(&[7u8; 100], rx_addr).expect("sendto");
    tx.send_to(&[8u8; 10], rx_addr).expect("sendto");
    let mut batch = RecvBatch::new(4, 10);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        rx.recv_batch(&mut batch).expect("recvmmsg");
        seen.extend(batch.iter().map(|d| (d.data.to_vec(), d.truncated)));
    }
    assert_eq!(seen[0], (vec![7u8; 10], true));
    assert_eq!(seen[1], (vec![8u8; 10], false));
}

#[test]
fn a_batch_stops_at_a_datagram_the_protocol_refuses() {
    let (tx, _) = bound();
    let (rx, rx_addr) = bound();
    let big = vec![0u8; 70_000];
    let small = [1u8; 3];
    assert_eq!(tx.send_batch(&[]).expect("empty"), 0);
    let e = tx
        .send_batch(&[(&big, rx_addr), (&small, rx_addr)])
        .expect_err("70,000 bytes is no UDP datagram");
    assert_eq!(e.raw_os_error(), libc_emsgsize());
    assert!(e.to_string().contains("sendmmsg"), "{e}");
    // After a first that went, the batch says how many went.
    let n = tx
        .send_batch(&[(&small, rx_addr), (&big, rx_addr), (&small, rx_addr)])
        .expect("the first goes");
    assert_eq!(n, 1);
    let mut batch = RecvBatch::new(4, 16);
    assert_eq!(rx.recv_batch(&mut batch).expect("recvmmsg"), 1);
    assert_eq!(batch.get(0).expect("one").data, &small);
}

fn libc_emsgsize() -> i32 {
    // Linux's EMSGSIZE (the test's platform).
    90
}

#[test]
fn segments_arrive_as_separate_datagrams_or_gso_is_reported_missing() {
    let (tx, _) = bound();
    let (rx, rx_addr) = bound();
    assert_eq!(
        tx.send_segments(&[0; 10], 0, rx_addr)
            .expect_err("segment 0")
            .raw_os_error(),
        22
    );
    assert_eq!(
        tx.send_segments(&vec![0; MAX_SEGMENTS * 10 + 1], 10, rx_addr)
            .expect_err("too many segments")
            .raw_os_error(),
        22
    );
    if !udp::udp_gso_supported() {
        // Linux has had UDP GSO since 4.18: a kernel that new must have it.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut v = release
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|x| x.parse::<u32>().ok());
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        assert!(
            (major, minor) < (4, 18),
            "Linux {release} has UDP GSO, but the probe said no"
        );
        println!("skipped: this kernel has no UDP GSO (UDP_SEGMENT)");
        return;
    }
    // Exactly the most segments one call takes.
    let most = vec![9u8; MAX_SEGMENTS * 10];
    assert_eq!(
        tx.send_segments(&most, 10, rx_addr).expect("64 segments"),
        most.len()
    );
    // More than a UDP datagram holds in all: the kernel refuses it.
    assert!(tx.send_segments(&vec![0; 66_000], 1100, rx_addr).is_err());
    let buf: Vec<u8> = (0..10_500u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        tx.send_segments(&buf, 1000, rx_addr).expect("UDP_SEGMENT"),
        buf.len()
    );
    let mut batch = RecvBatch::new(32, 2000);
    let mut got: Vec<Vec<u8>> = Vec::new();
    while got.len() < MAX_SEGMENTS + 11 {
        rx.recv_batch(&mut batch).expect("recvmmsg");
        got.extend(batch.iter().map(|d| d.data.to_vec()));
    }
    assert_eq!(got.len(), MAX_SEGMENTS + 11);
    assert!(got[..MAX_SEGMENTS].iter().all(|d| d == &[9u8; 10]));
    for (i, d) in got[MAX_SEGMENTS..].iter().enumerate() {
        let want = &buf[i * 1000..((i + 1) * 1000).min(buf.len())];
        assert_eq!(d.as_slice(), want, "segment {i}");
    }
}

#[test]
fn the_path_mtu_of_loopback_is_its_device_mtu_and_needs_a_peer() {
    let (tx, _) = bound();
    let (_rx, rx_addr) = bound();
    let e = tx.path_mtu().expect_err("not connected");
    assert_eq!(e.raw_os_error(), 107, "{e}"); // ENOTCONN
    assert!(e.to_string().contains("IP_MTU"), "{e}");
    tx.set_path_mtu_discovery(PathMtu::Do)
        .expect("IP_MTU_DISCOVER");
    tx.connect(rx_addr).expect("connect");
    let mtu = tx.path_mtu().expect("IP_MTU");
    let dev: u32 = std::fs::read_to_string("/sys/class/net/lo/mtu")
        .expect("lo's MTU")
        .trim()
        .parse()
        .expect("a number");
    // The kernel caps it at the largest IPv4 packet.
    assert_eq!(mtu, dev.min(65_535));
    assert_eq!(udp::ipv4_payload(1500), 1472);
    assert_eq!(udp::ipv4_payload(20), 0);
    let unix = Socket::new(Domain::UNIX, Type::DGRAM).expect("socket");
    let e = unix
        .set_path_mtu_discovery(PathMtu::Do)
        .expect_err("not an IP socket");
    assert!(e.to_string().contains("IP_MTU_DISCOVER"), "{e}");
}

#[test]
fn a_batch_carries_ipv6_senders_too() {
    let lo6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0));
    let bind6 = || -> Option<(Socket, SocketAddr)> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM).ok()?;
        s.bind(lo6).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let a = s.local_addr().ok()?.as_inet()?;
        Some((s, a))
    };
    let (Some((tx, tx_addr)), Some((rx, rx_addr))) = (bind6(), bind6()) else {
        println!("skipped: no IPv6 loopback here");
        return;
    };
    let msgs: Vec<(&[u8], SocketAddr)> = vec![(b"one", rx_addr), (b"two", rx_addr)];
    assert_eq!(tx.send_batch(&msgs).expect("sendmmsg"), 2);
    let mut batch = RecvBatch::new(8, 16);
    let got = collect(&rx, &mut batch, 2);
    assert_eq!(got[0], (b"one".to_vec(), tx_addr));
    assert_eq!(got[1], (b"two".to_vec(), tx_addr));
}

#[test]
fn with_gro_joined_datagrams_come_apart_again_in_order() {
    let (tx, _) = bound();
    let (rx, rx_addr) = bound();
    if rx.set_udp_gro(true).is_err() || !udp::udp_gso_supported() {
        println!("skipped: this kernel has no UDP GRO or GSO");
        return;
    }
    let buf: Vec<u8> = (0..10_500u32).map(|i| (i % 253) as u8).collect();
    tx.send_segments(&buf, 1000, rx_addr).expect("UDP_SEGMENT");
    tx.send_to(b"single", rx_addr).expect("sendto");
    let mut batch = RecvBatch::new(8, 65_536);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut joined = false;
    while got.len() < 12 {
        rx.recv_batch(&mut batch).expect("recvmmsg");
        for d in batch.iter() {
            joined |= d.segment.is_some() && d.data.len() > 1000;
            got.extend(d.segments().map(<[u8]>::to_vec));
        }
    }
    assert!(joined, "loopback hands a GSO send to a GRO socket whole");
    assert_eq!(got.len(), 12);
    for (i, d) in got[..11].iter().enumerate() {
        assert_eq!(
            d.as_slice(),
            &buf[i * 1000..((i + 1) * 1000).min(buf.len())]
        );
    }
    assert_eq!(got[11], b"single");
    rx.set_udp_gro(false).expect("off again");
}
