//! The `cache_server` program as an installable binary (`cargo install procwire`);
//! its source is the example `examples/cache_server/main.rs`, which `cargo run --example cache_server`
//! also builds.

#[macro_use]
#[path = "../../examples/cli/mod.rs"]
mod cli;

#[path = "../../examples/cache_server/main.rs"]
mod program;

fn main() -> std::process::ExitCode {
    program::main()
}
