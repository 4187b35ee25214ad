#!/usr/bin/env bash
# The C ABI from C and Go, as hosts use it. Each check prints "c <name> test: ok"
# (counted by scripts/test-summary.sh); the first failure stops the run.
#   - the header compiles cleanly as C99 and as C++;
#   - tests/c/abi_test.c (static, health, errors, and with libphp: many mixed
#     requests, an engine reload) under valgrind and under AddressSanitizer,
#     with no leak and no invalid access of fe-php's;
#   - `make install` into a temporary prefix, then a host built only with
#     `pkg-config --cflags --libs fe_php`;
#   - examples/c and (where Go is installed) examples/go, run on examples/.
set -euo pipefail
cd "$(dirname "$0")/.."

LIB=target/debug
CC=${CC:-cc}
CXX=${CXX:-c++}
CFLAGS="-std=c99 -Wall -Wextra -Werror -O1 -g"
LIBPHP=/usr/lib/libphp.so
ok() { echo "c $1 test: ok"; }

cargo build -p fe-php --lib --quiet
major=$(sed -n 's/^version = "\([0-9]*\)\..*/\1/p' Cargo.toml | head -1)
ln -sf libfe_php.so "$LIB/libfe_php.so.$major"

# Header: C99 and C++, warnings as errors.
printf '#include "fe_php.h"\nint main(void) { return fephp_version() ? 0 : 1; }\n' > "$LIB/header_check.c"
cp "$LIB/header_check.c" "$LIB/header_check.cpp"
$CC -std=c99 -pedantic -Wall -Wextra -Werror -Iinclude -c "$LIB/header_check.c" -o "$LIB/header_check.o"
$CXX -std=c++11 -pedantic -Wall -Wextra -Werror -Iinclude -c "$LIB/header_check.cpp" -o "$LIB/header_check_cpp.o"
ok header-c99-c++

php_args=()
[ -e "$LIBPHP" ] && php_args=("$LIBPHP")

$CC $CFLAGS -Iinclude -o "$LIB/abi_test" tests/c/abi_test.c -L"$LIB" -lfe_php
LD_LIBRARY_PATH="$LIB" valgrind --quiet --error-exitcode=1 --leak-check=full \
    --errors-for-leak-kinds=definite,indirect --suppressions=tests/c/valgrind.supp \
    "$LIB/abi_test" examples/public "${php_args[@]}" 2>&1 | grep -v -e '^--[0-9]*-- '
test "${PIPESTATUS[0]}" -eq 0 && ok valgrind

# PHP loads its extensions with RTLD_DEEPBIND, which AddressSanitizer cannot
# handle: run PHP without conf.d extensions here (valgrind above covers them).
$CC $CFLAGS -fsanitize=address -fno-omit-frame-pointer -Iinclude -o "$LIB/abi_test_asan" tests/c/abi_test.c -L"$LIB" -lfe_php
PHP_INI_SCAN_DIR= LD_LIBRARY_PATH="$LIB" ASAN_OPTIONS=detect_leaks=1 \
    LSAN_OPTIONS=suppressions=$PWD/tests/c/lsan.supp:print_suppressions=0 \
    "$LIB/abi_test_asan" examples/public "${php_args[@]}"
ok asan

# make install + pkg-config, as a packager and a host author would use them.
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
make --no-print-directory install PREFIX="$prefix" PROFILE=debug >/dev/null
test -L "$prefix/lib/libfe_php.so" && test -e "$prefix/lib/libfe_php.so.$major"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# shellcheck disable=SC2046
$CC $CFLAGS examples/c/fephp_demo.c -o "$prefix/fephp_demo" $(pkg-config --cflags --libs fe_php)
readelf -d "$prefix/fephp_demo" | grep -q "libfe_php.so.$major"
LD_LIBRARY_PATH="$prefix/lib" "$prefix/fephp_demo" examples/c/demo.toml /css/site.css /_health > "$prefix/out.txt"
grep -q "== GET /css/site.css -> static backend: 200" "$prefix/out.txt"
grep -q '"status": "healthy"' "$prefix/out.txt"
ok install-pkg-config

# examples/c against the checkout (not the temporary install), through every
# available backend.
unset PKG_CONFIG_PATH
make --no-print-directory -s -B -C examples/c >/dev/null
targets=(/css/site.css /_health)
[ -e "$LIBPHP" ] && targets+=(/hello.php)
examples/c/fephp_demo examples/c/demo.toml "${targets[@]}" > "$LIB/demo-c.txt"
grep -q "== GET /css/site.css -> static backend: 200" "$LIB/demo-c.txt"
if [ -e "$LIBPHP" ]; then
    grep -q "== GET /hello.php -> embedded backend: 200" "$LIB/demo-c.txt"
    grep -q "Hello from PHP" "$LIB/demo-c.txt"
fi
ok example-c

# Log lines reach the host's callback: a FastCGI route to a closed port fails
# with the library's error, which the demo prints to stderr.
sed 's|^\[backend\]|[php]\nfpm_socket = "127.0.0.1:1"\n\n[backend]|' examples/c/demo.toml > "$LIB/demo-log.toml"
printf '\n[[backend.routing_rules]]\npattern = { type = "exact", value = "/hello.php" }\nbackend = "fastcgi"\npriority = 90\n' >> "$LIB/demo-log.toml"
examples/c/fephp_demo "$LIB/demo-log.toml" /hello.php > /dev/null 2> "$LIB/demo-c-log.txt" || true
grep -q "^fe-php error fastcgi: cannot connect to PHP-FPM at 127.0.0.1:1.* | request: GET /hello.php" "$LIB/demo-c-log.txt"
ok example-c-log

if command -v go >/dev/null 2>&1; then
    (cd examples/go && go build -o ../../"$LIB"/fephp-go-demo .)
    "$LIB/fephp-go-demo" examples/c/demo.toml "${targets[@]}" > "$LIB/demo-go.txt"
    grep -q "== GET /css/site.css: 200" "$LIB/demo-go.txt"
    [ -e "$LIBPHP" ] && grep -q "Hello from PHP" "$LIB/demo-go.txt"
    "$LIB/fephp-go-demo" "$LIB/demo-log.toml" /hello.php > /dev/null 2> "$LIB/demo-go-log.txt" || true
    grep -q "^fe-php error fastcgi: cannot connect to PHP-FPM at 127.0.0.1:1.* | request: GET /hello.php" "$LIB/demo-go-log.txt"
    ok example-go
else
    echo "go is not installed: examples/go skipped (make deps installs golang-go)"
fi
