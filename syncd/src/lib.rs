//! `tandem-syncd`: the peer link between the two directors — connection-table replication
//! ([`repl`]) and the active/standby role machine ([`role`]) — as sans-IO state machines. The
//! gRPC glue (the `tandem.sync.v1` services over mTLS, the dataplane's local socket) drives
//! them: it passes `now` and the incoming messages in, and sends what they put out. Nothing
//! here reads a clock, spawns a thread or touches a socket, so the pair tests run two of them
//! against a simulated network in virtual time. See docs/failover.md.
#![forbid(unsafe_code)]

pub mod repl;
pub mod role;
