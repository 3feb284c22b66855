//! Time per port reservation against what people do today: a plain
//! `std::net::TcpListener::bind("127.0.0.1:0")` plus `local_addr()`.
//!
//! Both run in the same process, in alternating batches; the figure of each
//! is the median over the rounds. Ends with one `RATIO` line per case.
//!
//! `cargo bench --bench reservation`

use std::hint::black_box;
use std::net::{SocketAddr, TcpListener};
use std::time::Instant;

use procwire::net::port::Reservation;

const ROUNDS: usize = 21;
const BATCH: usize = 2000;

fn per_op(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..BATCH {
        f();
    }
    t.elapsed().as_nanos() as f64 / BATCH as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let std_bind = || {
        let l = TcpListener::bind(any).expect("bind");
        black_box(l.local_addr().expect("local_addr"));
    };
    let ours_v4 = || {
        let r = Reservation::new(any).expect("reserve");
        black_box(r.port());
    };
    let ours_localhost = || {
        let r = Reservation::localhost().expect("reserve");
        black_box(r.port());
    };
    // Warm up the paths and the allocator.
    for _ in 0..3 {
        per_op(std_bind);
        per_op(ours_v4);
        per_op(ours_localhost);
    }
    let (mut base, mut v4, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        base.push(per_op(std_bind));
        v4.push(per_op(ours_v4));
        both.push(per_op(ours_localhost));
    }
    let (base, v4, both) = (median(base), median(v4), median(both));
    println!("TcpListener::bind(127.0.0.1:0) + local_addr: {base:.0} ns/op (median of {ROUNDS} x {BATCH})");
    println!("Reservation::new(127.0.0.1:0) + port:         {v4:.0} ns/op");
    println!("Reservation::localhost() (127.0.0.1 and ::1): {both:.0} ns/op");
    println!("RATIO reservation/ipv4 = {:.2} goal <= 1.1", v4 / base);
    // Two holds (two sockets, two binds) against one listener.
    println!(
        "RATIO reservation/localhost = {:.2} goal <= 2.2",
        both / base
    );
}
