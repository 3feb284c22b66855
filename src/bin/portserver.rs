//! The `portserver` program as an installable binary (`cargo install procwire`);
//! its source is the example `examples/portserver.rs`, which `cargo run --example portserver`
//! also builds.

#[macro_use]
#[path = "../../examples/cli/mod.rs"]
mod cli;

#[path = "../../examples/portserver.rs"]
mod program;

fn main() -> std::process::ExitCode {
    program::main()
}
