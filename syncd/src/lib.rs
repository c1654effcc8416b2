//! `tandem-syncd`: the peer link between the two directors (connection-table replication,
//! heartbeats, roles, VIP takeover, health checks). Its content arrives with the sync issue;
//! see docs/architecture.md for where it fits.
#![forbid(unsafe_code)]
