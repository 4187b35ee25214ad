//! Build steps:
//! 1. The C header: cbindgen over `src/ffi/mod.rs` into `$OUT_DIR/fe_php.h`.
//!    `make header` (FEPHP_UPDATE_HEADER=1) also writes the committed
//!    `include/fe_php.h`; a test fails when the committed copy is stale.
//! 2. The PHP SAPI shim, when PHP's headers are present (`php-config`): `csrc/` is
//!    compiled into `$OUT_DIR/libfephp_sapi.so` (embedded into the library and loaded
//!    at run time after libphp; no build-time link to libphp), and bindgen turns
//!    `csrc/fephp_sapi.h` into Rust. Without php-config the embedded backend is left
//!    out and reports "not built". FEPHP_NO_EMBEDDED=1 leaves it out on purpose.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    generate_header(&dir, &out);
    // The soname carries the major version: hosts link against libfe_php.so.MAJOR.
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("CARGO_PKG_VERSION_MAJOR");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libfe_php.so.{major}");
    println!("cargo:rustc-check-cfg=cfg(fephp_embedded)");
    // `cargo fuzz` builds with --cfg fuzzing (src/backends/fastcgi/mod.rs).
    println!("cargo:rustc-check-cfg=cfg(fuzzing)");
    build_sapi_shim(&dir, &out);
}

fn generate_header(dir: &Path, out: &Path) {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=FEPHP_UPDATE_HEADER");
    let config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml is readable");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen could not generate the header from src/ffi/mod.rs");
    bindings.write_to_file(out.join("fe_php.h"));
    if std::env::var_os("FEPHP_UPDATE_HEADER").is_some_and(|v| v == "1") {
        bindings.write_to_file(dir.join("include/fe_php.h"));
    }
}

/// The SAPI shim's sources: the SAPI itself and worker mode, with their headers.
const SHIM_FILES: &[&str] = &[
    "fephp_sapi.c",
    "fephp_worker.c",
    "fephp_sapi.h",
    "fephp_shim.h",
];

fn build_sapi_shim(dir: &Path, out: &Path) {
    for file in SHIM_FILES {
        println!("cargo:rerun-if-changed=csrc/{file}");
    }
    println!("cargo:rerun-if-env-changed=FEPHP_NO_EMBEDDED");
    println!("cargo:rerun-if-env-changed=PHP_CONFIG");
    if std::env::var_os("FEPHP_NO_EMBEDDED").is_some_and(|v| v == "1") {
        return;
    }
    let php_config = std::env::var("PHP_CONFIG").unwrap_or_else(|_| "php-config".to_owned());
    let includes = match Command::new(&php_config).arg("--includes").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => {
            // Installing php8.2-dev later must rebuild with the backend, not keep
            // this result (a missing path makes cargo rerun this script).
            let path = if php_config.contains('/') {
                php_config.clone()
            } else {
                format!("/usr/bin/{php_config}")
            };
            println!("cargo:rerun-if-changed={path}");
            println!(
                "cargo:warning=php-config not found: building without the embedded backend (apt-get install php8.2-dev to include it)"
            );
            return;
        }
    };
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let shim = out.join("libfephp_sapi.so");
    let status = Command::new(&cc)
        .args([
            "-shared", "-fPIC", "-O2", "-g", "-Wall", "-Wextra", "-Werror",
        ])
        .args(["-Wno-unused-parameter", "-Wno-missing-field-initializers"])
        .args(includes.split_whitespace())
        .arg("-o")
        .arg(&shim)
        .args(
            SHIM_FILES
                .iter()
                .filter(|f| f.ends_with(".c"))
                .map(|f| dir.join("csrc").join(f)),
        )
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(status.success(), "compiling the SAPI shim (csrc/) failed");

    bindgen::Builder::default()
        .header(dir.join("csrc/fephp_sapi.h").to_string_lossy())
        .allowlist_type("fephp_sapi_.*")
        .allowlist_function("fephp_sapi_.*")
        .dynamic_library_name("SapiShim")
        .dynamic_link_require_all(true)
        .layout_tests(false)
        .generate()
        .expect("bindgen could not read csrc/fephp_sapi.h (is libclang installed? apt-get install libclang-dev)")
        .write_to_file(out.join("sapi_bindings.rs"))
        .expect("writing sapi_bindings.rs");
    println!("cargo:rustc-cfg=fephp_embedded");
}
