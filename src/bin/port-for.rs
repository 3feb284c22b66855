//! The `port-for` program as an installable binary (`cargo install procwire`);
//! its source is the example `examples/port-for.rs`, which `cargo run --example port-for`
//! also builds.

#[macro_use]
#[path = "../../examples/cli/mod.rs"]
mod cli;

#[path = "../../examples/port-for.rs"]
mod program;

fn main() -> std::process::ExitCode {
    program::main()
}
