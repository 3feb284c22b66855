//! Helpers shared by the test files that run the example programs.

use std::path::PathBuf;

/// The path of example `name` as `cargo test` builds it (next to the test
/// binary's directory, in `examples/`); panics with a hint when missing.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps")
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} is not built (cargo test builds the examples)",
        p.display()
    );
    p
}
