//! The preload under real programs: a purpose-built C program
//! (`tests/prog/unixprog.c`) run with and without the library on either
//! side, compared output for output, and unmodified `socat`, `redis-server`
//! with `redis-cli`, and `nc`, where they are installed. Every accelerated
//! run also reads the library's report and fails if nothing was
//! accelerated where it should have been.
//!
//! This file runs the suite with every preloaded process in safe mode.

#![cfg(target_os = "linux")]

const MODE: &str = "safe";
const OTHER: &str = "fast";

include!("suite/all.rs");
