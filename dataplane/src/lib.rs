//! The Tandem director's dataplane as a library: its configuration file format and its stats
//! file, shared with the tools that generate and read them (the virtual rack). The DPDK
//! process itself is `src/main.rs`.
#![forbid(unsafe_code)]

pub mod build;
pub mod config;
pub mod control;
pub mod metrics;
pub mod stats;
pub mod sync;
