#!/usr/bin/env bash
# Builds the nginx dynamic module target/nginx-module/ngx_http_fephp_module.so
# against Debian's nginx-dev (/usr/share/nginx/src), configured like Debian's
# nginx (--with-compat and conf_flags) so that `load_module` accepts it.
#
# Incremental: the nginx tree is copied once into target/nginx-module/nginx-src,
# configure runs again only when nginx-module/config, conf_flags or FEPHP_INC /
# FEPHP_LIB change, and make rebuilds only what changed.
#
# Needs the library built first (cargo build --lib; `make nginx-module` does it).
# Environment: NGINX_SRC (default /usr/share/nginx/src), FEPHP_INC, FEPHP_LIB
# (default: this repository's include/ and target/debug/).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
nginx_src=${NGINX_SRC:-/usr/share/nginx/src}
out=$root/target/nginx-module
tree=$out/nginx-src
module_dir=$root/nginx-module
export FEPHP_INC=${FEPHP_INC:-$root/include}
export FEPHP_LIB=${FEPHP_LIB:-$root/target/debug}

if [[ ! -f $nginx_src/conf_flags || ! -x $nginx_src/configure ]]; then
    echo "build-nginx-module: $nginx_src is not an nginx-dev tree." >&2
    echo "    Install it: apt-get install nginx-dev (or set NGINX_SRC)." >&2
    exit 1
fi
if [[ ! -f $FEPHP_LIB/libfe_php.so ]]; then
    echo "build-nginx-module: $FEPHP_LIB/libfe_php.so is missing." >&2
    echo "    Build the library first: cargo build --lib (or make nginx-module)." >&2
    exit 1
fi

mkdir -p "$out"

# The module records the library's soname (libfe_php.so.MAJOR) and nginx loads
# that name at run time. Cargo writes only libfe_php.so, so for a library built
# in this repository, provide the soname link next to it (as `make install`
# does for an installed one).
soname=$(readelf -d "$FEPHP_LIB/libfe_php.so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
if [[ -n $soname && ! -e $FEPHP_LIB/$soname ]]; then
    case $FEPHP_LIB in
    "$root"/target/*) ln -sf libfe_php.so "$FEPHP_LIB/$soname" ;;
    *)
        echo "build-nginx-module: $FEPHP_LIB/$soname is missing (the module loads libfe_php by that name)." >&2
        exit 1
        ;;
    esac
fi

# A private copy: configure writes objs/ and a Makefile into the tree, and
# /usr/share/nginx/src belongs to the package.
if [[ ! -f $tree/.fephp-copied || $nginx_src/conf_flags -nt $tree/.fephp-copied ]]; then
    rm -rf "$tree"
    mkdir -p "$tree"
    cp -a "$nginx_src/." "$tree/"
    touch "$tree/.fephp-copied"
fi

# Re-run configure when its inputs change.
inputs="$(cat "$nginx_src/conf_flags" "$module_dir/config")
FEPHP_INC=$FEPHP_INC FEPHP_LIB=$FEPHP_LIB module_dir=$module_dir"
stamp=$tree/objs/.fephp-configure-inputs
if [[ ! -f $tree/objs/Makefile || ! -f $stamp || "$(cat "$stamp")" != "$inputs" ]]; then
    (
        cd "$tree"
        # shellcheck disable=SC1091
        . ./conf_flags
        ./configure --with-compat "${NGX_CONF_FLAGS[@]}" \
            --add-dynamic-module="$module_dir" >"$out/configure.log" 2>&1 || {
            cat "$out/configure.log" >&2
            echo "build-nginx-module: configure failed (log: $out/configure.log)" >&2
            exit 1
        }
    )
    printf '%s' "$inputs" >"$stamp"
fi

# nginx's own CFLAGS (-W -Wall -Werror with gcc) apply to the module too.
make -C "$tree" -f objs/Makefile modules

# Copy only when changed, so a running test's nginx is not disturbed for nothing.
if ! cmp -s "$tree/objs/ngx_http_fephp_module.so" "$out/ngx_http_fephp_module.so"; then
    cp "$tree/objs/ngx_http_fephp_module.so" "$out/ngx_http_fephp_module.so.tmp"
    mv -f "$out/ngx_http_fephp_module.so.tmp" "$out/ngx_http_fephp_module.so"
fi
echo "build-nginx-module: $out/ngx_http_fephp_module.so"
