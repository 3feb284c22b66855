//! Race-free port allocation and hand-off to child processes.
//!
//! The problem: a parent needs free ports for the children it starts, and
//! any gap between "found free" and "child bound it" is a race another
//! process can win. The answer here is to never leave a gap:
//!
//! - a [`Reservation`] holds a port with a socket bound with `SO_REUSEPORT`
//!   (not listening) until the child has exited; the child joins the hold
//!   with [`ReservedBind`] / [`bind_reserved`] and listens, while anyone
//!   else's bind fails (hand-off 1, by port number);
//! - or the listening socket itself is passed to the child by the systemd
//!   socket-activation protocol ([`pass_listeners`], [`listen_fds`]): no
//!   options, no window at all (hand-off 2);
//! - or, for a child that can only set `SO_REUSEADDR`, the port is parked in
//!   TIME_WAIT ([`reserve_time_wait`]) (hand-off 3);
//! - the process supervisor built on these ([`crate::net::supervisor`])
//!   starts N children with their ports and keeps every reservation until
//!   its child exits;
//! - for ports that must stay the same across restarts, [`select_random`] /
//!   [`get_port`] pick good ports (unassigned, outside the ephemeral range,
//!   free) and [`Registry`] remembers name -> port associations in
//!   port-for's file format, crash-safe and safe for concurrent writers;
//! - [`pick_unused_port`] is portpicker's call, returning the port held,
//!   and [`portserver`] speaks portpicker's portserver protocol, both
//!   sides.

mod activation;
mod good;
pub mod portserver;
mod registry;
mod reservation;
mod unassigned;

pub use activation::{listen_fds, pass_listeners, Activation, ListenFd, LISTEN_FDS_START};
pub use good::{
    available_good_ports, ephemeral_ranges, get_port, is_available, is_available_for, is_good,
    parse_port_list, select_random, unassigned_ranges, PortItem, PortSpec, PortSpecError,
    DEFAULT_EPHEMERAL_RANGE, PROBE_WAIT,
};
pub use registry::{check_name, parse_port, Registry, RegistryError, PATH_VARIABLE, SYSTEM_PATH};
#[cfg(feature = "testing")]
pub use registry::{parse_text, rewrite_text};
pub use reservation::{
    bind_reserved, pick_unused_port, reserve_many, reserve_time_wait, Reservation,
    ReservationBuilder, ReservedBind, Transport,
};
