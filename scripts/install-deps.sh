#!/usr/bin/env bash
# Installs the Debian 12 packages fe-php builds, tests and benchmarks with.
# Does nothing when they are all present. Needs root (or sudo) to install.
set -euo pipefail

packages=(
  build-essential pkg-config curl wrk valgrind golang-go
  clang libclang-dev
  libphp8.2-embed php8.2-dev php8.2-cli php8.2-fpm
  nginx nginx-dev
  iproute2
  # tests/tls.rs: HTTP/2 load over TLS and h2c (h2load); openssl s_client
  nghttp2-client openssl testssl.sh
  # tests/h2_abuse.rs: HTTP/2 frames written by hand (hyperframe, hpack)
  python3-h2
  # tests/acme.rs: an ACME test CA (pebble, pebble-challtestsrv)
  pebble
  # tests/compression.rs: the codecs' own tools decode what fe-php compressed
  brotli zstd
  # tests/real_apps.rs: Debian's WordPress on MariaDB (bench/wordpress/setup.sh)
  wordpress wordpress-theme-twentytwentythree mariadb-server php8.2-mysql
  # tests/frameworks.rs: Symfony 5.4 and Laravel 8 apps in worker and classic mode
  php-symfony-framework-bundle php-symfony-twig-bundle php-symfony-runtime php-symfony-yaml
  php-laravel-framework
  # tests/scale_out.rs: two fe-php instances behind HAProxy, sessions in Redis
  haproxy redis-server php8.2-redis
)
# Extra packages a caller asks for (e.g. `make bench` adds Apache + mod_php).
read -r -a extra <<< "${FEPHP_EXTRA_PACKAGES:-}"
packages+=("${extra[@]}")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian starts these on install; fe-php's tests start their own instances.
for svc in nginx php8.2-fpm apache2 haproxy redis-server; do
  $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
