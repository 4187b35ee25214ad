#!/bin/bash
# The WordPress of bench/run.py's wordpress scenarios: Debian's wordpress package
# and MariaDB at their default settings, one site installed with its sample post.
#
#     sudo bench/wordpress/setup.sh [HOST]
#
# Idempotent: installs what is missing, starts MariaDB when it is not running,
# creates the database and its user, writes /etc/wordpress/config-HOST.php and
# runs WordPress's installer once. HOST (default 127.0.0.1) is the request's host
# name without port: Debian's /usr/share/wordpress/wp-config.php loads
# /etc/wordpress/config-<host>.php by it. Home and site URL follow the request's
# Host header, so servers on different ports serve the same site without
# redirecting to one another. The document root is /usr/share/wordpress.
set -euo pipefail

HOST=${1:-127.0.0.1}
DB=wordpress_bench
DB_USER=wpbench
CONF=/etc/wordpress/config-$HOST.php
DOCROOT=/usr/share/wordpress

[ "$(id -u)" = 0 ] || { echo "$0: run as root (apt-get, MariaDB, /etc/wordpress)" >&2; exit 1; }
case $HOST in *[!a-zA-Z0-9.-]*|'') echo "$0: bad host name '$HOST'" >&2; exit 1;; esac

# Packages. The theme is a Recommends of wordpress: named, so that the site has
# Debian's default theme (Twenty Twenty-Three) whatever APT::Install-Recommends says.
packages=(wordpress wordpress-theme-twentytwentythree mariadb-server php8.2-mysql)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" ||
        { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
fi

# MariaDB: running, or started (service where it works, else mysqld_safe).
if ! mysqladmin --silent ping >/dev/null 2>&1; then
    echo "starting MariaDB"
    service mariadb start >/dev/null 2>&1 || (setsid mysqld_safe >/dev/null 2>&1 < /dev/null &)
    for _ in $(seq 60); do
        mysqladmin --silent ping >/dev/null 2>&1 && break
        sleep 0.5
    done
    mysqladmin --silent ping >/dev/null 2>&1 || { echo "$0: MariaDB did not start" >&2; exit 1; }
fi

# The database user's password: the one the config already holds, else a new one.
password=
if [ -f "$CONF" ]; then
    password=$(sed -n "s/^define('DB_PASSWORD', '\([A-Za-z0-9]*\)');$/\1/p" "$CONF")
fi
[ -n "$password" ] || password=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')

mysql <<SQL
CREATE DATABASE IF NOT EXISTS $DB;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$password';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON $DB.* TO '$DB_USER'@'localhost';
SQL

if [ ! -f "$CONF" ] || ! grep -q "'$password'" "$CONF"; then
    echo "writing $CONF"
    salts=$(php -r 'foreach (["AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY", "AUTH_SALT", "SECURE_AUTH_SALT", "LOGGED_IN_SALT", "NONCE_SALT"] as $k) printf("define(%s, %s);\n", var_export($k, true), var_export(bin2hex(random_bytes(32)), true));')
    umask 027
    cat > "$CONF.tmp" <<PHP
<?php
// Written by fe-php's bench/wordpress/setup.sh: the site of bench/run.py's
// wordpress scenarios. Read by Debian's /usr/share/wordpress/wp-config.php for
// requests whose Host is $HOST (any port).
define('DB_NAME', '$DB');
define('DB_USER', '$DB_USER');
define('DB_PASSWORD', '$password');
define('DB_HOST', 'localhost');
define('WP_CONTENT_DIR', '/var/lib/wordpress/wp-content');
\$table_prefix = 'wp_';
$salts
// Home and site URL from the request's Host (with its port), so that every
// server under test, each on a port of its own, serves the site without a
// redirect to a canonical address.
if (!empty(\$_SERVER['HTTP_HOST'])) {
    \$fephp_bench_host = preg_replace('/[^a-zA-Z0-9.:\\[\\]-]/', '', \$_SERVER['HTTP_HOST']);
    define('WP_HOME', 'http://' . \$fephp_bench_host);
    define('WP_SITEURL', 'http://' . \$fephp_bench_host);
}
PHP
    chgrp www-data "$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
fi

# WordPress's installer, once: tables, options, the admin user, the sample post.
php -d display_errors=stderr <<PHP
<?php
\$_SERVER['HTTP_HOST'] = '$HOST';
\$_SERVER['SERVER_NAME'] = '$HOST';
\$_SERVER['REQUEST_URI'] = '/';
\$_SERVER['REQUEST_METHOD'] = 'GET';
define('WP_INSTALLING', true);
require '$DOCROOT/wp-load.php';
// No mail to the admin (there is no MTA): wp_install() calls this when defined.
function wp_new_blog_notification() {}
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
if (is_blog_installed()) {
    echo "WordPress is installed (database $DB)\n";
    exit(0);
}
\$r = wp_install('fe-php bench', 'admin', 'admin@example.invalid', true, '', wp_generate_password(24));
echo "WordPress installed (database $DB, user admin, post ", get_the_title(1), ")\n";
PHP
