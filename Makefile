# fe-php — build, demo, test. `make demo` and `make test` install what is missing
# on a Debian 12 machine first (scripts/install-deps.sh).

CARGO    ?= cargo
CC       ?= cc
DEBUG    := target/debug
RELEASE  := target/release
SHELL    := /bin/bash
PROFILE  ?= release
PREFIX   ?= /usr/local
LIBDIR   ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR   ?= $(PREFIX)/bin
VERSION  := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
MAJOR    := $(firstword $(subst ., ,$(VERSION)))

.PHONY: all deps bench-deps build demo test test-rust test-c test-fuzz lint header bench bench-tls bench-compress bench-micro install nginx-module fuzz soak clean

all: build

deps:
	@./scripts/install-deps.sh

build:
	$(CARGO) build --release

## Serve examples/public on http://127.0.0.1:8080 (Ctrl-C stops it).
demo: deps build
	$(RELEASE)/fe-php-host --config examples/demo.toml

## Everything CI checks: format, lints, header freshness, unit + integration tests,
## and the C program under valgrind.
test: deps lint test-rust test-c test-fuzz
	@scripts/test-summary.sh target/test-rust.log target/test-c.log

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets --features fe-php/internals -- -D warnings
	scripts/check-host-boundary.sh

# tests/nginx_module.rs loads the module into a real nginx.
# fe-php-host (its own crate) is built first: the integration tests start it.
test-rust: nginx-module
	@mkdir -p target
	$(CARGO) build -p fe-php-host
	set -o pipefail; $(CARGO) test --workspace --no-fail-fast --features fe-php/internals 2>&1 | tee target/test-rust.log

# The C ABI from C and Go: header as C99/C++, tests/c/abi_test.c under valgrind
# and AddressSanitizer, make install + pkg-config, examples/c and examples/go.
test-c:
	@mkdir -p target
	set -o pipefail; scripts/test-c.sh 2>&1 | tee target/test-c.log

## The nginx dynamic module: target/nginx-module/ngx_http_fephp_module.so, built
## against Debian's nginx-dev like Debian's nginx (--with-compat, conf_flags).
nginx-module:
	$(CARGO) build -p fe-php --lib
	scripts/build-nginx-module.sh

## Regenerate include/fe_php.h from src/ffi (commit the result).
header:
	FEPHP_UPDATE_HEADER=1 $(CARGO) build -p fe-php --lib

## Side-by-side: fe-php-host (embedded, FastCGI), nginx + fe-php module, nginx,
## nginx + php-fpm and Apache + mod_php, every scenario and load shape (~12 min);
## BENCH_ARGS="--shapes ka32 --scenarios hello,json" narrows it (--help for all).
bench: bench-deps build nginx-module
	python3 bench/run.py $(BENCH_ARGS)

## criterion micro-benchmarks: router with 1,000 rules, path normalization, CGI
## variables, static path, an embedded request ($_SERVER registration), FastCGI
## record encoding and decoding, recording a request in the latency histograms.
## HTTPS and HTTP/2 side by side: fe-php-host with [server.tls] against nginx
## (same certificate) and nginx + php-fpm; wrk over TLS, new handshakes, h2load.
bench-tls: bench-deps build
	python3 bench/tls.py $(BENCH_ARGS)

## On-the-fly compression of a 100 KiB HTML page: fe-php-host against nginx's
## gzip (level 1); req/s and bytes on the wire.
bench-compress: bench-deps build
	python3 bench/compress.py $(BENCH_ARGS)

bench-micro:
	$(CARGO) bench --features internals --bench router --bench engine --bench fastcgi --bench metrics

bench-deps: deps
	@FEPHP_EXTRA_PACKAGES="apache2 libapache2-mod-php8.2 python3" ./scripts/install-deps.sh

## Fuzz every target (config, path + router, static resolution, FastCGI responses,
## CGI params) with cargo fuzz for FUZZ_SECONDS each (default 60), from fuzz/corpus.
FUZZ_SECONDS ?= 60
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

# The short pass `make test` runs: 20 s per target from the committed seeds.
test-fuzz:
	scripts/fuzz.sh 20

## Soak: SOAK_REQUESTS (default 1,000,000) mixed requests against fe-php-host and a
## php-fpm it starts, watching memory, descriptors and PHP's temporary files; prints
## a summary, fails on an error, > 5% memory growth after warm-up or a leak.
## `make test` runs the short variant (tests/soak.rs soak_short, 50,000 requests).
SOAK_REQUESTS ?= 1000000
soak:
	SOAK_REQUESTS=$(SOAK_REQUESTS) $(CARGO) test --test soak soak_full -- --ignored --nocapture

## Install the library (soname libfe_php.so.MAJOR), header, pkg-config file and
## fe-php-host under PREFIX (DESTDIR for staging; PROFILE=debug for a debug build).
install:
	$(CARGO) build $(if $(filter release,$(PROFILE)),--release) --quiet
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(BINDIR)
	install -m 755 target/$(PROFILE)/libfe_php.so $(DESTDIR)$(LIBDIR)/libfe_php.so.$(VERSION)
	ln -sf libfe_php.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libfe_php.so.$(MAJOR)
	ln -sf libfe_php.so.$(MAJOR) $(DESTDIR)$(LIBDIR)/libfe_php.so
	install -m 644 include/fe_php.h $(DESTDIR)$(INCLUDEDIR)/fe_php.h
	install -m 755 target/$(PROFILE)/fe-php-host $(DESTDIR)$(BINDIR)/fe-php-host
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
		-e 's|@VERSION@|$(VERSION)|' fe_php.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/fe_php.pc

clean:
	$(CARGO) clean
	rm -f examples/c/fephp_demo
