#!/usr/bin/env bash
# Adds up the results of every test log given: cargo's "test result:" lines and
# the C tests' "…: ok" lines. Prints one closing line, "N passed, M failed".
set -euo pipefail
passed=0
failed=0
for log in "$@"; do
  [ -f "$log" ] || continue
  while read -r p f; do
    passed=$((passed + p)); failed=$((failed + f))
  done < <(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$log")
  c_ok=$(grep -c '^c .*test: ok$' "$log" || true)
  passed=$((passed + c_ok))
done
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
