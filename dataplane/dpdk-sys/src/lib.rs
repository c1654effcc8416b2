//! Raw FFI bindings to DPDK 22.11, generated at build time by bindgen from the system's
//! headers (`pkg-config libdpdk`), allowlisted to `rte_*`.
//!
//! Three kinds of symbols live here:
//! - DPDK's exported functions and types, as bindgen emits them;
//! - DPDK's `static inline` functions (`rte_eth_rx_burst`, `rte_pktmbuf_alloc`, ...), reached
//!   through C wrappers that bindgen's `wrap_static_fns` generates and `build.rs` compiles;
//! - `tandem_*` shim functions (`csrc/shim.c`) for what is a macro or thread-local state in C:
//!   `rte_errno`, `rte_pktmbuf_mtod`, the mbuf length macros.
//!
//! Nothing else: the safe API is the `tandem-dpdk` crate.

// Generated code: none of our naming or clippy lints apply to it.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all, clippy::pedantic, clippy::nursery, clippy::restriction)]
#![allow(unsafe_op_in_unsafe_fn, missing_debug_implementations)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
