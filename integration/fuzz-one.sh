#!/usr/bin/env bash
# Runs one fuzz target for a number of seconds (make fuzz, make fuzz-smoke).
# Go's fuzzer sometimes ends a run that found nothing with "--- FAIL ...
# context deadline exceeded" when -fuzztime runs out while it shuts its
# workers down; such a run (no failing input written, no panic) counts as
# passed. Any real finding still fails.
set -uo pipefail
pkg=$1 name=$2 secs=$3
go=${GO:-go}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "${secs}s" "$pkg" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ] && grep -q "context deadline exceeded" "$out" &&
	! grep -qE "Failing input written to|panic:|fuzz: minimizing" "$out"; then
	echo "fuzz $name: the fuzzer stopped with 'context deadline exceeded' and found nothing: passed"
	exit 0
fi
exit "$rc"
