# fe-php — build, demo, test. `make demo` and `make test` install what is missing
# on a Debian 12 machine first (scripts/install-deps.sh).

CARGO    ?= cargo
CC       ?= cc
DEBUG    := target/debug
RELEASE  := target/release
CFLAGS   ?= -std=c99 -Wall -Wextra -Werror -O1 -g
SHELL    := /bin/bash

.PHONY: all deps bench-deps build demo test test-rust test-c lint header bench bench-micro clean

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
test: deps lint test-rust test-c
	@scripts/test-summary.sh target/test-rust.log target/test-c.log

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test-rust:
	@mkdir -p target
	set -o pipefail; $(CARGO) test 2>&1 | tee target/test-rust.log

# The C ABI from C: compiled against the committed header, linked to the cdylib,
# run under valgrind (leaks and invalid accesses fail the test).
test-c: $(DEBUG)/abi_test
	LD_LIBRARY_PATH=$(DEBUG) valgrind --quiet --error-exitcode=1 --leak-check=full \
		--errors-for-leak-kinds=definite,indirect \
		$(DEBUG)/abi_test examples/public 2>&1 | grep -v -e '^--[0-9]*-- ' | tee target/test-c.log; \
		test "$${PIPESTATUS[0]}" -eq 0

$(DEBUG)/abi_test: tests/c/abi_test.c include/fe_php.h FORCE
	$(CARGO) build --lib
	$(CC) $(CFLAGS) -Iinclude -o $@ tests/c/abi_test.c -L$(DEBUG) -lfe_php

FORCE:

## Regenerate include/fe_php.h from src/ffi (commit the result).
header:
	FEPHP_UPDATE_HEADER=1 $(CARGO) build --lib

## Side-by-side: fe-php-host against nginx, nginx + php-fpm and Apache + mod_php
## (BENCH_ARGS="--rounds 5 --scenarios hello,json" to narrow it; --help for all).
bench: bench-deps build
	python3 bench/run.py $(BENCH_ARGS)

## criterion micro-benchmarks (router, path normalization).
bench-micro:
	$(CARGO) bench --bench router

bench-deps: deps
	@FEPHP_EXTRA_PACKAGES="apache2 libapache2-mod-php8.2 python3" ./scripts/install-deps.sh

clean:
	$(CARGO) clean
