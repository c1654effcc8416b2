//! Generates the DPDK bindings at build time from the system's DPDK (found with
//! `pkg-config libdpdk`), compiles bindgen's wrappers for DPDK's `static inline` functions
//! and our shim, and links DPDK. No network access.

use std::env;
use std::path::PathBuf;

fn main() {
    let dpdk = match pkg_config::Config::new()
        .atleast_version("22.11")
        .cargo_metadata(true)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => panic!(
            "dpdk-sys: DPDK >= 22.11 not found via pkg-config ({e}); run scripts/setup.sh \
             (Debian packages dpdk-dev libdpdk-dev)"
        ),
    };

    // The cflags pkg-config reports, verbatim: include paths, `-include rte_config.h`,
    // `-march=...` (which selects the same inline implementations DPDK was built with).
    let cflags = pkg_config::get_variable("libdpdk", "cflags").ok();
    let cflags: Vec<String> = match pkg_config_cflags() {
        Some(v) => v,
        None => cflags
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    };

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let csrc = manifest.join("csrc");
    let wrapper = csrc.join("wrapper.h");
    let extern_c = out.join("static_fns.c");

    println!("cargo:rerun-if-changed={}", wrapper.display());
    println!("cargo:rerun-if-changed={}", csrc.join("shim.c").display());

    let bindings = bindgen::Builder::default()
        .header(wrapper.to_string_lossy())
        .clang_args(&cflags)
        .clang_arg(format!("-I{}", csrc.display()))
        .allowlist_function("rte_.*|tandem_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*|RING_F_.*")
        // Packed structs that contain aligned members: Rust cannot represent them faithfully,
        // so they stay opaque (we parse these headers in safe Rust anyway).
        .opaque_type("rte_arp_ipv4|rte_arp_hdr|rte_gtp_.*|rte_l2tpv2_.*|rte_ecpri_.*")
        .layout_tests(true)
        .derive_default(true)
        .derive_debug(true)
        .impl_debug(false)
        .prepend_enum_name(false)
        .generate_comments(false)
        .wrap_static_fns(true)
        .wrap_static_fns_path(out.join("static_fns"))
        .generate()
        .unwrap_or_else(|e| panic!("dpdk-sys: bindgen failed on {}: {e}", wrapper.display()));

    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("dpdk-sys: cannot write bindings.rs");

    let mut build = cc::Build::new();
    build
        .file(&extern_c)
        .file(csrc.join("shim.c"))
        .include(&csrc)
        .include(&manifest)
        .warnings(false)
        .opt_level(3);
    for inc in &dpdk.include_paths {
        build.include(inc);
    }
    for flag in cflags.iter().filter(|f| !f.starts_with("-I")) {
        build.flag(flag);
    }
    // `-include rte_config.h` comes as two words; cc's flag() keeps them in order.
    build.compile("tandem_dpdk_shim");
}

/// `pkg-config --cflags libdpdk` split into words (the `pkg_config` crate exposes include
/// paths but not the other flags, which bindgen and cc both need).
fn pkg_config_cflags() -> Option<Vec<String>> {
    let out =
        std::process::Command::new(env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into()))
            .args(["--cflags", "libdpdk"])
            .output()
            .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}
