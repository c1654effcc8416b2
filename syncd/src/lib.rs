//! `tandem-syncd`: the peer link between the two directors — connection-table replication
//! ([`repl`]) and the active/standby role machine ([`role`]) — as sans-IO state machines, and
//! the daemon that drives them ([`daemon`]): the `tandem.sync.v1.Peer` service over gRPC with
//! mutual TLS ([`tls`]) on the sync link, the local dataplane's `Local` service ([`local`]),
//! and the conversions between the wire and the machines ([`wire`]). The machines read no
//! clock, spawn no thread and touch no socket, so the pair tests run two of them against a
//! simulated network in virtual time; [`localref`] is an in-process `Local` server on the
//! core's `ConnTable` that the daemon's tests run against. [`health`] checks the real servers
//! and reports their health to the dataplane while this director is active. See docs/failover.md.
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod health;
pub mod local;
pub mod localref;
pub mod repl;
pub mod role;
pub mod tls;
pub mod wire;
