#!/usr/bin/env bash
# Proves that fe-php-host reaches the engine only through the C ABI: a copy of the
# host crate with one call to an engine internal added must fail to compile
# (the library's modules other than `ffi` are private without `internals`).
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/host"
cp -r host/src "$tmp/host/src"
cp Cargo.lock "$tmp/host/Cargo.lock"
# The library and the workspace crates beside it (units/), by absolute path.
sed -e "s|path = \"\.\.\"|path = \"$PWD\"|" -e "s|path = \"\.\./|path = \"$PWD/|" \
    host/Cargo.toml > "$tmp/host/Cargo.toml"
printf '\n[workspace]\n' >> "$tmp/host/Cargo.toml"
cat >> "$tmp/host/src/main.rs" <<'RS'

#[allow(dead_code)]
fn reaches_past_the_abi() {
    let _ = fe_php::engine::Engine::new;
}
RS
# The workspace's target dir: the dependencies are already checked there.
if CARGO_TARGET_DIR="$PWD/target" cargo check --quiet --offline \
    --manifest-path "$tmp/host/Cargo.toml" 2> "$tmp/err.txt"; then
    echo "check-host-boundary: fe-php-host compiled a call to fe_php::engine: the C ABI boundary is open" >&2
    exit 1
fi
if ! grep -q "E0603" "$tmp/err.txt"; then
    echo "check-host-boundary: the copy failed to compile for another reason:" >&2
    cat "$tmp/err.txt" >&2
    exit 1
fi
echo "host boundary: fe_php::engine is private to fe-php-host (error E0603)"
