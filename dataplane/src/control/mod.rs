//! The control plane inside the dataplane process: the running configuration and every
//! change the admin API makes to it ([`state`]), the lock-free figures the lcores publish for
//! it ([`board`]), the health verdicts on real servers ([`health`]), the commands it sends
//! them ([`command`]), and the gRPC server ([`server`]).
//! See `docs/architecture.md`, "Control plane".

pub mod board;
pub mod command;
pub mod health;
pub mod server;
pub mod state;
