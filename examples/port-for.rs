//! A `port-for` compatible command: finds a good free port for a name and
//! remembers the association, in port-for's own file format, so scripts
//! written for port-for work unchanged.
//!
//! ```text
//! cargo run --example port-for -- NAME
//! cargo install --path .          # installs port-for (and the other programs)
//! ```

// The binary in src/bin has its own copy at the crate root, which the
// macros and `crate::cli` paths name.
#[allow(clippy::duplicate_mod, unused_imports)]
#[macro_use]
#[path = "cli/mod.rs"]
mod cli;

use std::process::ExitCode;

use procwire::net::port::{get_port, parse_port, PortSpec, Registry, RegistryError};

const USAGE: &str = "port-for: find a good unused TCP port and remember it by name.

Usage:
    port-for <NAME>
    port-for --bind <NAME>
    port-for --bind <NAME> --port <NUMBER>
    port-for <NAME> --port <NUMBER>
    port-for --unbind <NAME>
    port-for --list
    port-for --select [SPEC]
    port-for --version
    port-for --help

Options:
  -h --help             Show this screen.
  -v, --version         Show version.
  -b FOO, --bind FOO    Find and return a port for FOO; this is an alias for
                        'port-for FOO'.
  -p PORT, --port PORT  (Optional) specific port number for the --bind command.
  -u FOO, --unbind FOO  Remove association for FOO.
  -l, --list            List all associated ports.
  --select [SPEC]       Print a good free port without storing it; SPEC limits
                        the choice: 8000-9000, 8000,8001,8005, 2000-3000,4002.
  --conf PATH           Use this registry file (also: $PORT_FOR_CONF).

A port is good when it is free, not IANA-assigned, outside this host's
ephemeral range and not next to an assigned port. The registry is
/etc/port-for.conf where writable, else a per-user file.";

enum Action {
    Bind(String, Option<u16>),
    Unbind(String),
    List,
    Select(Option<String>),
    Version,
    Help,
}

fn parse() -> Result<(Action, Option<String>), lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let (mut name, mut bind, mut unbind, mut port, mut conf) = (None, None, None, None, None);
    let (mut list, mut version, mut help, mut select) = (false, false, false, None);
    while let Some(arg) = p.next()? {
        match arg {
            Short('b') | Long("bind") => bind = Some(p.value()?.string()?),
            Short('p') | Long("port") => port = Some(p.value()?.string()?),
            Short('u') | Long("unbind") => unbind = Some(p.value()?.string()?),
            Short('l') | Long("list") => list = true,
            Short('v') | Long("version") => version = true,
            Short('h') | Long("help") => help = true,
            Long("conf") => conf = Some(p.value()?.string()?),
            Long("select") => select = Some(p.optional_value().map(|v| v.string()).transpose()?),
            Value(v) if name.is_none() => name = Some(v.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    let action = if help {
        Action::Help
    } else if version {
        Action::Version
    } else if let Some(spec) = select {
        // `--select 8000-9000`: the spec comes as the next argument.
        Action::Select(spec.or(name))
    } else if let Some(n) = name.or(bind) {
        // A bad port is a usage error, found before anything is written.
        let port = match port {
            Some(p) => Some(parse_port(&p).map_err(|e| lexopt::Error::from(e.to_string()))?),
            None => None,
        };
        Action::Bind(n, port)
    } else if let Some(n) = unbind {
        Action::Unbind(n)
    } else if list {
        Action::List
    } else {
        return Err("nothing to do: give a NAME or an option (see --help)".into());
    };
    Ok((action, conf))
}

/// The program (also run by the installable binary of the same name).
pub fn main() -> ExitCode {
    let (action, conf) = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("port-for: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let registry = match conf {
        Some(path) => Registry::at(path),
        None => Registry::open_default(),
    };
    match run(action, &registry) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let hint = match e.downcast_ref::<RegistryError>() {
                Some(r) if r.is_permission() => " (or --conf PATH)",
                _ => "",
            };
            eprintln!("port-for: {e}{hint}");
            ExitCode::FAILURE
        }
    }
}

fn run(action: Action, registry: &Registry) -> Result<(), Box<dyn std::error::Error>> {
    match action {
        Action::Help => outln!("{USAGE}"),
        Action::Version => outln!(
            "port-for {} (procwire; port-for 0.7 compatible)",
            env!("CARGO_PKG_VERSION")
        ),
        Action::Bind(name, None) => outln!("{}", registry.get_or_assign(&name)?),
        Action::Bind(name, Some(port)) => outln!("{}", registry.bind(&name, port)?),
        Action::Unbind(name) => {
            registry.unbind(&name)?;
        }
        Action::List => {
            for (name, port) in registry.list()? {
                outln!("{name}: {port}");
            }
        }
        Action::Select(spec) => {
            let spec: PortSpec = spec.as_deref().unwrap_or("any").parse()?;
            let taken: Vec<u16> = registry
                .list()
                .map(|l| l.into_iter().map(|(_, p)| p).collect())
                .unwrap_or_default();
            outln!("{}", get_port(&spec, &taken)?);
        }
    }
    Ok(())
}
