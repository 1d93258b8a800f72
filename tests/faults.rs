//! Faults on purpose, against a running node: every byte a client receives is compared with
//! the origin's.
//!
//! - [`crash`]: kill -9 under load with disk faults injected each round, restarts, and what
//!   was stored before the kill still a hit afterwards (`STRATA_FAULT_ROUNDS` rounds, at least
//!   `STRATA_FAULT_MINUTES` minutes: `scripts/faults` runs the long mode);
//! - [`disk`]: a region that keeps failing taken out of use; a full device;
//! - [`origin`]: origins that refuse, reset, stall, lie about lengths, storm 5xx, trickle;
//! - [`clients`]: slowloris headers, idle connections, clients that stop reading or leave.
//!
//! Built with the `failpoints` feature (the node's admin API then sets the storage crate's
//! failpoints): `cargo test --features failpoints --test faults`.

mod common;

#[path = "faults/clients.rs"]
mod clients;
#[path = "faults/crash.rs"]
mod crash;
#[path = "faults/disk.rs"]
mod disk;
#[path = "faults/harness.rs"]
mod harness;
#[path = "faults/origin.rs"]
mod origin;
