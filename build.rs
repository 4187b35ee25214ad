//! Generates the C header from `src/ffi/mod.rs` with cbindgen into `$OUT_DIR`.
//! `make header` (FEPHP_UPDATE_HEADER=1) also writes the committed
//! `include/fe_php.h`; a test fails when the committed copy is stale.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi/mod.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=FEPHP_UPDATE_HEADER");

    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
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
