//! Time per `select_random` and per `get_or_assign` (a new name each time),
//! against one availability probe done by hand: a plain bind of
//! 127.0.0.1:0 plus close (socket2, no options, no listen), in the same
//! run. Medians over rounds; one `RATIO` line per case.
//!
//! `select_random` probes its pick as `is_available` defines: a connect to
//! 127.0.0.1 that must be refused and a bind of the dual-stack wildcard,
//! both on one socket. The refused connect (SYN, RST) costs about one more
//! socket in the kernel, so the floor is about 2x one plain bind.
//!
//! `cargo bench --bench port_select`

use std::hint::black_box;
use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};
use std::time::Instant;

use procwire::net::port::{select_random, Registry};

const ROUNDS: usize = 15;

fn per_op(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let dir = std::env::temp_dir().join(format!("procwire-bench-registry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let any = socket2::SockAddr::from(any);
    let bind = |_| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        s.bind(&any).expect("bind");
        drop(black_box(s));
    };
    let select = |_| {
        black_box(select_random(None, &[]).expect("a free port"));
    };
    // Warm up (the good-port table is built on first use).
    per_op(500, bind);
    per_op(500, select);
    let (mut base, mut sel, mut assign) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        base.push(per_op(2000, bind));
        sel.push(per_op(2000, select));
        // A fresh registry per round, 50 new names: the file stays small.
        let path = dir.join(format!("r{round}.conf"));
        let reg = Registry::at(&path);
        assign.push(per_op(50, |i| {
            black_box(reg.get_or_assign(&format!("name-{i}")).expect("assign"));
        }));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (base, sel, assign) = (median(base), median(sel), median(assign));
    println!("bind(127.0.0.1:0) + close:        {base:.0} ns/op (median of {ROUNDS} rounds)");
    println!("select_random():                  {sel:.0} ns/op");
    println!("Registry::get_or_assign(new name): {assign:.0} ns/op (lock, read, probe, write, 2 fsyncs, rename)");
    println!(
        "RATIO port_select/select_random = {:.2} goal <= 3",
        sel / base
    );
    // Two fsyncs dominate; port-for's select_random alone takes 13-20 ms.
    println!(
        "RATIO port_select/get_or_assign = {:.0} goal <= 1000",
        assign / base
    );
}
