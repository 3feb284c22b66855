//! What every example program does alike on its command line: `--help`
//! prints the usage on stdout and exits 0; a bad flag or value prints the
//! problem and the usage on stderr and exits 2 ([`usage_error`]); and output
//! into a closed pipe (`port-for --list | head -1`) never panics. A program
//! whose work is its output then ends quietly with status 0; a server or a
//! supervisor ([`keep_running_without_stdout`]) drops what it would print and
//! goes on, so its children and sockets are cleaned up as usual.
//!
//! Programs print with `outln!` and `out!` (the `println!`/`print!` of this
//! module), included as `#[macro_use] #[path = "cli/mod.rs"] mod cli;`.
#![allow(dead_code, unused_macros)]

#[path = "rng.rs"]
mod rng;
#[allow(unused_imports)]
pub use rng::Rng;

use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

static KEEP_RUNNING: AtomicBool = AtomicBool::new(false);
static CLOSED: AtomicBool = AtomicBool::new(false);

/// For servers and supervisors: once stdout is closed, output is dropped
/// and the program goes on.
pub fn keep_running_without_stdout() {
    KEEP_RUNNING.store(true, Ordering::Relaxed);
}

/// Whether stdout has been found closed.
pub fn stdout_closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

fn closed() {
    CLOSED.store(true, Ordering::Relaxed);
    if !KEEP_RUNNING.load(Ordering::Relaxed) {
        std::process::exit(0);
    }
}

/// Writes to stdout (what `out!` and `outln!` call).
pub fn out(args: fmt::Arguments<'_>) {
    if stdout_closed() {
        return;
    }
    if std::io::stdout().lock().write_fmt(args).is_err() {
        closed();
    }
}

/// Flushes stdout, with the same rule for a closed pipe.
pub fn flush() {
    if !stdout_closed() && std::io::stdout().flush().is_err() {
        closed();
    }
}

/// Prints `usage` on stdout (for `--help`); status 0.
pub fn help(usage: &str) -> ExitCode {
    out(format_args!("{usage}\n"));
    ExitCode::SUCCESS
}

/// Prints `prog: msg` and the usage on stderr; status 2.
pub fn usage_error(prog: &str, usage: &str, msg: impl fmt::Display) -> ExitCode {
    eprintln!("{prog}: {msg}\n\n{usage}");
    ExitCode::from(2)
}

/// `println!` to stdout, quiet on a closed pipe.
macro_rules! outln {
    () => {
        $crate::cli::out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` to stdout, quiet on a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out(format_args!($($arg)*))
    };
}
