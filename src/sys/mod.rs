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
