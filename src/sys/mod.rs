//! Thin safe wrappers over the system calls the crate needs, one file per
//! family of calls. This is the only layer that calls rustix or libc.
//!
//! Every fallible call returns [`Result`] with an [`Error`] that names the
//! call, the arguments that matter and the errno. Every descriptor is owned
//! ([`std::os::fd::OwnedFd`] or a type holding one) and close-on-exec unless
//! a call says otherwise.

pub mod cpu;
pub mod error;
pub mod event;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub mod eventfd;
pub mod fd;
pub mod fdpass;
pub mod futex;
#[cfg(target_os = "linux")]
pub mod interpose;
pub mod process;
pub mod shm;
pub mod signal;
pub mod socket;
pub mod sockopt;
#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd"
))]
pub mod sysctl;
pub mod udp;

pub use error::{errno, Errno, Error, Result};

/// The decimal digits of `v`, most significant first, and how many there
/// are: for paths and environment entries built where nothing may allocate
/// (after `fork`, in a preloaded wrapper).
pub(crate) fn decimal(mut v: u32) -> ([u8; 10], usize) {
    let mut rev = [0u8; 10];
    let mut n = 0;
    loop {
        rev[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut out = [0u8; 10];
    for i in 0..n {
        out[i] = rev[n - 1 - i];
    }
    (out, n)
}

#[cfg(test)]
mod decimal_tests {
    #[test]
    fn decimal_gives_every_digit_in_order() {
        for (v, want) in [
            (0, "0"),
            (7, "7"),
            (10, "10"),
            (1234567, "1234567"),
            (u32::MAX, "4294967295"),
        ] {
            let (d, n) = super::decimal(v);
            assert_eq!(&d[..n], want.as_bytes());
        }
    }
}
