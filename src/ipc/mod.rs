//! The shared-memory transport: a connection that starts on a Unix-domain
//! socket and moves its bytes through two single-producer single-consumer
//! rings in a shared segment. Built on [`crate::sys`] only.
//!
//! This layer is being built; the segments and mappings it will use are in
//! [`crate::sys::shm`], its wake-ups in `crate::sys::futex` (Linux).
