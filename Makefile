# iscsifs build, test and benchmark entry points. CI runs `make test` (see .ci/run).

GO ?= go
# Seconds each fuzz target runs in `make test` (fuzz-smoke).
FUZZ_SMOKE_SECONDS ?= 3
# Seconds `make fuzz` spends in total, split evenly across all fuzz targets.
FUZZ_TOTAL_SECONDS ?= 600

.PHONY: all build deps test vet test-race fuzz-smoke fuzz bench demo lint clean

all: build

build:
	$(GO) build -o bin/iscsifs ./cmd/iscsifs

test: deps vet test-race fuzz-smoke

# deps installs the Debian packages the tests use when run as root (else it names what is missing).
deps:
	@bash .ci/install-deps

vet:
	$(GO) vet ./...

test-race:
	$(GO) test -race -count=1 -timeout 20m ./...

# fuzz_targets prints "PACKAGE FUZZNAME" for every fuzz target of every package, found with
# `go test -list`, so that new fuzzers are picked up without editing this file.
define fuzz_targets
for pkg in $$($(GO) list ./...); do \
	names=$$($(GO) test -list '^Fuzz' "$$pkg") || { echo "go test -list $$pkg failed:" >&2; echo "$$names" >&2; exit 1; }; \
	for name in $$(printf '%s\n' "$$names" | grep '^Fuzz' || true); do echo "$$pkg $$name"; done; \
done
endef

# fuzz_run runs every fuzz target for $$secs seconds each (set before it).
define fuzz_run
targets=$$($(fuzz_targets)) || exit 1; \
if [ -z "$$targets" ]; then echo "no fuzz targets"; exit 0; fi; \
printf '%s\n' "$$targets" | while read -r pkg name; do \
	echo "== fuzz $$pkg $$name for $${secs}s"; \
	GO=$(GO) bash integration/fuzz-one.sh "$$pkg" "$$name" "$$secs" || exit 1; \
done
endef

fuzz-smoke:
	@set -e; secs=$(FUZZ_SMOKE_SECONDS); $(fuzz_run)

fuzz:
	@set -e; \
	n=$$($(fuzz_targets) | wc -l); \
	if [ "$$n" -eq 0 ]; then echo "no fuzz targets"; exit 0; fi; \
	secs=$$(( $(FUZZ_TOTAL_SECONDS) / n )); [ "$$secs" -ge 1 ] || secs=1; \
	$(fuzz_run)

bench:
	bash integration/bench.sh

demo:
	bash integration/demo.sh

lint:
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt -l reports:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin

# Ten minutes of mixed random I/O through a mount with two target bounces,
# verified against the backing file (a one-minute run is part of `make test`).
.PHONY: soak
soak:
	ISCSIFS_SOAK=10m $(GO) test -run TestSoak -timeout 20m ./integration/
